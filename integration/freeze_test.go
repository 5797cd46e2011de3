package integration

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// freezeFor is how long the frozen instance stays stopped: far longer than
// the session timeout (5 s) after which the database ends its sessions.
const freezeFor = 20 * time.Second

// casCounter increments key by compare-and-swap until stop, through c, and
// counts the increments acknowledged and those whose outcome is unknown
// (the request failed; it may or may not have been applied).
type casCounter struct {
	acked, unknown atomic.Int64
	// since and firstAfter: the first increment acknowledged after since
	// (Unix nanoseconds; 0 while none).
	since, firstAfter atomic.Int64
}

func (cc *casCounter) run(ctx context.Context, c *clientv3.Client, key string, stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		default:
		}
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		resp, err := c.Get(rctx, key)
		if err != nil {
			cancel()
			time.Sleep(20 * time.Millisecond)
			continue
		}
		cur, mod := 0, int64(0)
		if len(resp.Kvs) == 1 {
			cur, _ = strconv.Atoi(string(resp.Kvs[0].Value))
			mod = resp.Kvs[0].ModRevision
		}
		tr, err := c.Txn(rctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", mod)).
			Then(clientv3.OpPut(key, strconv.Itoa(cur+1))).Commit()
		cancel()
		switch {
		case err != nil:
			cc.unknown.Add(1)
			time.Sleep(20 * time.Millisecond)
		case tr.Succeeded:
			cc.acked.Add(1)
			if since := cc.since.Load(); since != 0 {
				cc.firstAfter.CompareAndSwap(0, time.Now().UnixNano())
			}
		}
	}
}

