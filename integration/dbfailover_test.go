package integration

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kvsql/kvsql/backends"
	"github.com/kvsql/kvsql/internal/testdb"
)

// Database failover: a primary with a replica, two kvsql instances (as
// processes, with writes forwarded to the leader as the binary does by
// default) on the primary, writes and watches through both; then the
// primary is killed (SIGKILL) and the replica becomes the primary. The
// watch safety poll is off, so watches after the failover show that the
// change stream (LISTEN/NOTIFY, the binlog) followed the database.
//
// With synchronous replication nothing acknowledged is lost and the
// watches continue. With asynchronous replication behind (replication is
// cut before the primary dies while writes go on), kvsql must notice that
// the revision went backwards and never serve it silently: watches are
// cancelled as compacted, reads at the lost revisions fail with
// ErrCompacted, no revision a client saw is handed out again, and it logs
// the revisions involved.

// dbCluster is a primary database with a replica that can take over.
type dbCluster struct {
	// endpoint is kvsql's --endpoint: it reaches whichever is primary.
	endpoint string
	// cutReplication stops the replica receiving anything more from the
	// primary (asynchronous clusters only): from then on it falls behind.
	cutReplication func()
	// failover kills the primary with SIGKILL and makes the replica the
	// primary; kvsql's endpoint then reaches it. It returns when the kill
	// was done and when the new primary took writes.
	failover func(t *testing.T) (killed, promoted time.Time)
	// checkSync fails the test unless every commit so far waited for the
	// replica (synchronous clusters only).
	checkSync func(t *testing.T)
	// direct is an endpoint of the new primary after the failover.
	direct func() string
	// timeline reads kv_meta's timeline from the new primary.
	timeline func(t *testing.T) int64
	open     func(t *testing.T, ep string) backends.Backend
}

const failoverDB = "kvsql_failover"

// newPostgresCluster starts a PostgreSQL primary and a streaming standby
// (synchronous: synchronous_standby_names = '*', synchronous_commit = on;
// else asynchronous, through a proxy the test can block). kvsql gets both
// hosts in one URL with target_session_attrs=read-write; the failover is
// SIGKILL of the primary and pg_ctl promote of the standby.
func newPostgresCluster(t *testing.T, synchronous bool) *dbCluster {
	t.Helper()
	primary, err := testdb.NewPostgres()
	if err != nil {
		skipOrFail(t, err)
	}
	t.Cleanup(primary.Destroy)
	replAddr := primary.Addr()
	var repl *tcpProxy
	if !synchronous {
		repl = newTCPProxy(t, primary.Addr())
		replAddr = repl.Addr()
	}
	standby, err := primary.NewStandby(replAddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(standby.Destroy)
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, primary.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	state := func() (st, sync string) {
		err := conn.QueryRow(ctx, `SELECT state, sync_state FROM pg_stat_replication WHERE application_name = 'standby'`).Scan(&st, &sync)
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			t.Fatal(err)
		}
		return st, sync
	}
	pollUntil(t, 30*time.Second, "the standby streams", func() bool { st, _ := state(); return st == "streaming" })
	if synchronous {
		for _, q := range []string{`ALTER SYSTEM SET synchronous_standby_names = '*'`, `ALTER SYSTEM SET synchronous_commit = 'on'`, `SELECT pg_reload_conf()`} {
			if _, err := conn.Exec(ctx, q); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
		pollUntil(t, 30*time.Second, "the standby is synchronous", func() bool { _, sync := state(); return sync == "sync" })
	}
	checkSync := func(t *testing.T) {
		conn, err := pgx.Connect(ctx, primary.URL("postgres"))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		var sync string
		if err := conn.QueryRow(ctx, `SELECT sync_state FROM pg_stat_replication WHERE application_name = 'standby'`).Scan(&sync); err != nil || sync != "sync" {
			t.Fatalf("the standby's sync_state is %q (%v), want sync", sync, err)
		}
	}
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+failoverDB); err != nil {
		t.Fatal(err)
	}
	c := &dbCluster{
		endpoint: fmt.Sprintf("postgres://kvsql@%s,%s/%s?sslmode=disable&target_session_attrs=read-write", primary.Addr(), standby.Addr(), failoverDB),
		failover: func(t *testing.T) (time.Time, time.Time) {
			primary.Crash()
			killed := time.Now()
			if err := standby.Promote(); err != nil {
				t.Fatal(err)
			}
			return killed, time.Now()
		},
		direct: func() string { return standby.URL(failoverDB) },
		open:   sharedEndpoints[0].open,
	}
	if synchronous {
		c.checkSync = checkSync
	}
	if repl != nil {
		c.cutReplication = repl.block
	}
	c.timeline = func(t *testing.T) int64 {
		conn, err := pgx.Connect(ctx, c.direct())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(ctx)
		var tl int64
		if err := conn.QueryRow(ctx, `SELECT timeline FROM kv_meta`).Scan(&tl); err != nil {
			t.Fatal(err)
		}
		return tl
	}
	return c
}

