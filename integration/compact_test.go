package integration

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
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
