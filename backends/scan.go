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

// ScanEvents reads rows of a change query: (rev, key, deleted, create_rev,
// version, lease, value) and the previous version's (create_rev, rev,
// version, lease, value), NULL when the event has no prev_kv.
func ScanEvents(rows Rows) ([]*mvccpb.Event, error) {
	var evs []*mvccpb.Event
	for rows.Next() {
		kv := &mvccpb.KeyValue{}
		var deleted bool
		var pCreate, pMod, pVersion, pLease sql.NullInt64
		var pValue []byte
		if err := rows.Scan(&kv.ModRevision, &kv.Key, &deleted, &kv.CreateRevision, &kv.Version, &kv.Lease, &kv.Value,
			&pCreate, &pMod, &pVersion, &pLease, &pValue); err != nil {
			return nil, err
		}
		ev := &mvccpb.Event{Type: mvccpb.PUT, Kv: kv}
		if deleted {
			ev.Type = mvccpb.DELETE
			ev.Kv = &mvccpb.KeyValue{Key: kv.Key, ModRevision: kv.ModRevision}
		}
		if pMod.Valid {
			ev.PrevKv = &mvccpb.KeyValue{Key: kv.Key, CreateRevision: pCreate.Int64, ModRevision: pMod.Int64,
				Version: pVersion.Int64, Lease: pLease.Int64, Value: pValue}
		}
		evs = append(evs, ev)
	}
	return evs, rows.Err()
}

// ScanChanges reads the rows of a one-statement change query: the current
// and compact revisions, then ScanEvents' columns, NULL in the one row a
// query without events returns.
func ScanChanges(rows Rows) (cur, compact int64, evs []*mvccpb.Event, err error) {
	for rows.Next() {
		var rev, create, version, lease sql.NullInt64
		var deleted sql.NullBool
		var key, value []byte
		var pCreate, pMod, pVersion, pLease sql.NullInt64
		var pValue []byte
		if err := rows.Scan(&cur, &compact, &rev, &key, &deleted, &create, &version, &lease, &value,
			&pCreate, &pMod, &pVersion, &pLease, &pValue); err != nil {
			return 0, 0, nil, err
		}
		if !rev.Valid {
			continue
		}
		ev := &mvccpb.Event{Type: mvccpb.PUT, Kv: &mvccpb.KeyValue{Key: key, CreateRevision: create.Int64,
			ModRevision: rev.Int64, Version: version.Int64, Lease: lease.Int64, Value: value}}
		if deleted.Bool {
			ev.Type = mvccpb.DELETE
			ev.Kv = &mvccpb.KeyValue{Key: key, ModRevision: rev.Int64}
		}
		if pMod.Valid {
			ev.PrevKv = &mvccpb.KeyValue{Key: key, CreateRevision: pCreate.Int64, ModRevision: pMod.Int64,
				Version: pVersion.Int64, Lease: pLease.Int64, Value: pValue}
		}
		evs = append(evs, ev)
	}
	return cur, compact, evs, rows.Err()
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
