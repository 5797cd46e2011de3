package integration

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/kvsql/kvsql/backends"
	"github.com/kvsql/kvsql/backends/sqlite"
	"github.com/kvsql/kvsql/notify/local"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestCompactionDoesNotHoldTheWriteLock: compaction's cleanup deletes
// history outside the global write lock. A transaction of the test holds a
// row the cleanup must delete, so the cleanup waits on it; meanwhile
// writes must commit. Before, the cleanup held kv_meta's lock while it
// deleted, so every writer waited for it.
func TestCompactionDoesNotHoldTheWriteLock(t *testing.T) {
	t.Parallel()
	for _, se := range sharedEndpoints {
		t.Run(se.name, func(t *testing.T) {
			t.Parallel()
			ep := se.endpoint(t)
			var s server
			if se.name == "postgres" {
				st, src := openPostgres(t, ep)
				t.Cleanup(func() { _ = src.Close() })
				s = serveKVSQL(t, st, src, serverOptions{})
			} else {
				st, src := openMySQL(t, ep)
				t.Cleanup(func() { _ = src.Close() })
				s = serveKVSQL(t, st, src, serverOptions{})
			}
			c := newClient(t, s)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			first, err := c.Put(ctx, "hist/a", "1")
			if err != nil {
				t.Fatal(err)
			}
			for i := range 20 {
				if _, err := c.Put(ctx, "hist/a", fmt.Sprint(i+2)); err != nil {
					t.Fatal(err)
				}
			}
			cur, err := c.Put(ctx, "hist/b", "1")
			if err != nil {
				t.Fatal(err)
			}
			// Hold the first version of hist/a, which the cleanup deletes.
			release, waiting := holdLogRow(t, se.name, ep, first.Header.Revision)
			defer release()
			compacted := make(chan error, 1)
			go func() {
				_, err := c.Compact(ctx, cur.Header.Revision)
				compacted <- err
			}()
			pollUntil(t, 30*time.Second, "the cleanup waits for the held row", waiting)
			wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
			defer wcancel()
			if _, err := c.Put(wctx, "during", "v"); err != nil {
				t.Fatalf("a put while the cleanup waited: %v (the cleanup holds the write lock)", err)
			}
			release()
			if err := <-compacted; err != nil {
				t.Fatal(err)
			}
		})
	}
}

// holdLogRow locks the kv_log row at rev from a transaction of its own and
// returns a function that ends it, and one that reports whether the
// cleanup's DELETE is waiting for it.
func holdLogRow(t *testing.T, dbName, ep string, rev int64) (release func(), waiting func() bool) {
	t.Helper()
	ctx := context.Background()
	if dbName == "postgres" {
		holder, err := pgx.Connect(ctx, ep)
		if err != nil {
			t.Fatal(err)
		}
		tx, err := holder.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := tx.Exec(ctx, `SELECT 1 FROM kv_log WHERE rev = $1 FOR UPDATE`, rev); err != nil {
			t.Fatal(err)
		}
		var once sync.Once
		release = func() { once.Do(func() { _ = tx.Rollback(ctx); _ = holder.Close(ctx) }) }
		probe, err := pgx.Connect(ctx, ep)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = probe.Close(ctx) })
		return release, func() bool {
			var n int
			err := probe.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'DELETE FROM kv_log%'`).Scan(&n)
			return err == nil && n > 0
		}
	}
	db, _ := mysqlSQL(t, ep)
	t.Cleanup(func() { _ = db.Close() })
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(`SELECT 1 FROM kv_log WHERE rev = ? FOR UPDATE`, rev); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	release = func() { once.Do(func() { _ = tx.Rollback() }) }
	return release, func() bool {
		// MariaDB's innodb_trx does not list the waiting DELETE as LOCK
		// WAIT; the process list shows it running, and with the row held it
		// cannot finish.
		var n int
		err := db.QueryRow(`SELECT COUNT(*) FROM information_schema.processlist WHERE info LIKE 'DELETE o FROM kv_log%'`).Scan(&n)
		return err == nil && n > 0
	}
}

// logRows counts kv_log's rows in a database.
type logRows func(t *testing.T) int

// compactionTargets are the backends with a way to count kv_log's rows.
func compactionTargets(t *testing.T) map[string]struct {
	c    *clientv3.Client
	rows logRows
} {
	out := map[string]struct {
		c    *clientv3.Client
		rows logRows
	}{}
	path := filepath.Join(t.TempDir(), "state.db")
	src := local.New()
	be, err := sqlite.Open(context.Background(), sqlite.Config{Path: path, Engine: backends.EngineConfig{OnCommit: src.Publish}})
	if err != nil {
		t.Fatal(err)
	}
	out["sqlite"] = struct {
		c    *clientv3.Client
		rows logRows
	}{newClient(t, serveKVSQL(t, be, src, serverOptions{})), func(t *testing.T) int {
		db, err := sql.Open(sqlite.DriverName, "file:"+path)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		return countRows(t, db)
	}}
	pgURL := freshPostgresURL(t)
	pst, psrc := openPostgres(t, pgURL)
	t.Cleanup(func() { _ = psrc.Close() })
	out["postgres"] = struct {
		c    *clientv3.Client
		rows logRows
	}{newClient(t, serveKVSQL(t, pst, psrc, serverOptions{})), func(t *testing.T) int {
		conn, err := pgx.Connect(context.Background(), pgURL)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		var n int
		if err := conn.QueryRow(context.Background(), `SELECT count(*) FROM kv_log`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}}
	myEP := freshMySQLEndpoint(t)
	mst, msrc := openMySQL(t, myEP)
	t.Cleanup(func() { _ = msrc.Close() })
	out["mysql"] = struct {
		c    *clientv3.Client
		rows logRows
	}{newClient(t, serveKVSQL(t, mst, msrc, serverOptions{})), func(t *testing.T) int {
		db, _ := mysqlSQL(t, myEP)
		defer db.Close()
		return countRows(t, db)
	}}
	return out
}

func countRows(t *testing.T, db *sql.DB) int {
	t.Helper()
	var n int
	if err := db.QueryRow(`SELECT COUNT(*) FROM kv_log`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestCompactionRemovesHistory: what compaction frees is really deleted,
// tombstones included once the compact revision has passed them. 600 keys
// deleted in one revision C and compacted at C leave only the 600
// tombstones (a watch may start at C); a later compaction removes them too.
func TestCompactionRemovesHistory(t *testing.T) {
	t.Parallel()
	for name, tg := range compactionTargets(t) {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			for i := range 600 {
				for v := range 2 {
					if _, err := tg.c.Put(ctx, fmt.Sprintf("gone/%04d", i), fmt.Sprint(v)); err != nil {
						t.Fatal(err)
					}
				}
			}
			del, err := tg.c.Delete(ctx, "gone/", clientv3.WithPrefix())
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tg.c.Compact(ctx, del.Header.Revision); err != nil {
				t.Fatal(err)
			}
			if n := tg.rows(t); n != 600 {
				t.Fatalf("after compacting at the deletion, kv_log holds %d rows; want the 600 tombstones", n)
			}
			put, err := tg.c.Put(ctx, "kept", "v")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := tg.c.Compact(ctx, put.Header.Revision); err != nil {
				t.Fatal(err)
			}
			if n := tg.rows(t); n != 1 {
				t.Fatalf("after compacting past the deletion, kv_log holds %d rows; want 1 (kept)", n)
			}
		})
	}
}