// newMariaDBCluster starts a MariaDB primary and a GTID replica
// (master_use_gtid=slave_pos), semi-synchronous (AFTER_SYNC) or
// asynchronous through a proxy the test can block. kvsql reaches the
// primary through a proxy, like a DNS name or an RDS endpoint; the failover
// is SIGKILL of the primary, STOP SLAVE / RESET SLAVE ALL / read_only=0 on
// the replica once it applied what it received, and the proxy moved to it.
func newMariaDBCluster(t *testing.T, semiSync bool) *dbCluster {
	t.Helper()
	binlog := []string{"--log-bin=binlog", "--binlog-format=ROW", "--binlog-row-image=FULL"}
	primaryOpts := append(slices.Clone(binlog), "--server-id=1")
	replicaOpts := append(slices.Clone(binlog), "--server-id=2", "--read-only=ON", "--slave-net-timeout=5")
	if semiSync {
		// A timeout far beyond the test, so that the primary never falls
		// back to asynchronous replication on its own. It is enabled once
		// the replica follows (below): until then every commit would wait.
		primaryOpts = append(primaryOpts, "--rpl-semi-sync-master-wait-point=AFTER_SYNC", "--rpl-semi-sync-master-timeout=600000")
		replicaOpts = append(replicaOpts, "--rpl-semi-sync-slave-enabled=ON")
	}
	primary, err := testdb.NewMariaDB(primaryOpts...)
	if err != nil {
		skipOrFail(t, err)
	}
	t.Cleanup(primary.Destroy)
	replica, err := testdb.NewMariaDB(replicaOpts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(replica.Destroy)
	pos, err := primary.GTIDBinlogPos()
	if err != nil {
		t.Fatal(err)
	}
	replAddr := primary.Addr()
	var repl *tcpProxy
	if !semiSync {
		repl = newTCPProxy(t, primary.Addr())
		replAddr = repl.Addr()
	}
	if err := replica.ReplicateFrom(replAddr, pos); err != nil {
		t.Fatal(err)
	}
	root, err := primary.Root()
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	if semiSync {
		if _, err := root.Exec(`SET GLOBAL rpl_semi_sync_master_enabled = ON`); err != nil {
			t.Fatal(err)
		}
		rroot, err := replica.Root()
		if err != nil {
			t.Fatal(err)
		}
		defer rroot.Close()
		// The replica asks for semi-synchronous replication when it
		// connects.
		for _, q := range []string{"STOP SLAVE IO_THREAD", "START SLAVE IO_THREAD"} {
			if _, err := rroot.Exec(q); err != nil {
				t.Fatalf("%s: %v", q, err)
			}
		}
		pollUntil(t, 30*time.Second, "the replica acknowledges semi-synchronously", func() bool {
			var name, clients string
			if err := root.QueryRow(`SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_master_clients'`).Scan(&name, &clients); err != nil {
				t.Fatal(err)
			}
			return clients != "0"
		})
	}
	if err := primary.CreateDB(failoverDB); err != nil {
		t.Fatal(err)
	}
	front := newTCPProxy(t, primary.Addr())
	c := &dbCluster{
		endpoint: fmt.Sprintf("mysql://kvsql@tcp(%s)/%s", front.Addr(), failoverDB),
		failover: func(t *testing.T) (time.Time, time.Time) {
			primary.Stop(syscall.SIGKILL)
			killed := time.Now()
			if err := replica.PromoteReplica(); err != nil {
				t.Fatal(err)
			}
			front.retarget(replica.Addr())
			return killed, time.Now()
		},
		direct: func() string { return replica.DSN("kvsql", failoverDB) },
		open:   sharedEndpoints[1].open,
	}
	if semiSync {
		c.checkSync = func(t *testing.T) {
			root, err := primary.Root()
			if err != nil {
				t.Fatal(err)
			}
			defer root.Close()
			st := map[string]string{}
			rows, err := root.Query(`SHOW GLOBAL STATUS LIKE 'Rpl_semi_sync_master_%'`)
			if err != nil {
				t.Fatal(err)
			}
			defer rows.Close()
			for rows.Next() {
				var k, v string
				if err := rows.Scan(&k, &v); err != nil {
					t.Fatal(err)
				}
				st[k] = v
			}
			if st["Rpl_semi_sync_master_status"] != "ON" || st["Rpl_semi_sync_master_no_tx"] != "0" || st["Rpl_semi_sync_master_yes_tx"] == "0" {
				t.Fatalf("semi-synchronous replication: status %s, %s commits not acknowledged by the replica, %s acknowledged; want ON, 0, some",
					st["Rpl_semi_sync_master_status"], st["Rpl_semi_sync_master_no_tx"], st["Rpl_semi_sync_master_yes_tx"])
			}
		}
	}
	if repl != nil {
		c.cutReplication = repl.block
	}
	c.timeline = func(t *testing.T) int64 {
		db, _ := mysqlSQL(t, c.direct())
		defer db.Close()
		var tl int64
		if err := db.QueryRow(`SELECT timeline FROM kv_meta`).Scan(&tl); err != nil {
			t.Fatal(err)
		}
		return tl
	}
	return c
}

// attempt is one put a failover writer tried.
type attempt struct {
	start, end time.Time
	ok         bool
	put        ackedPut
}

// failoverWriter puts unique keys through one client until stopped,
// retrying failures, and records every attempt.
type failoverWriter struct {
	name     string
	mu       sync.Mutex // guards attempts
	attempts []attempt
}

func (w *failoverWriter) run(ctx context.Context, c *clientv3.Client, prefix string, stop <-chan struct{}) {
	for i := 0; ; i++ {
		key, val := fmt.Sprintf("%s/%05d", prefix, i), fmt.Sprintf("v%d", i)
		for {
			select {
			case <-stop:
				return
			case <-ctx.Done():
				return
			default:
			}
			a := attempt{start: time.Now()}
			pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			resp, err := c.Put(pctx, key, val)
			cancel()
			a.end, a.ok = time.Now(), err == nil
			if err == nil {
				a.put = ackedPut{key, val, resp.Header.Revision}
			}
			w.mu.Lock()
			w.attempts = append(w.attempts, a)
			w.mu.Unlock()
			if err == nil {
				break
			}
			time.Sleep(20 * time.Millisecond) // a client retrying at its own pace
		}
	}
}

// acked returns the acknowledged puts whose attempt started before (or,
// with after, at or after) t.
func (w *failoverWriter) acked(t time.Time, after bool) []ackedPut {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []ackedPut
	for _, a := range w.attempts {
		if a.ok && a.start.Before(t) != after {
			out = append(out, a.put)
		}
	}
	return out
}

// count returns how many puts were acknowledged.
func (w *failoverWriter) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, a := range w.attempts {
		if a.ok {
			n++
		}
	}
	return n
}

