package mysql

import (
	"context"
	"database/sql"
	"testing"
	"time"

	gomysql "github.com/go-sql-driver/mysql"

	"github.com/kvsql/kvsql/internal/testdb"
)

// openWithSQL opens a Store on a fresh database, and a plain connection
// pool to the same database for the test's own statements; both are
// closed when the test ends.
func openWithSQL(t *testing.T) (*Store, *sql.DB) {
	t.Helper()
	endpoint := testdb.FreshMySQLEndpoint(t)
	st, err := Open(context.Background(), Config{DSN: endpoint})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st, plainDB(t, endpoint)
}

// plainDB opens a plain connection pool to endpoint's database, closed
// when the test ends.
func plainDB(t *testing.T, endpoint string) *sql.DB {
	t.Helper()
	dc, err := ParseEndpoint(endpoint)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := gomysql.NewConnector(dc)
	if err != nil {
		t.Fatal(err)
	}
	db := sql.OpenDB(conn)
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// Size follows the data at once: InnoDB's table statistics (what
// information_schema.tables reports as data and index length) are only
// recalculated after a tenth of a table changed, so that Status once
// reported 0.2 MB in use after 24 MB were written.
func TestSizeFollowsTheData(t *testing.T) {
	ctx := context.Background()
	st, db := openWithSQL(t)
	size0, inUse0, err := st.Size(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// 3000 values of 8 KiB: 24 MB.
	const written = 3000 * 8192
	for _, q := range []string{
		`CREATE TEMPORARY TABLE digits (d INT NOT NULL)`,
		`INSERT INTO digits VALUES (0), (1), (2), (3), (4), (5), (6), (7), (8), (9)`,
		`INSERT INTO kv_log (rev, sub, k, deleted, create_rev, prev_rev, version, lease, v)
			SELECT g + 2, 0, CONCAT('/k/', LPAD(g, 7, '0')), 0, g + 2, 0, 1, 0, REPEAT('v', 8192)
			FROM (SELECT a.d + 10 * b.d + 100 * c.d + 1000 * e.d AS g
				FROM digits a, digits b, digits c, digits e WHERE e.d < 3) s`,
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	size1, inUse1, err := st.Size(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("empty: size %d in use %d; after writing %d bytes: size %d in use %d", size0, inUse0, written, size1, inUse1)
	if inUse1 < inUse0+written || size1 < inUse1 {
		t.Fatalf("after writing %d bytes: size %d, in use %d (empty: %d, %d); want in use grown by at least that, size >= in use",
			written, size1, inUse1, size0, inUse0)
	}
	if _, err := db.ExecContext(ctx, `DELETE FROM kv_log`); err != nil {
		t.Fatal(err)
	}
	// InnoDB's purge frees the deleted rows' pages in the background.
	deadline := time.Now().Add(60 * time.Second)
	for {
		size2, inUse2, err := st.Size(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if inUse2 < inUse1/2 && size2 >= inUse2 {
			t.Logf("after deleting them: size %d in use %d", size2, inUse2)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("60 s after deleting every row: size %d, in use %d (with them: %d, %d); want in use below half",
				size2, inUse2, size1, inUse1)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
