package backends

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"

	_ "modernc.org/sqlite" // the driver, for this test's database
)

// TestStmtTxReusesStatements: a transaction runs a prepared statement
// through one copy however often it runs it; database/sql would otherwise
// make (and hold until the transaction ends) a copy per call, so a bulk
// load of a million rows in one transaction held a million statements.
func TestStmtTxReusesStatements(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(t.TempDir(), "t.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(`CREATE TABLE t (v INTEGER)`); err != nil {
		t.Fatal(err)
	}
	const ins = `INSERT INTO t (v) VALUES (?)`
	p, err := PrepareAll(ctx, db, []string{ins})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback() }()
	st := &StmtTx{Tx: tx, Prepared: p}
	first := st.stmt(ctx, ins)
	for i := range 100 {
		if _, err := st.Exec(ctx, ins, i); err != nil {
			t.Fatal(err)
		}
	}
	if len(st.stmts) != 1 || st.stmt(ctx, ins) != first {
		t.Fatalf("%d statement copies after 100 runs of one statement; want the first one, reused", len(st.stmts))
	}
	var n int
	if err := st.QueryRow(ctx, `SELECT COUNT(*) FROM t`, nil, &n); err != nil || n != 100 {
		t.Fatalf("rows = %d, %v; want 100", n, err)
	}
}
