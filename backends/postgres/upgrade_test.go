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
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := c.Exec(ctx, q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	exec(`CREATE TABLE kv_schema (version integer NOT NULL)`)
	for _, m := range ms {
		if m.Version < 9 {
			exec(m.SQL)
			exec(`INSERT INTO kv_schema (version) VALUES ($1)`, m.Version)
		}
	}
	for _, r := range backendtest.ValueOnceLog {
		exec(`INSERT INTO kv_log (rev, sub, key, deleted, create_rev, prev_rev, version, lease, value) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
			r.Rev, r.Sub, r.Key, r.Deleted, r.CreateRev, r.PrevRev, r.Version, r.Lease, append([]byte{}, r.Value...))
	}
	for _, r := range backendtest.ValueOnceCurrent() {
		exec(`INSERT INTO kv_current (key, create_rev, mod_rev, version, lease, value) VALUES ($1, $2, $3, $4, $5, $6)`,
			r.Key, r.CreateRev, r.Rev, r.Version, r.Lease, r.Value)
	}
	exec(`UPDATE kv_meta SET rev = $1`, backendtest.ValueOnceRev)
	st, err := Open(ctx, Config{URL: url})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	backendtest.CheckValueOnceUpgrade(t, st)
}
