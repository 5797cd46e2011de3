package integration

import (
	"context"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestLeaseOutlivesRestart: a lease whose TTL passes while kvsql is down is
// not revoked the moment kvsql comes back. As etcd's new leader does, kvsql
// gives every lease its full TTL again when it takes over lease expiry, so
// the holder can reconnect and keep the lease alive; a lease nobody keeps
// alive then expires one TTL later.
func TestLeaseOutlivesRestart(t *testing.T) {
	t.Parallel()
	const ttl = 3
	p := startKVSQLProc(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := p.client(t)
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
	p.signal(syscall.SIGTERM)
	p.wait(30 * time.Second)
	time.Sleep((ttl + 1) * time.Second) // both leases' TTL passes while kvsql is down
	p.restart()

	// Right after the restart both leases are alive with about a full TTL.
	for name, id := range map[string]clientv3.LeaseID{"kept": kept.ID, "idle": idle.ID} {
		resp, err := c.TimeToLive(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if resp.TTL <= 0 {
			t.Fatalf("lease %q after a restart longer than its TTL: TTL %d, want it extended (etcd extends leases on a leader change)", name, resp.TTL)
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