// outage describes the writer's failures after t: from the end of the
// first failed put to the end of the first put acknowledged after it, and
// from t to that acknowledgement. failed is false if no put failed.
func (w *failoverWriter) outage(t time.Time) (window, sinceKill time.Duration, failed bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	var firstFail time.Time
	for _, a := range w.attempts {
		if a.end.Before(t) {
			continue
		}
		switch {
		case !a.ok && firstFail.IsZero():
			firstFail = a.end
		case a.ok && !firstFail.IsZero():
			return a.end.Sub(firstFail), a.end.Sub(t), true
		case a.ok && a.start.After(t):
			return 0, a.end.Sub(t), false
		}
	}
	return 0, 0, !firstFail.IsZero()
}

// watchResult is what a watch received until it ended.
type watchResult struct {
	evs []*clientv3.Event
	// compactRev is the compact revision of the cancellation, if the watch
	// was cancelled as compacted.
	compactRev int64
	err        error
}

// collectUntilCancel gathers a watch's events until it is cancelled, or
// until it has seen revision upTo (sent on upTo).
func collectUntilCancel(ctx context.Context, wch clientv3.WatchChan, upTo <-chan int64) watchResult {
	var r watchResult
	target := int64(-1)
	for {
		if target >= 0 && len(r.evs) > 0 && r.evs[len(r.evs)-1].Kv.ModRevision >= target {
			return r
		}
		select {
		case wr, ok := <-wch:
			if !ok {
				r.err = fmt.Errorf("watch closed after %d events without a cancellation", len(r.evs))
				return r
			}
			r.evs = append(r.evs, wr.Events...)
			if wr.CompactRevision != 0 {
				r.compactRev = wr.CompactRevision
				if !errors.Is(wr.Err(), rpctypes.ErrCompacted) {
					r.err = fmt.Errorf("cancelled at compact revision %d with %w, want ErrCompacted", wr.CompactRevision, wr.Err())
				}
				return r
			}
			if err := wr.Err(); err != nil {
				r.err = err
				return r
			}
		case rev := <-upTo:
			target = rev
		case <-ctx.Done():
			r.err = fmt.Errorf("timed out with %d events (want up to revision %d)", len(r.evs), target)
			return r
		}
	}
}

