package integration

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kvsql/kvsql/backends"
	"github.com/kvsql/kvsql/backends/mysql"
	"github.com/kvsql/kvsql/backends/postgres"
)

// sharedEndpoint is a database several kvsql processes can share, with a
// way to ask the database whether some instance holds the leader lock.
type sharedEndpoint struct {
	name     string
	endpoint func(t testing.TB) string
	// leaderHeld reports whether the leader lock of endpoint is taken.
	leaderHeld func(t *testing.T, endpoint string) bool
	// open opens a backend on endpoint to read kv_log with.
	open func(t *testing.T, endpoint string) backends.Backend
}

var sharedEndpoints = []sharedEndpoint{
	{
		name:     "postgres",
		endpoint: freshPostgresURL,
		leaderHeld: func(t *testing.T, ep string) bool {
			conn, err := pgx.Connect(context.Background(), ep)
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close(context.Background())
			var n int
			if err := conn.QueryRow(context.Background(),
				`SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND database = (SELECT oid FROM pg_database WHERE datname = current_database())`).Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n > 0
		},
		open: func(t *testing.T, ep string) backends.Backend {
			st, err := postgres.Open(context.Background(), postgres.Config{URL: ep})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = st.Close() })
			return st
		},
	},
	{
		name:     "mysql",
		endpoint: freshMySQLEndpoint,
		leaderHeld: func(t *testing.T, ep string) bool {
			db, name := mysqlSQL(t, ep)
			defer db.Close()
			var holder sql.NullInt64
			if err := db.QueryRow(`SELECT IS_USED_LOCK(?)`, "kvsql_leader."+name).Scan(&holder); err != nil {
				t.Fatal(err)
			}
			return holder.Valid
		},
		open: func(t *testing.T, ep string) backends.Backend {
			st, err := mysql.Open(context.Background(), mysql.Config{DSN: ep})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = st.Close() })
			return st
		},
	},
}

// pollUntil polls cond every 50 ms until it holds or the deadline passes.
func pollUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, timeout)
		}
		time.Sleep(50 * time.Millisecond) // polling another process's state
	}
}

// startLeaderFirst starts a kvsql process on ep for each name; the first
// takes the leader lock before the others start.
func startLeaderFirst(t *testing.T, se sharedEndpoint, ep string, names ...string) []*kvsqlProc {
	t.Helper()
	var procs []*kvsqlProc
	for i, name := range names {
		procs = append(procs, startKVSQLProc(t, "--endpoint="+ep, "--name="+name))
		if i == 0 {
			pollUntil(t, 20*time.Second, "instance "+name+" takes the leader lock", func() bool { return se.leaderHeld(t, ep) })
		}
	}
	return procs
}

// TestLeaderFailover: instance A holds leadership (it started first and
// took the lock); B is a follower. A is killed with SIGKILL. B must take
// over lease expiry (a key attached to a short lease granted through B
// disappears), and MemberList through B drops A.
func TestLeaderFailover(t *testing.T) {
	t.Parallel()
	for _, se := range sharedEndpoints {
		t.Run(se.name, func(t *testing.T) {
			t.Parallel()
			procs := startLeaderFirst(t, se, se.endpoint(t), "a", "b")
			a, b := procs[0], procs[1]
			cb := b.client(t)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			pollUntil(t, 20*time.Second, "MemberList through B lists A and B", func() bool {
				ml, err := cb.MemberList(ctx)
				return err == nil && len(ml.Members) == 2
			})
			ml, _ := cb.MemberList(ctx)
			urls := map[string]bool{}
			for _, m := range ml.Members {
				for _, u := range m.ClientURLs {
					urls[u] = true
				}
			}
			if !urls["http://"+a.Addr] || !urls["http://"+b.Addr] {
				t.Fatalf("MemberList client URLs = %v, want A's and B's", urls)
			}

			a.kill()
			lease, err := cb.Grant(ctx, 2)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := cb.Put(ctx, "leased", "v", clientv3.WithLease(lease.ID)); err != nil {
				t.Fatal(err)
			}
			pollUntil(t, 30*time.Second, "B revokes the expired lease after A died", func() bool {
				resp, err := cb.Get(ctx, "leased")
				return err == nil && len(resp.Kvs) == 0
			})
			ttl, err := cb.TimeToLive(ctx, lease.ID)
			if err != nil || ttl.TTL != -1 {
				t.Fatalf("TimeToLive after expiry = %v, %v; want TTL -1", ttl, err)
			}
			pollUntil(t, 20*time.Second, "MemberList through B drops A", func() bool {
				ml, err := cb.MemberList(ctx)
				return err == nil && len(ml.Members) == 1 && ml.Members[0].Name == "b"
			})
		})
	}
}

// TestKillInstanceMidGroupCommit: two instances on one database; writers
// on A; A is SIGKILLed in the middle of its group commits. Every write A
// acknowledged is there, revisions never went backwards, and a watcher on B
// from revision 1 sees exactly kv_log.
func TestKillInstanceMidGroupCommit(t *testing.T) {
	t.Parallel()
	for _, se := range sharedEndpoints {
		t.Run(se.name, func(t *testing.T) {
			t.Parallel()
			ep := se.endpoint(t)
			a := startKVSQLProc(t, "--endpoint="+ep, "--name=a")
			b := startKVSQLProc(t, "--endpoint="+ep, "--name=b")
			ca, cb := a.client(t), b.client(t)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			lw := startLogWatch(ctx, cb, "w/")

			var mu sync.Mutex
			var acked []ackedPut
			var wg sync.WaitGroup
			// clientv3 waits for a connection (WaitForReady): a put started
			// after the kill would block until its context ends, so the
			// writers' context is cancelled right after the kill.
			wctx, stopWriters := context.WithCancel(ctx)
			defer stopWriters()
			for w := range 16 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := 0; ; i++ {
						k, v := fmt.Sprintf("w/%02d/%05d", w, i), fmt.Sprintf("v%d", i)
						resp, err := ca.Put(wctx, k, v)
						if err != nil {
							return // A is gone
						}
						mu.Lock()
						acked = append(acked, ackedPut{k, v, resp.Header.Revision})
						mu.Unlock()
					}
				}()
			}
			waitForRevision(t, ctx, cb, 200)
			a.kill()
			stopWriters()
			wg.Wait()
			evs, final := lw.end(t, ctx)
			if len(acked) < 100 {
				t.Fatalf("only %d writes acknowledged before the kill", len(acked))
			}
			if strings.Contains(a.allLog.String(), "WARNING: DATA RACE") {
				t.Fatal("data race in instance A")
			}
			checkHistory(t, ctx, cb, se.open(t, ep), acked, map[string][]*clientv3.Event{"watch on B": evs}, final)
		})
	}
}
