package mysql

import (
	"context"
	"testing"

	"github.com/kvsql/kvsql/backends"
	"github.com/kvsql/kvsql/backends/backendtest"
	"github.com/kvsql/kvsql/internal/testdb"
)

// TestUpgradeStoresValuesOnce opens a database written by a kvsql before
// schema/009 (values in kv_current as well as kv_log) with this one, which
// migrates it, and reads and writes it.
func TestUpgradeStoresValuesOnce(t *testing.T) {
	ctx := context.Background()
	endpoint := testdb.FreshMySQLEndpoint(t)
	db := plainDB(t, endpoint)
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
		Split:          splitStatements,
		CreateVersions: `CREATE TABLE kv_schema (version INT NOT NULL) ENGINE=InnoDB`,
		RecordVersion:  `INSERT INTO kv_schema (version) VALUES (?)`,
		InsertLog:      `INSERT INTO kv_log (rev, sub, k, deleted, create_rev, prev_rev, version, lease, v) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		InsertCurrent:  `INSERT INTO kv_current (k, create_rev, mod_rev, version, lease, v) VALUES (?, ?, ?, ?, ?, ?)`,
		SetRevision:    `UPDATE kv_meta SET rev = ?`,
	})
	st, err := Open(ctx, Config{DSN: endpoint})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	backendtest.CheckValueOnceUpgrade(t, st)
}
