package backends

import (
	"database/sql"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"

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

// ScanEvents reads rows of a change query: (rev, key, deleted, create_rev,
// version, lease, value) and the previous version's (create_rev, rev,
// version, lease, value), NULL when the event has no prev_kv.
func ScanEvents(rows Rows) ([]*mvccpb.Event, error) {
	var evs []*mvccpb.Event
	for rows.Next() {
		var c eventColumns
		if err := rows.Scan(c.dest()...); err != nil {
			return nil, err
		}
		evs = append(evs, c.event())
	}
	return evs, rows.Err()
}

// ScanChanges reads the rows of a one-statement change query: the current
// and compact revisions, then ScanEvents' columns, NULL in the one row a
// query without events returns.
func ScanChanges(rows Rows) (cur, compact int64, evs []*mvccpb.Event, err error) {
	for rows.Next() {
		var c eventColumns
		if err := rows.Scan(append([]any{&cur, &compact}, c.dest()...)...); err != nil {
			return 0, 0, nil, err
		}
		if c.rev.Valid {
			evs = append(evs, c.event())
		}
	}
	return cur, compact, evs, rows.Err()
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
