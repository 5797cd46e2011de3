package integration

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kvsql/kvsql/backends"
)

// ackedPut is a put a client got an answer for.
type ackedPut struct {
	key, val string
	rev      int64
}

// writeUntil puts unique keys through c until stop is closed, retrying
// failed puts (a failure during a database outage is expected), and returns
// the puts that were acknowledged.
func writeUntil(ctx context.Context, c *clientv3.Client, prefix string, stop <-chan struct{}) []ackedPut {
	var acked []ackedPut
	for i := 0; ; i++ {
		select {
		case <-stop:
			return acked
		default:
		}
		key, val := fmt.Sprintf("%s/%05d", prefix, i), fmt.Sprintf("v%d", i)
		for {
			pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			resp, err := c.Put(pctx, key, val)
			cancel()
			if err == nil {
				acked = append(acked, ackedPut{key, val, resp.Header.Revision})
				break
			}
			select {
			case <-stop:
				return acked
			case <-ctx.Done():
				return acked
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
}

// checkHistory asserts that every acknowledged put is in the store and that
// each watch saw exactly kv_log's events, in order, without gaps.
func checkHistory(t *testing.T, ctx context.Context, c *clientv3.Client, be backends.Backend, acked []ackedPut, watches map[string][]*clientv3.Event, rev int64) {
	t.Helper()
	for _, a := range acked {
		resp, err := c.Get(ctx, a.key)
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != a.val || resp.Kvs[0].ModRevision != a.rev {
			t.Fatalf("acknowledged put %s=%s at revision %d is not there: %v", a.key, a.val, a.rev, resp.Kvs)
		}
		if a.rev > rev {
			t.Fatalf("put acknowledged at revision %d above the final revision %d", a.rev, rev)
		}
	}
	if err := checkWatchesAgainstLog(ctx, be, watches, rev); err != nil {
		t.Error(err)
	}
}

// TestPostgresRestartDuringWritesAndWatches restarts PostgreSQL three times
// (fast shutdown, immediate shutdown, and a crash: every process SIGKILLed
// at once, then crash recovery) under a write load through two kvsql
// instances with watchers on both: nothing acknowledged is lost and every
// watcher ends with exactly the log's history.
func TestPostgresRestartDuringWritesAndWatches(t *testing.T) {
	t.Parallel()
	p, url := ownPostgres(t)
	servers, first := postgresInstancesOn(t, url, 2, serverOptions{SafetyPoll: time.Hour})
	restarts := []func(){
		func() { p.stop(syscall.SIGINT); mustStart(t, p.start) },  // fast shutdown
		func() { p.stop(syscall.SIGQUIT); mustStart(t, p.start) }, // immediate: like a crash
		func() { p.Crash(); mustStart(t, p.start) },               // a crash
	}
	runFaultLoad(t, clientsFor(t, servers), first, restarts)
}

// TestPostgresListenConnectionKilled terminates the LISTEN connections; the
// instances reconnect, re-read the log and keep delivering, with the safety
// poll off.
func TestPostgresListenConnectionKilled(t *testing.T) {
	t.Parallel()
	url := freshPostgresURL(t)
	servers, first := postgresInstancesOn(t, url, 2, serverOptions{SafetyPoll: time.Hour})
	clients := clientsFor(t, servers)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	wch := clients[1].Watch(ctx, "k", clientv3.WithPrefix())
	ch := make(chan int64, 1)
	var evs []*clientv3.Event
	var werr error
	done := make(chan struct{})
	go func() { defer close(done); evs, werr = collect(ctx, wch, ch) }()

	var acked []ackedPut
	put := func(k string) {
		resp, err := clients[0].Put(ctx, k, "v")
		if err != nil {
			t.Fatal(err)
		}
		acked = append(acked, ackedPut{k, "v", resp.Header.Revision})
	}
	put("k1")
	killListenConnections(t, ctx, url, 2)
	for i := 2; i <= 20; i++ {
		put(fmt.Sprintf("k%d", i))
	}
	ch <- acked[len(acked)-1].rev
	<-done
	if werr != nil {
		t.Fatalf("watch across the killed LISTEN connection: %v", werr)
	}
	checkHistory(t, ctx, clients[0], first, acked, map[string][]*clientv3.Event{"watch on instance 1": evs}, acked[len(acked)-1].rev)
}

// killListenConnections terminates the LISTEN connections of the
// instances on url's database, once want of them are listening.
func killListenConnections(t *testing.T, ctx context.Context, url string, want int) {
	t.Helper()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	// Each instance LISTENs from its own goroutine once it runs; on a busy
	// machine that may still be under way.
	for deadline := time.Now().Add(30 * time.Second); ; {
		var listening int
		if err := conn.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
			WHERE datname = current_database() AND query LIKE 'LISTEN%'`).Scan(&listening); err != nil {
			t.Fatal(err)
		}
		if listening >= want || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond) // polling the server's activity
	}
	var killed int
	if err := conn.QueryRow(ctx, `SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
		WHERE datname = current_database() AND query LIKE 'LISTEN%'`).Scan(&killed); err != nil {
		t.Fatal(err)
	}
	if killed != want {
		t.Fatalf("terminated %d LISTEN connections, want %d", killed, want)
	}
}

// waitForRevision polls until the store reaches rev.
func waitForRevision(t *testing.T, ctx context.Context, c *clientv3.Client, rev int64) {
	t.Helper()
	for {
		resp, err := c.Get(ctx, "x", clientv3.WithCountOnly())
		if err == nil && resp.Header.Revision >= rev {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("revision %d not reached: %v", rev, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// freshPostgresURLOn creates a database on a specific throwaway server.
func freshPostgresURLOn(t *testing.T, p *pgServer) string {
	t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, p.url("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE kvsql_fault"); err != nil {
		t.Fatal(err)
	}
	return p.url("kvsql_fault")
}
