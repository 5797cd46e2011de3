package backendtest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/kvsql/kvsql/backends"
)

// hangLimit is how long a call may take before a test calls it hung: far
// beyond any legitimate wait, so it never fails a slow but correct backend.
const hangLimit = 30 * time.Second

// runReliability runs the cases about shutdown, snapshots and the revisions
// responses report.
func runReliability(t *testing.T, open Opener) {
	t.Run("WritesRacingCloseNeverHang", func(t *testing.T) {
		t.Parallel()
		writesRacingClose(t, open(t))
	})
	t.Run("RangeHeaderIsItsSnapshot", func(t *testing.T) {
		t.Parallel()
		rangeHeaderIsItsSnapshot(t, open(t))
	})
	t.Run("LeaseCallsReportTheirRevision", func(t *testing.T) {
		t.Parallel()
		leaseCallsReportTheirRevision(t, open(t))
	})
}

// writesRacingClose starts writers and closes the backend under them: every
// write must return (committed, or ErrClosed), none may wait forever for a
// writer that has exited.
func writesRacingClose(t *testing.T, be backends.Backend) {
	const writers = 20
	ctx := context.Background()
	start := make(chan struct{})
	results := make(chan error, writers)
	for w := range writers {
		go func() {
			<-start
			var err error
			for i := 0; err == nil; i++ {
				_, err = be.Txn(ctx, put(fmt.Sprintf("close/%d", w), fmt.Sprint(i)))
			}
			results <- err
		}()
	}
	close(start)
	if err := be.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	timeout := time.After(hangLimit)
	for range writers {
		select {
		case err := <-results:
			if !errors.Is(err, backends.ErrClosed) {
				t.Errorf("write after Close failed with %v, want ErrClosed", err)
			}
		case <-timeout:
			t.Fatal("a write issued while the backend closed never returned")
		}
	}
}

// rangeHeaderIsItsSnapshot checks invariant 2 of DESIGN.md: a Range's header
// revision and its rows come from one snapshot. One writer puts keys a and b
// together in every revision; nothing else writes. So the state at revision
// R has a.mod_revision == b.mod_revision == R, and any read whose header
// was taken from another snapshot than its rows shows a header that differs
// from the rows' mod revision.
func rangeHeaderIsItsSnapshot(t *testing.T, be backends.Backend) {
	ctx := context.Background()
	pair := func(i int) *pb.TxnRequest {
		v := []byte(fmt.Sprint(i))
		return &pb.TxnRequest{Success: []*pb.RequestOp{
			{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("snap/a"), Value: v}}},
			{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("snap/b"), Value: v}}},
		}}
	}
	mustTxn(t, be, pair(0))
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 1; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := be.Txn(ctx, pair(i)); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	defer func() { close(stop); wg.Wait() }()
	reads := []struct {
		name string
		req  *pb.RangeRequest
		keys int
	}{
		{"range", &pb.RangeRequest{Key: []byte("snap/"), RangeEnd: []byte("snap0")}, 2},
		{"limited range", &pb.RangeRequest{Key: []byte("snap/"), RangeEnd: []byte("snap0"), Limit: 1}, 1},
		{"get", &pb.RangeRequest{Key: []byte("snap/a")}, 1},
		{"keys only", &pb.RangeRequest{Key: []byte("snap/"), RangeEnd: []byte("snap0"), KeysOnly: true}, 2},
	}
	for i := range 400 {
		rd := reads[i%len(reads)]
		resp, err := be.Range(ctx, rd.req)
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) != rd.keys {
			t.Fatalf("%s: %d keys, want %d", rd.name, len(resp.Kvs), rd.keys)
		}
		for _, kv := range resp.Kvs {
			if kv.ModRevision != resp.Header.Revision {
				t.Fatalf("%s: header revision %d but %s was read at mod revision %d: header and rows come from different snapshots",
					rd.name, resp.Header.Revision, kv.Key, kv.ModRevision)
			}
		}
		if rd.keys == 2 && string(resp.Kvs[0].Value) != string(resp.Kvs[1].Value) && !rd.req.KeysOnly {
			t.Fatalf("%s: a=%s b=%s: a txn was seen half applied", rd.name, resp.Kvs[0].Value, resp.Kvs[1].Value)
		}
		// A read-only txn answers from one snapshot too.
		tr, err := be.Txn(ctx, &pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestRange{RequestRange: rd.req}}}})
		if err != nil {
			t.Fatal(err)
		}
		for _, kv := range tr.Responses[0].GetResponseRange().Kvs {
			if kv.ModRevision != tr.Header.Revision {
				t.Fatalf("txn %s: header revision %d but %s was read at mod revision %d", rd.name, tr.Header.Revision, kv.Key, kv.ModRevision)
			}
		}
	}
}

// leaseCallsReportTheirRevision checks that LeaseRevoke reports the
// revision of its own deletions and LeaseGrant the revision it was applied
// at, while other writes commit around them (issue 12, item 9).
func leaseCallsReportTheirRevision(t *testing.T, be backends.Backend) {
	ctx := context.Background()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := be.Txn(ctx, put("lease-rev/noise", fmt.Sprint(i))); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	defer func() { close(stop); wg.Wait() }()
	for i := range 50 {
		id := int64(1000 + i)
		if _, err := be.LeaseGrant(ctx, id, 60); err != nil {
			t.Fatal(err)
		}
		key := fmt.Sprintf("lease-rev/k%d", i)
		mustTxn(t, be, &pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{
			RequestPut: &pb.PutRequest{Key: []byte(key), Value: []byte("v"), Lease: id}}}}})
		rev, err := be.LeaseRevoke(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		// The key's deletion is the newest change of the key.
		got, err := be.Range(ctx, &pb.RangeRequest{Key: []byte(key), Revision: rev})
		if err != nil {
			t.Fatal(err)
		}
		if len(got.Kvs) != 0 {
			t.Fatalf("LeaseRevoke reported revision %d, but %s is still live there", rev, key)
		}
		before, err := be.Range(ctx, &pb.RangeRequest{Key: []byte(key), Revision: rev - 1})
		if err != nil {
			t.Fatal(err)
		}
		if len(before.Kvs) != 1 {
			t.Fatalf("LeaseRevoke reported revision %d, but %s was already gone at %d: that is not the revision of its deletion", rev, key, rev-1)
		}
	}
}
