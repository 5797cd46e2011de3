package integration

import (
	"context"
	"fmt"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestHashKeySpace: Maintenance.Hash hashes the live key space at the
// current revision. The same writes on SQLite, PostgreSQL and MySQL give
// the same hash at the same revision; two instances on one database agree;
// a put changes the hash, and deleting that key again gives back the
// hash of the same key space.
func TestHashKeySpace(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	hash := func(c *clientv3.Client) *pb.HashResponse {
		t.Helper()
		h, err := pb.NewMaintenanceClient(c.ActiveConnection()).Hash(ctx, &pb.HashRequest{})
		if err != nil {
			t.Fatalf("Hash: %v", err)
		}
		return h
	}
	type result struct{ base, withX, withoutX *pb.HashResponse }
	results := map[string]result{}
	for _, b := range kvsqlBackends {
		c := newClient(t, b.start(t, serverOptions{}))
		// The same lease ID everywhere: a key's lease is part of the hash.
		lease, err := pb.NewLeaseClient(c.ActiveConnection()).LeaseGrant(ctx, &pb.LeaseGrantRequest{ID: 0x42, TTL: 600})
		if err != nil {
			t.Fatal(err)
		}
		for i := range 1200 { // more than one page of the hash's reads
			opts := []clientv3.OpOption{}
			if i%7 == 0 {
				opts = append(opts, clientv3.WithLease(clientv3.LeaseID(lease.ID)))
			}
			if _, err := c.Put(ctx, fmt.Sprintf("h/%05d", i), fmt.Sprintf("value %d", i), opts...); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := c.Put(ctx, "h/00003", "changed"); err != nil {
			t.Fatal(err)
		}
		var r result
		r.base = hash(c)
		if again := hash(c); again.Hash != r.base.Hash {
			t.Errorf("%s: Hash %x then %x with no write between", b.name, r.base.Hash, again.Hash)
		}
		if _, err := c.Put(ctx, "x", "y"); err != nil {
			t.Fatal(err)
		}
		r.withX = hash(c)
		if _, err := c.Delete(ctx, "x"); err != nil {
			t.Fatal(err)
		}
		r.withoutX = hash(c)
		if r.withX.Hash == r.base.Hash {
			t.Errorf("%s: a put did not change the hash", b.name)
		}
		if r.withoutX.Hash != r.base.Hash {
			t.Errorf("%s: hash %x after deleting the new key again, want the earlier key space's %x", b.name, r.withoutX.Hash, r.base.Hash)
		}
		if r.withoutX.Header.Revision != r.base.Header.Revision+2 {
			t.Errorf("%s: Hash header revision %d, want %d", b.name, r.withoutX.Header.Revision, r.base.Header.Revision+2)
		}
		results[b.name] = r
	}
	want := results["sqlite"]
	for name, r := range results {
		if r.base.Hash != want.base.Hash || r.withX.Hash != want.withX.Hash || r.base.Header.Revision != want.base.Header.Revision {
			t.Errorf("%s: hashes %x/%x at revision %d, SQLite's %x/%x at %d: the same writes must hash the same on every backend",
				name, r.base.Hash, r.withX.Hash, r.base.Header.Revision, want.base.Hash, want.withX.Hash, want.base.Header.Revision)
		}
	}
	for _, b := range sharedDBBackends {
		servers, _ := b.start(t, 2, serverOptions{})
		c0, c1 := newClient(t, servers[0]), newClient(t, servers[1])
		for i := range 50 {
			if _, err := c0.Put(ctx, fmt.Sprintf("k/%d", i), "v"); err != nil {
				t.Fatal(err)
			}
		}
		h0, h1 := hash(c0), hash(c1)
		if h0.Hash != h1.Hash || h0.Header.Revision != h1.Header.Revision {
			t.Errorf("%s: instances answer %x at %d and %x at %d, want the same", b.name, h0.Hash, h0.Header.Revision, h1.Hash, h1.Header.Revision)
		}
	}
}
