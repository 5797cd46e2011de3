package integration

import (
	"context"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kvsql/kvsql/backends/mysql"
	"github.com/kvsql/kvsql/backends/sqlite"
)

// The linearizability check under the faults the suite can produce. Each
// test starts three instances on one database and hands
// runLinearizabilityCheck the fault; the in-process instances run with the
// safety poll off, so that only the change stream delivers watch events.

// TestLinearizabilityInstanceKilled: the instance that holds the leader
// lock (and so receives every forwarded write) is SIGKILLed mid-run; the
// other two go on without it for a while, then it is started again. On
// SQLite the one instance is killed and started again.
func TestLinearizabilityInstanceKilled(t *testing.T) {
	t.Parallel()
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		p := startKVSQLProc(t)
		be, err := sqlite.Open(context.Background(), sqlite.Config{Path: filepath.Join(p.DataDir, "state.db")})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = be.Close() })
		c := p.client(t)
		runLinearizabilityCheck(t, []*clientv3.Client{c, c, c}, be, func() {
			p.kill()
			p.restart()
		})
	})
	for _, se := range sharedEndpoints {
		t.Run(se.name, func(t *testing.T) {
			t.Parallel()
			ep := se.endpoint(t)
			procs := startLeaderFirst(t, se, ep, "a", "b", "c")
			a := procs[0]
			clients := []*clientv3.Client{a.client(t), procs[1].client(t), procs[2].client(t)}
			runLinearizabilityCheck(t, clients, se.open(t, ep), func() {
				a.kill()
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				resp, err := clients[1].Get(ctx, "x", clientv3.WithCountOnly())
				if err != nil {
					t.Fatal(err)
				}
				waitForRevision(t, ctx, clients[2], resp.Header.Revision+100)
				a.restart()
			})
		})
	}
}

// TestLinearizabilityDatabaseRestart: the database crashes (every
// PostgreSQL process SIGKILLed at once, MariaDB killed) and starts again
// mid-run.
func TestLinearizabilityDatabaseRestart(t *testing.T) {
	t.Parallel()
	opts := serverOptions{SafetyPoll: time.Hour}
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		p, url := ownPostgres(t)
		servers, be := postgresInstancesOn(t, url, 3, opts)
		runLinearizabilityCheck(t, clientsFor(t, servers), be, func() {
			p.Crash()
			mustStart(t, p.start)
		})
	})
	t.Run("mysql", func(t *testing.T) {
		t.Parallel()
		m, ep := ownMariaDB(t)
		servers, be := mysqlInstancesOn(t, ep, 3, opts)
		runLinearizabilityCheck(t, clientsFor(t, servers), be, func() {
			m.stop(syscall.SIGKILL)
			mustStart(t, m.start)
		})
	})
}

// TestLinearizabilityChangeStreamKilled: every instance's change stream
// connection (PostgreSQL's LISTEN, MariaDB's binlog dump) is killed mid-run.
func TestLinearizabilityChangeStreamKilled(t *testing.T) {
	t.Parallel()
	opts := serverOptions{SafetyPoll: time.Hour}
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		url := freshPostgresURL(t)
		servers, be := postgresInstancesOn(t, url, 3, opts)
		runLinearizabilityCheck(t, clientsFor(t, servers), be, func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			killListenConnections(t, ctx, url, 3)
		})
	})
	t.Run("mysql", func(t *testing.T) {
		t.Parallel()
		// A server of its own, as TestMySQLReplicationConnectionKilled.
		_, ep := ownMariaDB(t)
		servers, be := mysqlInstancesOn(t, ep, 3, opts)
		runLinearizabilityCheck(t, clientsFor(t, servers), be, func() {
			killBinlogDumps(t, be.(*mysql.Store).DB(), 3)
		})
	})
}

// TestLinearizabilityInstanceFrozen: the instance holding the leader lock
// (the one the others forward their writes to) is frozen with SIGSTOP for
// 10 s mid-run and then continues, as after a VM pause or a long GC pause.
func TestLinearizabilityInstanceFrozen(t *testing.T) {
	t.Parallel()
	for _, se := range sharedEndpoints {
		t.Run(se.name, func(t *testing.T) {
			t.Parallel()
			ep := se.endpoint(t)
			procs := startLeaderFirst(t, se, ep, "a", "b", "c")
			a := procs[0]
			clients := []*clientv3.Client{a.client(t), procs[1].client(t), procs[2].client(t)}
			runLinearizabilityCheck(t, clients, se.open(t, ep), func() {
				a.signal(syscall.SIGSTOP)
				time.Sleep(10 * time.Second)
				a.signal(syscall.SIGCONT)
			})
		})
	}
}

// TestLinearizabilityDatabaseUnreachable: the network to the database
// drops everything for 10 s mid-run, then comes back.
func TestLinearizabilityDatabaseUnreachable(t *testing.T) {
	t.Parallel()
	for _, se := range sharedEndpoints {
		t.Run(se.name, func(t *testing.T) {
			t.Parallel()
			clients, be, proxy := proxiedInstances(t, se)
			runLinearizabilityCheck(t, clients, be, func() {
				proxy.block()
				time.Sleep(10 * time.Second)
				proxy.unblock()
			})
		})
	}
}
