package integration

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kvsql/kvsql/backends"
	"github.com/kvsql/kvsql/backends/mysql"
	"github.com/kvsql/kvsql/notify/binlog"
)

// TestMySQLMisconfiguredServer: a server kvsql cannot follow is refused at
// start-up with the setting to change named.
func TestMySQLMisconfiguredServer(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		server []string // nil: the normal server, as user nobinlog
		want   string
	}{
		{"binlog off", []string{"--server-id=1"}, "binary log is off"},
		{"statement format", []string{"--log-bin=binlog", "--binlog-format=STATEMENT", "--server-id=1"}, "binlog_format is STATEMENT"},
		{"minimal row image", []string{"--log-bin=binlog", "--binlog-format=ROW", "--binlog-row-image=MINIMAL", "--server-id=1"}, "binlog_row_image is MINIMAL"},
		{"no replication grant", nil, "REPLICATION SLAVE"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var ep string
			if tc.server == nil {
				m, err := sharedMy()
				if err != nil {
					skipOrFail(t, err)
				}
				name := fmt.Sprintf("kvsql_grants_%d", myDBCounter.Add(1))
				if err := m.createDB(name); err != nil {
					t.Fatal(err)
				}
				ep = m.dsn("nobinlog", name)
			} else {
				_, ep = ownMariaDB(t, tc.server...)
			}
			st, err := mysql.Open(context.Background(), mysql.Config{DSN: ep})
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			err = binlog.Check(context.Background(), st.DB())
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "--notify=poll") {
				t.Fatalf("Check = %v; want an error naming %q and --notify=poll", err, tc.want)
			}
		})
	}
}

// TestMySQLRestartDuringWritesAndWatches restarts MariaDB (clean, then a
// crash) under writes through two instances with watchers on both.
func TestMySQLRestartDuringWritesAndWatches(t *testing.T) {
	t.Parallel()
	m, ep := ownMariaDB(t)
	servers, first := mysqlInstancesOn(t, ep, 2, serverOptions{SafetyPoll: time.Hour})
	restarts := []func(){
		func() { m.stop(syscall.SIGTERM); mustStart(t, m.start) },
		func() { m.stop(syscall.SIGKILL); mustStart(t, m.start) },
	}
	runFaultLoad(t, clientsFor(t, servers), first, restarts)
}

func mustStart(t *testing.T, start func() error) {
	t.Helper()
	if err := start(); err != nil {
		t.Fatal(err)
	}
}

// runFaultLoad writes through every client and watches through every
// client while faults run one after another, then checks that nothing
// acknowledged is lost and every watch saw exactly kv_log.
func runFaultLoad(t *testing.T, clients []*clientv3.Client, be backends.Backend, faults []func()) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	upTo := map[string]chan int64{}
	results := map[string][]*clientv3.Event{}
	var mu sync.Mutex
	var wwg sync.WaitGroup
	for i, c := range clients {
		name := fmt.Sprintf("watch on instance %d", i)
		ch := make(chan int64, 1)
		upTo[name] = ch
		wch := c.Watch(ctx, "w/", clientv3.WithPrefix(), clientv3.WithRev(1))
		wwg.Add(1)
		go func() {
			defer wwg.Done()
			evs, err := collect(ctx, wch, ch)
			if err != nil {
				t.Errorf("%s: %v", name, err)
			}
			mu.Lock()
			results[name] = evs
			mu.Unlock()
		}()
	}
	stop := make(chan struct{})
	acked := make([][]ackedPut, len(clients))
	var pwg sync.WaitGroup
	for i, c := range clients {
		pwg.Add(1)
		go func() {
			defer pwg.Done()
			acked[i] = writeUntil(ctx, c, fmt.Sprintf("w/%d", i), stop)
		}()
	}
	rev := int64(20)
	for i, fault := range faults {
		waitForRevision(t, ctx, clients[i%len(clients)], rev)
		fault()
		logRecovery(t, ctx, clients)
		rev += 30
	}
	waitForRevision(t, ctx, clients[0], rev)
	close(stop)
	pwg.Wait()
	resp, err := clients[0].Get(ctx, "w/", clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	for _, ch := range upTo {
		ch <- resp.Header.Revision
	}
	wwg.Wait()
	var all []ackedPut
	for _, a := range acked {
		all = append(all, a...)
	}
	checkHistory(t, ctx, clients[0], be, all, results, resp.Header.Revision)
}

// logRecovery logs how long after a fault ended a put through each
// instance is acknowledged again (puts of 1 s deadline, retried at once).
func logRecovery(t *testing.T, ctx context.Context, clients []*clientv3.Client) {
	t.Helper()
	ended := time.Now()
	for i, c := range clients {
		for ctx.Err() == nil {
			pctx, cancel := context.WithTimeout(ctx, time.Second)
			_, err := c.Put(pctx, fmt.Sprintf("w/recovered/%d", i), "v") // watched: the checks count it
			cancel()
			if err == nil {
				t.Logf("a put through instance %d acknowledged %v after the fault ended", i, time.Since(ended).Round(time.Millisecond))
				break
			}
		}
	}
}

