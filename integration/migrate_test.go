package integration

import (
	"context"
	"testing"

	"github.com/kvsql/kvsql/backends/mysql"
)

// TestMySQLMigrationRerun: MySQL commits each DDL statement on its own, so
// a kvsql that died after migration 002's ALTER TABLE but before recording
// version 2 finds the column there and the version missing on its next
// start. That start must finish the migration, not fail with "Duplicate
// column name". The same for migration 009.
func TestMySQLMigrationRerun(t *testing.T) {
	t.Parallel()
	ep := freshMySQLEndpoint(t)
	st, err := mysql.Open(context.Background(), mysql.Config{DSN: ep})
	if err != nil {
		t.Fatal(err)
	}
	_ = st.Close()
	db, _ := mysqlSQL(t, ep)
	defer db.Close()
	// Migration 009 adds mod_sub and drops kv_current's value column in
	// one statement: a rerun finds mod_sub there and must go on to fill it.
	for _, version := range []int{2, 9} {
		if _, err := db.Exec(`DELETE FROM kv_schema WHERE version = ?`, version); err != nil {
			t.Fatal(err)
		}
		st, err = mysql.Open(context.Background(), mysql.Config{DSN: ep})
		if err != nil {
			t.Fatalf("start after an interrupted migration %03d: %v", version, err)
		}
		_ = st.Close()
		var have int
		if err := db.QueryRow(`SELECT COUNT(*) FROM kv_schema WHERE version = ?`, version).Scan(&have); err != nil || have != 1 {
			t.Fatalf("schema version %d recorded %d times after the rerun (%v); want once", version, have, err)
		}
	}
}