// failoverRun is kvsql on a cluster under load: two instances, a writer
// and a watch from revision 1 on each.
type failoverRun struct {
	c       *dbCluster
	names   []string
	procs   []*kvsqlProc
	clients []*clientv3.Client
	writers []*failoverWriter
	watches []chan watchResult
	upTo    []chan int64
	stop    chan struct{}
	wg      sync.WaitGroup
}

func startFailoverRun(t *testing.T, ctx context.Context, c *dbCluster) *failoverRun {
	t.Helper()
	r := &failoverRun{c: c, stop: make(chan struct{})}
	for _, name := range []string{"a", "b"} {
		p := startKVSQLProc(t, "--endpoint="+c.endpoint, "--name="+name, "--watch-safety-poll=1h")
		r.procs, r.names = append(r.procs, p), append(r.names, name)
		r.clients = append(r.clients, p.client(t))
	}
	for i, cl := range r.clients {
		res, upTo := make(chan watchResult, 1), make(chan int64, 1)
		wch := cl.Watch(ctx, "w/", clientv3.WithPrefix(), clientv3.WithRev(1))
		go func() { res <- collectUntilCancel(ctx, wch, upTo) }()
		r.watches, r.upTo = append(r.watches, res), append(r.upTo, upTo)
		w := &failoverWriter{name: r.names[i]}
		r.writers = append(r.writers, w)
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			w.run(ctx, cl, fmt.Sprintf("w/%d", i), r.stop)
		}()
	}
	return r
}

// waitAcked waits until every writer has n more acknowledged puts than
// now.
func (r *failoverRun) waitAcked(t *testing.T, n int) {
	t.Helper()
	base := make([]int, len(r.writers))
	for i, w := range r.writers {
		base[i] = w.count()
	}
	pollUntil(t, 60*time.Second, fmt.Sprintf("%d more writes through each instance", n), func() bool {
		for i, w := range r.writers {
			if w.count() < base[i]+n {
				return false
			}
		}
		return true
	})
}

// logOutages reports how long writes through each instance failed after
// the primary was killed at killed; the replica took writes from promoted.
func (r *failoverRun) logOutages(t *testing.T, killed, promoted time.Time) {
	t.Helper()
	ms := func(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
	for i, w := range r.writers {
		window, sinceKill, failed := w.outage(killed)
		if !failed {
			t.Logf("instance %s: no put failed; the first put started after the kill was acknowledged %v after it", r.names[i], ms(sinceKill))
			continue
		}
		t.Logf("instance %s: writes failed for %v (first failed put to first acknowledged put); acknowledged again %v after the kill (the promotion call returned after %v)",
			r.names[i], ms(window), ms(sinceKill), ms(promoted.Sub(killed)))
	}
}

// finish stops the writers, puts one last key through instance 0 and
// returns its revision: every watch that is still open ends there.
func (r *failoverRun) finish(t *testing.T, ctx context.Context) int64 {
	t.Helper()
	close(r.stop)
	r.wg.Wait()
	resp, err := r.clients[0].Put(ctx, "w/end", "end")
	if err != nil {
		t.Fatal(err)
	}
	return resp.Header.Revision
}

// logs returns every instance's log so far.
func (r *failoverRun) logs() string {
	var b strings.Builder
	for _, p := range r.procs {
		b.WriteString(p.log.String())
	}
	return b.String()
}

// onEachCluster runs fn in parallel subtests on a PostgreSQL and a MariaDB
// primary with a replica (replicating synchronously if sync), with three
// minutes for the whole subtest.
func onEachCluster(t *testing.T, sync bool, fn func(t *testing.T, ctx context.Context, c *dbCluster)) {
	t.Parallel()
	for _, db := range []struct {
		name  string
		start func(t *testing.T, sync bool) *dbCluster
	}{
		{"postgres", newPostgresCluster},
		{"mariadb", newMariaDBCluster},
	} {
		t.Run(db.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			fn(t, ctx, db.start(t, sync))
		})
	}
}