// TestMySQLReplicationConnectionKilled kills the binlog dump threads; the
// instances reconnect, re-read kv_log and keep delivering. It has a server
// of its own: killing every dump thread of the shared server in the middle
// of the whole suite once took that server down (MariaDB 10.11.19, not
// reproduced alone), and with it every other test on it.
func TestMySQLReplicationConnectionKilled(t *testing.T) {
	t.Parallel()
	_, ep := ownMariaDB(t)
	servers, first := mysqlInstancesOn(t, ep, 2, serverOptions{SafetyPoll: time.Hour})
	db := first.(*mysql.Store).DB()
	kill := func() { killBinlogDumps(t, db, 2) }
	runFaultLoad(t, clientsFor(t, servers), first, []func(){kill, kill})
}

// killBinlogDumps kills every binlog dump thread on db's server, once at
// least want instances follow the binlog: after an earlier kill they
// reconnect first.
func killBinlogDumps(t *testing.T, db *sql.DB, want int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var ids []int64
	for len(ids) < want {
		if time.Now().After(deadline) {
			t.Fatalf("found %d binlog dump threads, want at least %d", len(ids), want)
		}
		ids = ids[:0]
		rows, err := db.Query(`SELECT id FROM information_schema.processlist WHERE command LIKE ?`, "Binlog Dump%")
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var id int64
			if err := rows.Scan(&id); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, id)
		}
		rows.Close()
		if len(ids) < want {
			time.Sleep(20 * time.Millisecond) // polling the server's process list
		}
	}
	for _, id := range ids {
		if _, err := db.Exec(fmt.Sprintf("KILL %d", id)); err != nil && !strings.Contains(err.Error(), "Unknown thread") {
			t.Fatal(err)
		}
	}
}

// TestMySQLPurgedBinlogWhileStopped: while an instance is away (here: not
// yet started, as after a stop), another one writes and every binlog that
// covered those writes is purged. The instance then starts: a watch through
// it from the client's last revision gets exactly the missing events, read
// from kv_log, and then the new ones from the binlog.
func TestMySQLPurgedBinlogWhileStopped(t *testing.T) {
	t.Parallel()
	m, ep := ownMariaDB(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stA, srcA := openMySQL(t, ep)
	t.Cleanup(func() { _ = srcA.Close() })
	a := newClient(t, serveKVSQL(t, stA, srcA, serverOptions{SafetyPoll: time.Hour}))
	for i := range 10 {
		if _, err := a.Put(ctx, fmt.Sprintf("k/%d", i), "before"); err != nil {
			t.Fatal(err)
		}
	}
	lastSeen := int64(11)

	// B is away; meanwhile A writes and the binlogs are purged.
	for i := range 20 {
		if _, err := a.Put(ctx, fmt.Sprintf("k/%d", i%7), "while-away"); err != nil {
			t.Fatal(err)
		}
	}
	root, err := sql.Open("mysql", "root@unix("+m.socket()+")/")
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	for _, q := range []string{"FLUSH BINARY LOGS", "FLUSH BINARY LOGS", "PURGE BINARY LOGS BEFORE NOW() + INTERVAL 1 DAY"} {
		if _, err := root.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	stB, srcB := openMySQL(t, ep)
	t.Cleanup(func() { _ = srcB.Close() })
	b := newClient(t, serveKVSQL(t, stB, srcB, serverOptions{SafetyPoll: time.Hour}))
	ch := make(chan int64, 1)
	wch := b.Watch(ctx, "k/", clientv3.WithPrefix(), clientv3.WithRev(lastSeen+1))
	// and a few more writes after B is back, through A
	var last int64
	for i := range 5 {
		resp, err := a.Put(ctx, fmt.Sprintf("k/%d", i), "after")
		if err != nil {
			t.Fatal(err)
		}
		last = resp.Header.Revision
	}
	ch <- last
	evs, err := collect(ctx, wch, ch)
	if err != nil {
		t.Fatal(err)
	}
	logEvs, err := readLog(ctx, stA, last)
	if err != nil {
		t.Fatal(err)
	}
	replay, err := replayLog(logEvs)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 25 {
		t.Fatalf("watch from %d got %d events, want 25", lastSeen+1, len(evs))
	}
	if err := replay.checkEvents(watchSpec{prefix: "k/", start: lastSeen + 1}, evs, last); err != nil {
		t.Fatalf("watch from %d: %v", lastSeen+1, err)
	}
}
