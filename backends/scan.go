package backends

import (
	"context"
	"database/sql"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// Rows is the part of a result set (database/sql's *sql.Rows, pgx.Rows)
// the scan helpers need. The caller closes the rows.
type Rows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
}

// ScanKVs reads rows of (key, create_rev, mod_rev, version, lease, value).
func ScanKVs(rows Rows) ([]*mvccpb.KeyValue, error) {
	var kvs []*mvccpb.KeyValue
	for rows.Next() {
		kv := &mvccpb.KeyValue{}
		if err := rows.Scan(&kv.Key, &kv.CreateRevision, &kv.ModRevision, &kv.Version, &kv.Lease, &kv.Value); err != nil {
			return nil, err
		}
		kvs = append(kvs, kv)
	}
	return kvs, rows.Err()
}

// ScanLatest reads the rows of a LatestGetter's GetLatestMany statement:
// the current revision, then (key, create_rev, mod_rev, version, lease,
// value) of a live key, NULL in the one row a statement that found none
// returns.
func ScanLatest(rows Rows) (cur int64, kvs []*mvccpb.KeyValue, err error) {
	for rows.Next() {
		var key, value []byte
		var create, mod, version, lease sql.NullInt64
		if err := rows.Scan(&cur, &key, &create, &mod, &version, &lease, &value); err != nil {
			return 0, nil, err
		}
		if !mod.Valid {
			continue
		}
		if value == nil {
			value = []byte{}
		}
		kvs = append(kvs, &mvccpb.KeyValue{Key: key, CreateRevision: create.Int64, ModRevision: mod.Int64,
			Version: version.Int64, Lease: lease.Int64, Value: value})
	}
	return cur, kvs, rows.Err()
}

// EventBytes approximates the memory an event holds: its key and value,
// its prev_kv's value, and the structs around them.
func EventBytes(ev *mvccpb.Event) int {
	n := 64 + len(ev.Kv.Key) + len(ev.Kv.Value)
	if ev.PrevKv != nil {
		n += 64 + len(ev.PrevKv.Value)
	}
	return n
}

// eventBudget collects events in (rev, sub) order until they reach
// maxBytes (0: no limit), and then the rest of that revision: a result is
// always whole revisions.
type eventBudget struct {
	maxBytes, bytes int
	stopAt          int64 // the revision that reached maxBytes, 0 before
	evs             []*mvccpb.Event
}

// add adds ev and reports whether the caller should read on.
func (b *eventBudget) add(ev *mvccpb.Event) bool {
	if b.stopAt != 0 && ev.Kv.ModRevision != b.stopAt {
		return false
	}
	b.evs = append(b.evs, ev)
	b.bytes += EventBytes(ev)
	if b.stopAt == 0 && b.maxBytes > 0 && b.bytes >= b.maxBytes {
		b.stopAt = ev.Kv.ModRevision
	}
	return true
}

// ScanEvents reads rows of a change query: (rev, key, deleted, create_rev,
// version, lease, value) and the previous version's (create_rev, rev,
// version, lease, value), NULL when the event has no prev_kv. It stops
// after the revision at which the events reach maxBytes (0: no limit); the
// caller's Close then discards the rest.
func ScanEvents(rows Rows, maxBytes int) ([]*mvccpb.Event, error) {
	b := eventBudget{maxBytes: maxBytes}
	for rows.Next() {
		var c eventColumns
		if err := rows.Scan(c.dest()...); err != nil {
			return nil, err
		}
		if !b.add(c.event()) {
			return b.evs, nil
		}
	}
	return b.evs, rows.Err()
}

// ScanChanges reads the rows of a one-statement change query: the current
// and compact revisions, then ScanEvents' columns, NULL in the one row a
// query without events returns. It stops as ScanEvents does.
func ScanChanges(rows Rows, maxBytes int) (cur, compact int64, evs []*mvccpb.Event, err error) {
	b := eventBudget{maxBytes: maxBytes}
	for rows.Next() {
		var c eventColumns
		if err := rows.Scan(append([]any{&cur, &compact}, c.dest()...)...); err != nil {
			return 0, 0, nil, err
		}
		if c.rev.Valid && !b.add(c.event()) {
			return cur, compact, b.evs, nil
		}
	}
	return cur, compact, b.evs, rows.Err()
}

// eventColumns holds one row of ScanEvents' columns.
type eventColumns struct {
	rev, create, version, lease     sql.NullInt64
	deleted                         sql.NullBool
	key, value                      []byte
	pCreate, pMod, pVersion, pLease sql.NullInt64
	pValue                          []byte
}

func (c *eventColumns) dest() []any {
	return []any{&c.rev, &c.key, &c.deleted, &c.create, &c.version, &c.lease, &c.value,
		&c.pCreate, &c.pMod, &c.pVersion, &c.pLease, &c.pValue}
}

func (c *eventColumns) event() *mvccpb.Event {
	ev := &mvccpb.Event{Type: mvccpb.PUT, Kv: &mvccpb.KeyValue{Key: c.key, CreateRevision: c.create.Int64,
		ModRevision: c.rev.Int64, Version: c.version.Int64, Lease: c.lease.Int64, Value: c.value}}
	if c.deleted.Bool {
		ev.Type = mvccpb.DELETE
		ev.Kv = &mvccpb.KeyValue{Key: c.key, ModRevision: c.rev.Int64}
	}
	if c.pMod.Valid {
		ev.PrevKv = &mvccpb.KeyValue{Key: c.key, CreateRevision: c.pCreate.Int64, ModRevision: c.pMod.Int64,
			Version: c.pVersion.Int64, Lease: c.pLease.Int64, Value: c.pValue}
	}
	return ev
}

