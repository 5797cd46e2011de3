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
// column name".
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
	if _, err := db.Exec(`DELETE FROM kv_schema WHERE version = 2`); err != nil {
		t.Fatal(err)
	}
	st, err = mysql.Open(context.Background(), mysql.Config{DSN: ep})
	if err != nil {
		t.Fatalf("start after an interrupted migration 002: %v", err)
	}
	_ = st.Close()
	var have int
	if err := db.QueryRow(`SELECT MAX(version) FROM kv_schema`).Scan(&have); err != nil || have < 2 {
		t.Fatalf("schema version after the rerun = %d, %v; want 2 recorded", have, err)
	}
}
