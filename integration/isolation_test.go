package integration

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kvsql/kvsql/backends"
	"github.com/kvsql/kvsql/backends/sqlite"
	"github.com/kvsql/kvsql/notify/local"
)

// writeBeside runs writers clients putting ordinary keys, each n times,
// beside one client that puts bad() n times, and returns how many ordinary
// puts failed and the errors of the bad ones.
func writeBeside(t *testing.T, c *clientv3.Client, writers, n int, badKey func(i int) string) (failed int64, badErrs []error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	var nFailed atomic.Int64
	var firstErr atomic.Value
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range n {
				if _, err := c.Put(ctx, fmt.Sprintf("ok/%d/%d", w, i), "v"); err != nil {
					nFailed.Add(1)
					firstErr.CompareAndSwap(nil, err)
				}
			}
		}()
	}
	badErrs = make([]error, n)
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range n {
			_, badErrs[i] = c.Put(ctx, badKey(i), "v")
		}
	}()
	wg.Wait()
	if e := firstErr.Load(); e != nil {
		t.Logf("first failed ordinary put: %v", e)
	}
	return nFailed.Load(), badErrs
}

// TestLongKeysFailAlone: a client putting keys longer than the database can
// index must never fail other clients' writes (they share group commits),
// and gets InvalidArgument naming the limit; SQLite stores such keys, as
// etcd does. Before, on PostgreSQL the long key reached the database inside
// a batch and failed every write in it with a raw SQL error.
func TestLongKeysFailAlone(t *testing.T) {
	t.Parallel()
	for _, b := range kvsqlBackends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			c := newClient(t, b.start(t, serverOptions{}))
			long := func(i int) string { return fmt.Sprintf("long/%d/%s", i, strings.Repeat("x", 3000)) }
			failed, badErrs := writeBeside(t, c, 8, 100, long)
			if failed != 0 {
				t.Fatalf("%d of 800 ordinary puts failed beside a client writing 3000-byte keys", failed)
			}
			for i, err := range badErrs {
				if b.name == "sqlite" {
					if err != nil {
						t.Fatalf("put of a 3000-byte key %d: %v (SQLite stores any key etcd does)", i, err)
					}
					continue
				}
				if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "at most 2048 bytes") {
					t.Fatalf("put of a 3000-byte key %d: %v; want InvalidArgument naming the 2048-byte limit", i, err)
				}
			}
		})
	}
}

// refusingDB starts kvsql on a database whose kv_log refuses rows for the
// key "poison" (a constraint the database enforces, as it could any
// limit): the write then fails inside the database, in a batch.
type refusingDB struct {
	name  string
	start func(t *testing.T) server
}

var refusingDBs = []refusingDB{
	{"sqlite", func(t *testing.T) server {
		path := filepath.Join(t.TempDir(), "state.db")
		src := local.New()
		be, err := sqlite.Open(context.Background(), sqlite.Config{Path: path, Engine: backends.EngineConfig{OnCommit: src.Publish}})
		if err != nil {
			t.Fatal(err)
		}
		db, err := sql.Open(sqlite.DriverName, "file:"+path)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if _, err := db.Exec(`CREATE TRIGGER poison BEFORE INSERT ON kv_log WHEN NEW.key = CAST('poison' AS BLOB)
			BEGIN SELECT RAISE(ABORT, 'poison is refused'); END`); err != nil {
			t.Fatal(err)
		}
		return serveKVSQL(t, be, src, serverOptions{})
	}},
	{"postgres", func(t *testing.T) server {
		url := freshPostgresURL(t)
		st, src := openPostgres(t, url)
		t.Cleanup(func() { _ = src.Close() })
		conn, err := pgx.Connect(context.Background(), url)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		if _, err := conn.Exec(context.Background(), `ALTER TABLE kv_log ADD CONSTRAINT poison CHECK (key <> 'poison'::bytea)`); err != nil {
			t.Fatal(err)
		}
		return serveKVSQL(t, st, src, serverOptions{})
	}},
	{"mysql", func(t *testing.T) server {
		ep := freshMySQLEndpoint(t)
		st, src := openMySQL(t, ep)
		t.Cleanup(func() { _ = src.Close() })
		db, _ := mysqlSQL(t, ep)
		defer db.Close()
		if _, err := db.Exec(`ALTER TABLE kv_log ADD CONSTRAINT poison CHECK (k <> 'poison')`); err != nil {
			t.Fatal(err)
		}
		return serveKVSQL(t, st, src, serverOptions{})
	}},
}

// TestRefusedWriteFailsAlone: when the database refuses one write of a
// group commit (here a constraint; elsewhere a value or key it cannot
// store), that write fails with InvalidArgument and every other write of
// the batch commits (DESIGN.md invariant 8).
func TestRefusedWriteFailsAlone(t *testing.T) {
	t.Parallel()
	for _, db := range refusingDBs {
		t.Run(db.name, func(t *testing.T) {
			t.Parallel()
			c := newClient(t, db.start(t))
			failed, badErrs := writeBeside(t, c, 8, 100, func(int) string { return "poison" })
			if failed != 0 {
				t.Fatalf("%d of 800 ordinary puts failed beside a client whose writes the database refuses", failed)
			}
			for i, err := range badErrs {
				if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "refused") {
					t.Fatalf("refused put %d: %v; want InvalidArgument saying the database refused it", i, err)
				}
			}
			ctx := context.Background()
			resp, err := c.Get(ctx, "ok/", clientv3.WithPrefix(), clientv3.WithCountOnly())
			if err != nil || resp.Count != 800 {
				t.Fatalf("ordinary keys stored: %v, %v; want 800", resp, err)
			}
			if resp, err := c.Get(ctx, "poison"); err != nil || len(resp.Kvs) != 0 {
				t.Fatalf("refused key: %v, %v; want absent", resp, err)
			}
		})
	}
}
