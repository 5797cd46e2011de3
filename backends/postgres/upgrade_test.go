package postgres

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/kvsql/kvsql/backends"
	"github.com/kvsql/kvsql/backends/backendtest"
	"github.com/kvsql/kvsql/internal/testdb"
)

// TestUpgradeStoresValuesOnce opens a database written by a kvsql before
// schema/009 (values in kv_current as well as kv_log) with this one, which
// migrates it, and reads and writes it.
func TestUpgradeStoresValuesOnce(t *testing.T) {
	ctx := context.Background()
	url := testdb.FreshPostgresURL(t)
	c, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(ctx)
	ms, err := backends.Migrations(schemaFS, "schema")
	if err != nil {
		t.Fatal(err)
	}
	backendtest.SeedValueOnce(t, backendtest.OldSchema{
		Migrations: ms,
		Exec: func(q string, args ...any) error {
			_, err := c.Exec(ctx, q, args...)
			return err
		},
		CreateVersions: `CREATE TABLE kv_schema (version integer NOT NULL)`,
		RecordVersion:  `INSERT INTO kv_schema (version) VALUES ($1)`,
		InsertLog:      `INSERT INTO kv_log (rev, sub, key, deleted, create_rev, prev_rev, version, lease, value) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
		InsertCurrent:  `INSERT INTO kv_current (key, create_rev, mod_rev, version, lease, value) VALUES ($1, $2, $3, $4, $5, $6)`,
		SetRevision:    `UPDATE kv_meta SET rev = $1`,
	})
	st, err := Open(ctx, Config{URL: url})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	backendtest.CheckValueOnceUpgrade(t, st)
}