// fenceLogRE matches the error an instance logs when it fences the
// database: the revision it had seen and the database's.
var fenceLogRE = regexp.MustCompile(`revision went backwards.* seen_rev=(\d+) database_rev=(\d+)`)

// TestDatabaseFailoverSynchronous: with synchronous replication
// (PostgreSQL synchronous_standby_names='*' and synchronous_commit=on;
// MariaDB semi-sync with AFTER_SYNC), the primary is killed under writes
// and watches on two instances and the replica promoted: no acknowledged
// write is lost, every watch continues and gets every event once, in
// order, without restarting kvsql, and nothing is fenced.
func TestDatabaseFailoverSynchronous(t *testing.T) {
	onEachCluster(t, true, func(t *testing.T, ctx context.Context, c *dbCluster) {
		r := startFailoverRun(t, ctx, c)
		// A lease kept alive across the failover.
		lease, err := r.clients[1].Grant(ctx, 20)
		if err != nil {
			t.Fatal(err)
		}
		r.waitAcked(t, 30)
		c.checkSync(t)

		killed, promoted := c.failover(t)
		r.waitAcked(t, 30)
		r.logOutages(t, killed, promoted)
		if _, err := r.clients[1].KeepAliveOnce(ctx, lease.ID); err != nil {
			t.Errorf("keeping the lease granted before the failover alive: %v", err)
		}
		final := r.finish(t, ctx)

		watches := map[string][]*clientv3.Event{}
		for i, res := range r.watches {
			r.upTo[i] <- final
			w := <-res
			if w.err != nil || w.compactRev != 0 {
				t.Fatalf("watch on instance %s across the failover: %v (compact revision %d)", r.names[i], w.err, w.compactRev)
			}
			watches["watch on instance "+r.names[i]] = w.evs
		}
		var acked []ackedPut
		for _, w := range r.writers {
			acked = append(acked, w.acked(time.Now(), false)...)
		}
		checkHistory(t, ctx, r.clients[0], c.open(t, c.direct()), acked, watches, final)
		if tl := c.timeline(t); tl != 0 {
			t.Errorf("kv_meta.timeline = %d after a synchronous failover, want 0 (nothing fenced)", tl)
		}
		if logs := r.logs(); strings.Contains(logs, "revision went backwards") || strings.Contains(logs, "fenced onto a new timeline") {
			t.Errorf("an instance fenced the database after a synchronous failover:\n%s", logs)
		}
	})
}

