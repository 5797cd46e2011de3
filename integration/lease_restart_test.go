package integration

import (
	"context"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// restartable is a server a test can stop and start again on its data.
type restartable struct {
	endpoint string
	stop     func()
	start    func()
}

// TestLeaseOutlivesRestart: a lease whose TTL passes while the server is
// down is not revoked the moment it comes back. etcd's new leader gives
// every lease its full TTL again, and so does the kvsql instance that takes
// over lease expiry, so the holder can reconnect and keep the lease alive;
// a lease nobody keeps alive then expires one TTL later. Run against etcd
// too, which pins the behaviour.
func TestLeaseOutlivesRestart(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		start func(t *testing.T) restartable
	}{
		{"etcd", func(t *testing.T) restartable {
			cfg := etcdConfig(t, serverOptions{})
			e := runEtcd(t, cfg)
			t.Cleanup(func() { e.Close() })
			return restartable{
				endpoint: cfg.ListenClientUrls[0].String(),
				stop:     e.Close,
				start:    func() { e = runEtcd(t, cfg) },
			}
		}},
		{"kvsql", func(t *testing.T) restartable {
			p := startKVSQLProc(t)
			return restartable{
				endpoint: "http://" + p.Addr,
				stop:     func() { p.signal(syscall.SIGTERM); p.wait(30 * time.Second) },
				start:    p.restart,
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			testLeaseOutlivesRestart(t, tc.start(t))
		})
	}
}

func testLeaseOutlivesRestart(t *testing.T, s restartable) {
	const ttl = 5
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := newClient(t, server{Endpoint: s.endpoint})
	kept, err := c.Grant(ctx, ttl)
	if err != nil {
		t.Fatal(err)
	}
	idle, err := c.Grant(ctx, ttl)
	if err != nil {
		t.Fatal(err)
	}
	for key, id := range map[string]clientv3.LeaseID{"kept": kept.ID, "idle": idle.ID} {
		if _, err := c.Put(ctx, key, "v", clientv3.WithLease(id)); err != nil {
			t.Fatal(err)
		}
	}
	s.stop()
	time.Sleep((ttl + 1) * time.Second) // both leases' TTL passes while the server is down
	s.start()
	// A new client: the old one may be in a reconnect backoff of seconds.
	c = newClient(t, server{Endpoint: s.endpoint})

	// Right after the restart both leases are alive with about a full TTL.
	for name, id := range map[string]clientv3.LeaseID{"kept": kept.ID, "idle": idle.ID} {
		resp, err := c.TimeToLive(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if resp.TTL <= 0 {
			t.Fatalf("lease %q after a restart longer than its TTL: TTL %d, want it extended", name, resp.TTL)
		}
	}
	// The kept one is kept alive and stays; the idle one expires.
	ka, err := c.KeepAlive(ctx, kept.ID)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for range ka {
		}
	}()
	pollUntil(t, 3*ttl*time.Second, "the idle lease expires one TTL after the restart", func() bool {
		resp, err := c.Get(ctx, "idle")
		return err == nil && len(resp.Kvs) == 0
	})
	resp, err := c.Get(ctx, "kept")
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("key of the kept-alive lease: %v %v, want it present", resp, err)
	}
}
