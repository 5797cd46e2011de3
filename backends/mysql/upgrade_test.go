package mysql

import (
	"context"
	"database/sql"
	"testing"

	gomysql "github.com/go-sql-driver/mysql"

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
	dc, err := ParseEndpoint(endpoint)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := gomysql.NewConnector(dc)
	if err != nil {
		t.Fatal(err)
	}
	db := sql.OpenDB(conn)
	defer db.Close()
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
	exec(`CREATE TABLE kv_schema (version INT NOT NULL) ENGINE=InnoDB`)
	for _, m := range ms {
		if m.Version < 9 {
			for _, stmt := range splitStatements(m.SQL) {
				exec(stmt)
			}
			exec(`INSERT INTO kv_schema (version) VALUES (?)`, m.Version)
		}
	}
	for _, r := range backendtest.ValueOnceLog {
		exec(`INSERT INTO kv_log (rev, sub, k, deleted, create_rev, prev_rev, version, lease, v) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			r.Rev, r.Sub, r.Key, r.Deleted, r.CreateRev, r.PrevRev, r.Version, r.Lease, nonNil(r.Value))
	}
	for _, r := range backendtest.ValueOnceCurrent() {
		exec(`INSERT INTO kv_current (k, create_rev, mod_rev, version, lease, v) VALUES (?, ?, ?, ?, ?, ?)`,
			r.Key, r.CreateRev, r.Rev, r.Version, r.Lease, r.Value)
	}
	exec(`UPDATE kv_meta SET rev = ?`, backendtest.ValueOnceRev)
	st, err := Open(ctx, Config{DSN: endpoint})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	backendtest.CheckValueOnceUpgrade(t, st)
}