// TestDatabaseFailoverAsynchronousBehind: with asynchronous replication,
// replication is cut while writes go on, so the replica that takes over is
// behind revisions clients were given. kvsql (not restarted) must notice
// and fence: every watch open across the failover is cancelled as
// compacted above every revision clients saw, reads at the lost revisions
// fail with ErrCompacted, no write after the failover gets a revision a
// client saw before, revisions never go backwards for a client, an
// instance logs the revision it had seen and the database's, the database
// is fenced once, and after clients list again watches and writes work,
// every watcher getting every new event once, in order.
func TestDatabaseFailoverAsynchronousBehind(t *testing.T) {
	onEachCluster(t, false, func(t *testing.T, ctx context.Context, c *dbCluster) {
		r := startFailoverRun(t, ctx, c)
		kept, err := r.clients[1].Grant(ctx, 60)
		if err != nil {
			t.Fatal(err)
		}
		r.waitAcked(t, 20)

		// The replica stops receiving; the primary goes on committing.
		c.cutReplication()
		lost, err := r.clients[1].Grant(ctx, 60)
		if err != nil {
			t.Fatal(err)
		}
		r.waitAcked(t, 30)
		killed, promoted := c.failover(t)

		// Every watch open across the failover is cancelled as
		// compacted; what it got before is ordered and unique.
		var seen int64 // the highest revision any client saw before
		for _, w := range r.writers {
			for _, a := range w.acked(killed, false) {
				seen = max(seen, a.rev)
			}
		}
		var compactRev int64
		for i, res := range r.watches {
			var w watchResult
			select {
			case w = <-res:
			case <-time.After(time.Minute): // a hang guard, far above the seconds it takes
				r.waitAcked(t, 5)
				for _, w := range r.writers {
					for _, a := range w.acked(killed, true) {
						if a.rev <= seen {
							t.Errorf("writer %s: put after the failover acknowledged at revision %d, which clients had seen before", w.name, a.rev)
							break
						}
					}
				}
				t.Fatalf("watch on instance %s was not cancelled within a minute of the failover", r.names[i])
			}
			if w.err != nil || w.compactRev == 0 {
				t.Fatalf("watch on instance %s across the failover: %v, compact revision %d; want a cancellation as compacted", r.names[i], w.err, w.compactRev)
			}
			for j, ev := range w.evs {
				if j > 0 && ev.Kv.ModRevision <= w.evs[j-1].Kv.ModRevision {
					t.Fatalf("watch on instance %s: event at revision %d after one at %d", r.names[i], ev.Kv.ModRevision, w.evs[j-1].Kv.ModRevision)
				}
				seen = max(seen, ev.Kv.ModRevision)
			}
			compactRev = max(compactRev, w.compactRev)
		}
		if compactRev <= seen {
			t.Fatalf("watches cancelled at compact revision %d, not above revision %d clients saw", compactRev, seen)
		}

		// An instance logged what happened, once.
		var dbRev int64
		pollUntil(t, 30*time.Second, "an instance logs the fence", func() bool { return fenceLogRE.MatchString(r.logs()) })
		m := fenceLogRE.FindAllStringSubmatch(r.logs(), -1)
		if len(m) != 1 {
			t.Errorf("%d fences logged, want 1", len(m))
		}
		seenLogged, _ := strconv.ParseInt(m[0][1], 10, 64)
		dbRev, _ = strconv.ParseInt(m[0][2], 10, 64)
		t.Logf("fenced: an instance had seen revision %d, the new primary was at %d; clients had seen up to %d", seenLogged, dbRev, seen)
		if dbRev >= seen {
			t.Fatalf("the new primary was at revision %d, not behind revision %d clients saw: the test did not cut replication", dbRev, seen)
		}
		for i, p := range r.procs {
			pollUntil(t, 30*time.Second, "instance "+r.names[i]+" reports the new timeline", func() bool {
				return strings.Contains(p.log.String(), "fenced onto a new timeline")
			})
		}
		if tl := c.timeline(t); tl != 1 {
			t.Errorf("kv_meta.timeline = %d, want 1 (one fence)", tl)
		}

		// The lost revisions are compacted; so is everything before.
		for _, rev := range []int64{dbRev, dbRev + 1, seen} {
			if _, err := r.clients[0].Get(ctx, "w/", clientv3.WithPrefix(), clientv3.WithRev(rev)); !errors.Is(err, rpctypes.ErrCompacted) {
				t.Errorf("read at revision %d after the fence: %v, want ErrCompacted", rev, err)
			}
		}
		// Leases: the one granted before the cut survives, the one
		// granted after it is gone, as after an etcd restore.
		if _, err := r.clients[1].KeepAliveOnce(ctx, kept.ID); err != nil {
			t.Errorf("keeping the lease granted before replication was cut alive: %v", err)
		}
		if _, err := r.clients[1].KeepAliveOnce(ctx, lost.ID); !errors.Is(err, rpctypes.ErrLeaseNotFound) {
			t.Errorf("keeping the lease granted after replication was cut alive: %v, want ErrLeaseNotFound", err)
		}

		// Clients list again and watch from there; writes go on.
		list, err := r.clients[1].Get(ctx, "w/", clientv3.WithPrefix())
		if err != nil {
			t.Fatal(err)
		}
		relist := list.Header.Revision
		if relist <= seen {
			t.Fatalf("list after the failover at revision %d, not above revision %d clients saw", relist, seen)
		}
		for _, kv := range list.Kvs {
			if kv.ModRevision > dbRev && kv.ModRevision <= seen {
				t.Errorf("listed %s at revision %d, which the new primary (at %d) never had", kv.Key, kv.ModRevision, dbRev)
				break
			}
		}
		var relisted []chan watchResult
		var upTo []chan int64
		for _, cl := range r.clients {
			res, u := make(chan watchResult, 1), make(chan int64, 1)
			wch := cl.Watch(ctx, "w/", clientv3.WithPrefix(), clientv3.WithRev(relist+1))
			go func() { res <- collectUntilCancel(ctx, wch, u) }()
			relisted, upTo = append(relisted, res), append(upTo, u)
		}
		r.waitAcked(t, 30)
		r.logOutages(t, killed, promoted)
		final := r.finish(t, ctx)

		// No client saw a revision go backwards, and none given out
		// after the failover had been seen before.
		for _, w := range r.writers {
			var prev int64
			for _, a := range w.acked(time.Now(), false) {
				if a.rev <= prev {
					t.Fatalf("writer %s: put acknowledged at revision %d after one at %d", w.name, a.rev, prev)
				}
				prev = a.rev
			}
			for _, a := range w.acked(killed, true) {
				if a.rev <= seen {
					t.Fatalf("writer %s: put after the failover acknowledged at revision %d, which clients had seen before", w.name, a.rev)
				}
			}
		}
		watches := map[string][]*clientv3.Event{}
		for i, res := range relisted {
			upTo[i] <- final
			w := <-res
			if w.err != nil || w.compactRev != 0 {
				t.Fatalf("watch on instance %s after the relist: %v (compact revision %d)", r.names[i], w.err, w.compactRev)
			}
			watches["watch on instance "+r.names[i]+" after the relist"] = w.evs
		}
		var after []ackedPut
		for _, w := range r.writers {
			for _, a := range w.acked(killed, true) {
				if a.rev > relist {
					after = append(after, a)
				}
			}
		}
		checkHistoryAfter(t, ctx, r.clients[0], c.open(t, c.direct()), after, watches, relist, final)
	})
}