// ScanLogRows reads rows of (rev, sub, key, deleted, create_rev,
// prev_rev, version, lease, value): kv_log rows.
func ScanLogRows(rows Rows) ([]LogRow, error) {
	var out []LogRow
	for rows.Next() {
		var r LogRow
		if err := rows.Scan(&r.Rev, &r.Sub, &r.Key, &r.Deleted, &r.CreateRev, &r.PrevRev, &r.Version, &r.Lease, &r.Value); err != nil {
			return nil, err
		}
		if r.Value == nil {
			r.Value = []byte{}
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// ScanLeases reads rows of (id, ttl, remaining milliseconds).
func ScanLeases(rows Rows) ([]Lease, error) {
	var out []Lease
	for rows.Next() {
		var l Lease
		if err := rows.Scan(&l.ID, &l.GrantedTTL, &l.RemainingMillis); err != nil {
			return nil, err
		}
		out = append(out, l)
	}
	return out, rows.Err()
}

// ScanIDs reads rows of one integer column.
func ScanIDs(rows Rows) ([]int64, error) {
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}

// Pending returns the migrations of ms whose version is not in applied, in
// order. Versions are not a high-water mark: migrations written on
// branches can land in any order, and a database that has a later one
// must still get an earlier one that landed after it.
//
// A database that has a migration ms does not know was changed by a newer
// kvsql, whose schema this one may not read or write correctly (schema/009
// moved every value out of kv_current): Pending refuses it.
func Pending(ms []Migration, applied map[int]bool) ([]Migration, error) {
	known := make(map[int]bool, len(ms))
	var out []Migration
	newest := 0
	for _, m := range ms {
		known[m.Version] = true
		newest = max(newest, m.Version)
		if !applied[m.Version] {
			out = append(out, m)
		}
	}
	var unknown []int
	for v := range applied {
		if !known[v] {
			unknown = append(unknown, v)
		}
	}
	if len(unknown) > 0 {
		sort.Ints(unknown)
		return nil, fmt.Errorf("the database has schema migrations %v that this kvsql does not know (it knows up to %d): "+
			"a newer kvsql has upgraded it; run that version or a later one against it", unknown, newest)
	}
	return out, nil
}

// ScanVersions reads rows of one integer column into a set.
func ScanVersions(rows Rows) (map[int]bool, error) {
	applied := map[int]bool{}
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		applied[v] = true
	}
	return applied, rows.Err()
}

// Migration is one schema file, NNN_name.sql.
type Migration struct {
	Version int
	Name    string
	SQL     string
}

// Migrations reads dir's NNN_name.sql files from fsys in version order.
func Migrations(fsys fs.FS, dir string) ([]Migration, error) {
	files, err := fs.Glob(fsys, path.Join(dir, "*.sql"))
	if err != nil {
		return nil, err
	}
	var out []Migration
	for _, f := range files {
		base := path.Base(f)
		n, err := strconv.Atoi(strings.SplitN(base, "_", 2)[0])
		if err != nil {
			return nil, fmt.Errorf("migration %s: name must start with a number: %w", base, err)
		}
		body, err := fs.ReadFile(fsys, f)
		if err != nil {
			return nil, err
		}
		out = append(out, Migration{Version: n, Name: base, SQL: string(body)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	return out, nil
}

// ScanAlarms reads (member_id, alarm) rows.
func ScanAlarms(rows Rows) ([]*pb.AlarmMember, error) {
	var out []*pb.AlarmMember
	for rows.Next() {
		var member MemberID
		var alarm int32
		if err := rows.Scan(&member, &alarm); err != nil {
			return nil, err
		}
		out = append(out, &pb.AlarmMember{MemberID: uint64(member), Alarm: pb.AlarmType(alarm)})
	}
	return out, rows.Err()
}

// MemberID scans a member ID from a signed column (SQLite, PostgreSQL:
// the uint64 is stored as its two's complement) or an unsigned one (MySQL).
type MemberID uint64

// Scan implements sql.Scanner.
func (m *MemberID) Scan(src any) error {
	switch v := src.(type) {
	case int64:
		*m = MemberID(v)
	case uint64:
		*m = MemberID(v)
	case []byte:
		n, err := strconv.ParseUint(string(v), 10, 64)
		if err != nil {
			return fmt.Errorf("member id %q: %w", v, err)
		}
		*m = MemberID(n)
	default:
		return fmt.Errorf("member id: unexpected %T", src)
	}
	return nil
}

// QueryBlobs runs q in tx and returns the one column of its rows.
func QueryBlobs(ctx context.Context, tx *sql.Tx, q string) ([][]byte, error) {
	rows, err := tx.QueryContext(ctx, q)
	if err != nil {
		return nil, err
	}
	defer func() { _ = rows.Close() }()
	var out [][]byte
	for rows.Next() {
		var b []byte
		if err := rows.Scan(&b); err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, rows.Err()
}
