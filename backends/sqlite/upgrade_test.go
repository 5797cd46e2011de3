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
	backendtest.SeedValueOnce(t, backendtest.OldSchema{
		Migrations: ms,
		Exec: func(q string, args ...any) error {
			_, err := db.ExecContext(ctx, q, args...)
			return err
		},
		CreateVersions: `CREATE TABLE kv_schema (version INTEGER NOT NULL)`,
		RecordVersion:  `INSERT INTO kv_schema (version) VALUES (?)`,
		InsertLog:      `INSERT INTO kv_log (rev, sub, key, deleted, create_rev, prev_rev, version, lease, value) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		InsertCurrent:  `INSERT INTO kv_current (key, create_rev, mod_rev, version, lease, value) VALUES (?, ?, ?, ?, ?, ?)`,
		SetRevision:    `UPDATE kv_meta SET rev = ?`,
	})
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