// checkHistoryAfter is checkHistory for the history after revision from:
// every acknowledged put is there and each watch saw exactly kv_log's
// events after from, in order.
func checkHistoryAfter(t *testing.T, ctx context.Context, c *clientv3.Client, be backends.Backend, acked []ackedPut, watches map[string][]*clientv3.Event, from, rev int64) {
	t.Helper()
	for _, a := range acked {
		resp, err := c.Get(ctx, a.key)
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != a.val || resp.Kvs[0].ModRevision != a.rev {
			t.Fatalf("acknowledged put %s=%s at revision %d is not there: %v", a.key, a.val, a.rev, resp.Kvs)
		}
	}
	logEvs, err := be.Changes(ctx, from, rev-from)
	if err != nil {
		t.Fatal(err)
	}
	for name, evs := range watches {
		if len(evs) != len(logEvs) {
			t.Errorf("%s: %d events, kv_log has %d after revision %d", name, len(evs), len(logEvs), from)
			continue
		}
		for i, ev := range evs {
			want := &clientv3.Event{Type: logEvs[i].Type, Kv: logEvs[i].Kv}
			if got, exp := eventString(ev), eventString(want); got != exp {
				t.Errorf("%s: event %d = %s, kv_log has %s", name, i, got, exp)
				break
			}
		}
	}
}

// TestPostgresSeveralHostsWriteToThePrimary: with several hosts in the URL
// and no target_session_attrs, kvsql connects to the one that accepts
// writes, as with target_session_attrs=read-write: here the first host is
// read-only (a standby answers the same) and writes go to the second.
func TestPostgresSeveralHostsWriteToThePrimary(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	primaryURL := freshPostgresURL(t)
	cfg, err := pgx.ParseConfig(primaryURL)
	if err != nil {
		t.Fatal(err)
	}
	readOnly, err := testdb.NewPostgres()
	if err != nil {
		skipOrFail(t, err)
	}
	t.Cleanup(readOnly.Destroy)
	conn, err := pgx.Connect(ctx, readOnly.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, q := range []string{"CREATE DATABASE " + cfg.Database, "ALTER SYSTEM SET default_transaction_read_only = on", "SELECT pg_reload_conf()"} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	url := fmt.Sprintf("postgres://kvsql@%s,%s:%d/%s?sslmode=disable", readOnly.Addr(), cfg.Host, cfg.Port, cfg.Database)
	st, src := openPostgres(t, url)
	t.Cleanup(func() { _ = src.Close() })
	c := newClient(t, serveKVSQL(t, st, src, serverOptions{}))
	if _, err := c.Put(ctx, "k", "v"); err != nil {
		t.Fatalf("put with a read-only first host: %v", err)
	}
}