// TestFrozenInstance: three kvsql processes on one database; A holds the
// leader lock, so it does lease expiry and the writes B and C forward to it.
// A is frozen (SIGSTOP) while it works, most likely in the middle of a
// group commit holding the write lock, for 20 s: a paused VM or a long GC
// pause. While A is frozen, writes through B and C commit again (the
// database ends A's silent sessions after the session timeout and the
// locks pass on), another instance takes the leader lock and expires a
// lease that runs out, and nothing A had read before it froze is committed
// when it wakes: every compare-and-swap increment is counted once (no lost
// or doubled update), every acknowledged write is there, and every
// instance's watch equals kv_log. The stall after the freeze is measured.
func TestFrozenInstance(t *testing.T) {
	t.Parallel()
	for _, se := range sharedEndpoints {
		t.Run(se.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
			defer cancel()
			ep := se.endpoint(t)
			a := startKVSQLProc(t, "--endpoint="+ep, "--name=a")
			pollUntil(t, 20*time.Second, "instance A takes the leader lock", func() bool { return se.leaderHeld(t, ep) })
			b := startKVSQLProc(t, "--endpoint="+ep, "--name=b")
			cproc := startKVSQLProc(t, "--endpoint="+ep, "--name=c")
			ca, cb, cc := a.client(t), b.client(t), cproc.client(t)
			statusA, err := ca.Status(ctx, a.Addr)
			if err != nil {
				t.Fatal(err)
			}
			memberA := statusA.Header.MemberId

			// Watches on B and C from revision 1, for the whole run.
			type watch struct {
				name string
				upTo chan int64
				done chan struct{}
				evs  []*clientv3.Event
				err  error
			}
			var watches []*watch
			for name, c := range map[string]*clientv3.Client{"B": cb, "C": cc} {
				w := &watch{name: "watch on " + name, upTo: make(chan int64, 1), done: make(chan struct{})}
				wch := c.Watch(ctx, "", clientv3.WithPrefix(), clientv3.WithRev(1))
				go func() { defer close(w.done); w.evs, w.err = collect(ctx, wch, w.upTo) }()
				watches = append(watches, w)
			}

			// Load: plain puts and CAS increments through B and C.
			stop := make(chan struct{})
			var wg sync.WaitGroup
			var counter casCounter
			var mu sync.Mutex
			var acked []ackedPut
			for i, c := range []*clientv3.Client{cb, cc, cb, cc} {
				wg.Add(2)
				go func() {
					defer wg.Done()
					counter.run(ctx, c, "freeze/counter", stop)
				}()
				go func() {
					defer wg.Done()
					got := writeUntil(ctx, c, fmt.Sprintf("freeze/w%d", i), stop)
					mu.Lock()
					acked = append(acked, got...)
					mu.Unlock()
				}()
			}
			pollUntil(t, 30*time.Second, "the load is running", func() bool { return counter.acked.Load() >= 20 })

			// A lease, with a key, that runs out while A (which expires
			// leases) is frozen: no keep-alive is sent.
			lease, err := cb.Grant(ctx, 6)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := cb.Put(ctx, "freeze/leased", "v", clientv3.WithLease(lease.ID)); err != nil {
				t.Fatal(err)
			}

			// Freeze A while it works, until it froze inside a transaction
			// (every write transaction holds the write lock from its first
			// statement): the database shows a session idle in one.
			var frozenAt time.Time
			inTx := false
			for attempt := 0; attempt < 30 && !inTx; attempt++ {
				if attempt > 0 {
					a.signal(syscall.SIGCONT)
					time.Sleep(time.Duration(50+attempt*7) * time.Millisecond)
				}
				a.signal(syscall.SIGSTOP)
				frozenAt = time.Now()
				inTx = idleInTransaction(t, se.name, ep) > 0
			}
			t.Logf("A froze inside a transaction: %v", inTx)
			// Increments acknowledged from now on were written while A
			// was frozen (a request already answered may still count: one
			// at most per writer, so ask for more than that).
			ackedBefore := counter.acked.Load() + 4
			counter.since.Store(frozenAt.UnixNano())
			expired := false
			for time.Since(frozenAt) < freezeFor && !(expired && counter.acked.Load() > ackedBefore+20) {
				rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
				resp, err := cb.Get(rctx, "freeze/leased")
				rcancel()
				expired = expired || (err == nil && len(resp.Kvs) == 0)
				time.Sleep(200 * time.Millisecond)
			}
			stillFrozen := time.Since(frozenAt) < freezeFor
			firstAck := time.Duration(0)
			if at := counter.firstAfter.Load(); at != 0 {
				firstAck = time.Unix(0, at).Sub(frozenAt)
			}
			if !stillFrozen || counter.acked.Load() <= ackedBefore+20 {
				t.Errorf("writes through B and C did not resume while A was frozen (%d increments acknowledged in %v)", counter.acked.Load()-ackedBefore, time.Since(frozenAt))
			}
			if !expired {
				t.Errorf("the 6 s lease did not expire within %v of A's freeze: lease expiry did not move", time.Since(frozenAt))
			}
			st, err := cb.Status(ctx, b.Addr)
			if err != nil {
				t.Fatal(err)
			}
			if st.Leader == memberA {
				t.Errorf("B still names the frozen A as leader after %v", time.Since(frozenAt))
			}
			t.Logf("writes resumed while A was frozen: the first increment acknowledged after the freeze came %v after it; the lease expired: %v", firstAck, expired)
			if rest := freezeFor - time.Since(frozenAt); rest > 0 {
				time.Sleep(rest)
			}
			a.signal(syscall.SIGCONT)

			// A comes back as a follower; its clients work again.
			pollUntil(t, 30*time.Second, "A answers writes after it wakes", func() bool {
				rctx, rcancel := context.WithTimeout(ctx, 5*time.Second)
				defer rcancel()
				_, err := ca.Put(rctx, "freeze/after", "v")
				return err == nil
			})
			close(stop)
			wg.Wait()

			final, err := cb.Get(ctx, "freeze/counter")
			if err != nil {
				t.Fatal(err)
			}
			got, _ := strconv.ParseInt(string(final.Kvs[0].Value), 10, 64)
			if n, u := counter.acked.Load(), counter.unknown.Load(); got < n || got > n+u {
				t.Errorf("counter = %d after %d acknowledged increments and %d with unknown outcome: an update was lost or applied twice", got, n, u)
			}
			rev := final.Header.Revision
			for _, w := range watches {
				w.upTo <- rev
			}
			logs := map[string][]*clientv3.Event{}
			for _, w := range watches {
				<-w.done
				if w.err != nil {
					t.Fatalf("%s: %v", w.name, w.err)
				}
				logs[w.name] = w.evs
			}
			// A's own watch, after it woke, replays the same history.
			wa := ca.Watch(ctx, "", clientv3.WithPrefix(), clientv3.WithRev(1))
			upTo := make(chan int64, 1)
			upTo <- rev
			evsA, err := collect(ctx, wa, upTo)
			if err != nil {
				t.Fatalf("watch on A after it woke: %v", err)
			}
			logs["watch on A after it woke"] = evsA
			checkHistory(t, ctx, cb, se.open(t, ep), acked, logs, rev)
		})
	}
}

// idleInTransaction counts the database sessions that hold a transaction
// open while their client sends nothing: a frozen instance's.
func idleInTransaction(t *testing.T, dbName, ep string) int {
	t.Helper()
	ctx := context.Background()
	var n int
	if dbName == "postgres" {
		conn, err := pgx.Connect(ctx, ep)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity WHERE state = 'idle in transaction' AND datname = current_database()`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	db, _ := mysqlSQL(t, ep)
	defer db.Close()
	if err := db.QueryRow(`SELECT COUNT(*) FROM information_schema.innodb_trx x
		JOIN information_schema.processlist p ON p.id = x.trx_mysql_thread_id WHERE p.command = 'Sleep'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}
