package sqlite

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"

	"github.com/kvsql/kvsql/backends"
	"github.com/kvsql/kvsql/backends/backendtest"
)

// TestUpgradeStoresValuesOnce opens a database written by a kvsql before
// schema/009 (values in kv_current as well as kv_log) with this one, which
// migrates it, and reads and writes it.
func TestUpgradeStoresValuesOnce(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "state.db")
	db, err := sql.Open(driverName, dsn(path, "immediate"))
	if err != nil {
		t.Fatal(err)
	}
	ms, err := backends.Migrations(schemaFS, "schema")
	if err != nil {
		t.Fatal(err)
	}
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := db.ExecContext(ctx, q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	exec(`CREATE TABLE kv_schema (version INTEGER NOT NULL)`)
	for _, m := range ms {
		if m.Version < 9 {
			exec(m.SQL)
			exec(`INSERT INTO kv_schema (version) VALUES (?)`, m.Version)
		}
	}
	for _, r := range backendtest.ValueOnceLog {
		exec(`INSERT INTO kv_log (rev, sub, key, deleted, create_rev, prev_rev, version, lease, value) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			r.Rev, r.Sub, r.Key, r.Deleted, r.CreateRev, r.PrevRev, r.Version, r.Lease, nonNil(r.Value))
	}
	for _, r := range backendtest.ValueOnceCurrent() {
		exec(`INSERT INTO kv_current (key, create_rev, mod_rev, version, lease, value) VALUES (?, ?, ?, ?, ?, ?)`,
			r.Key, r.CreateRev, r.Rev, r.Version, r.Lease, r.Value)
	}
	exec(`UPDATE kv_meta SET rev = ?`, backendtest.ValueOnceRev)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	be, err := Open(ctx, Config{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer be.Close()
	backendtest.CheckValueOnceUpgrade(t, be)
}

func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}
