package backendtest

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/kvsql/kvsql/backends"
)

// SharedOpener returns a function that opens a backend with cfg on one
// fresh, empty database, as many times as a test calls it: several
// instances sharing a database. Each is closed when the test ends.
type SharedOpener func(tb testing.TB) func(cfg backends.EngineConfig) backends.Backend

// RunShared runs the cases of several instances writing to one database
// directly (no forwarding between them).
func RunShared(t *testing.T, open SharedOpener) {
	for _, serial := range []bool{false, true} {
		name := "Pipelined"
		if serial {
			name = "Serial"
		}
		t.Run("CASIncrementsThroughTwoInstances/"+name, func(t *testing.T) {
			t.Parallel()
			casIncrementsThroughTwoInstances(t, open, serial)
		})
		t.Run("MixedWritesKeepTheirRevisions/"+name, func(t *testing.T) {
			t.Parallel()
			mixedWritesKeepTheirRevisions(t, open, serial)
		})
	}
}

// batchCounter is an Observer that counts batches and replays.
type batchCounter struct{ batches, replays atomic.Int64 }

func (c *batchCounter) WriteQueued()                  {}
func (c *batchCounter) BatchDone(backends.BatchStats) { c.batches.Add(1) }
func (c *batchCounter) BatchReplayed()                { c.replays.Add(1) }

// casIncrementsThroughTwoInstances: writers on two instances increment one
// counter with casStep, retrying from the failed CAS's else-branch Get, and
// each also increments a counter of its own. With the pipelined writer,
// each instance prepares its batches without the write lock, so the other
// instance's commits keep making them stale: every such batch must run
// again under the lock (counted as a replay), and no increment may be lost
// or applied twice. Rounds repeat until replays were seen, so that the case
// cannot pass without exercising them.
func casIncrementsThroughTwoInstances(t *testing.T, open SharedOpener, serial bool) {
	ctx := context.Background()
	openOn := open(t)
	var counts [2]batchCounter
	var bes [2]backends.Backend
	for i := range bes {
		bes[i] = openOn(backends.EngineConfig{Observer: &counts[i], SerialWrites: serial})
	}
	const writersPer, each = 4, 20
	total := 0
	for round := 1; ; round++ {
		shared := fmt.Sprintf("shared/%d", round)
		first := mustTxn(t, bes[0], put(shared, "0"))
		onEach(t, bes, writersPer, func(i, w int) error {
			return incrementBoth(ctx, bes[i], shared, fmt.Sprintf("own/%d/%d/%d", round, i, w), first.Header.Revision, each)
		})
		total += 2 * writersPer * each
		for i, be := range bes {
			resp, err := be.Range(ctx, &pb.RangeRequest{Key: []byte(shared)})
			if err != nil {
				t.Fatal(err)
			}
			if got := string(resp.Kvs[0].Value); got != fmt.Sprint(2*writersPer*each) {
				t.Fatalf("round %d: the shared counter read through instance %d is %s after %d acknowledged increments", round, i, got, 2*writersPer*each)
			}
			own, err := be.Range(ctx, &pb.RangeRequest{Key: []byte(fmt.Sprintf("own/%d/", round)), RangeEnd: []byte(fmt.Sprintf("own/%d0", round))})
			if err != nil {
				t.Fatal(err)
			}
			if len(own.Kvs) != 2*writersPer {
				t.Fatalf("round %d: %d own counters, want %d", round, len(own.Kvs), 2*writersPer)
			}
			for _, kv := range own.Kvs {
				if string(kv.Value) != fmt.Sprint(each) || kv.Version != each {
					t.Fatalf("round %d: %s = %s at version %d after %d increments", round, kv.Key, kv.Value, kv.Version, each)
				}
			}
		}
		replays := counts[0].replays.Load() + counts[1].replays.Load()
		t.Logf("round %d: %d increments, %d + %d batches, %d replayed", round, total, counts[0].batches.Load(), counts[1].batches.Load(), replays)
		if serial {
			if replays != 0 {
				t.Fatalf("%d batches replayed with the pipelined writer off", replays)
			}
			return
		}
		if replays > 0 {
			return
		}
		if round == 20 {
			t.Fatal("no batch prepared without the lock found the other instance's writes in 20 rounds: the replay path was not exercised")
		}
	}
}

// incrementBoth increments shared (from the value it had at revision
// first) and own, n times each, in one Txn per attempt: the CAS on shared
// and a blind increment of own (which the Txn also compares, by version).
func incrementBoth(ctx context.Context, be backends.Backend, shared, own string, first int64, n int) error {
	cur, modRev := int64(0), first
	for done := 0; done < n; {
		r := casStep(shared, modRev, fmt.Sprint(cur+1))
		r.Compare = append(r.Compare, &pb.Compare{Key: []byte(own), Target: pb.Compare_VERSION, Result: pb.Compare_EQUAL,
			TargetUnion: &pb.Compare_Version{Version: int64(done)}})
		r.Success = append(r.Success, &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte(own), Value: []byte(fmt.Sprint(done + 1))}}})
		resp, err := be.Txn(ctx, r)
		if err != nil {
			return err
		}
		if resp.Succeeded {
			done++
			cur++
			modRev = resp.Header.Revision
			continue
		}
		kvs := resp.Responses[0].GetResponseRange().Kvs
		if len(kvs) != 1 {
			return fmt.Errorf("else-branch get of %s at revision %d: %d keys", shared, resp.Header.Revision, len(kvs))
		}
		if _, err := fmt.Sscan(string(kvs[0].Value), &cur); err != nil {
			return err
		}
		modRev = kvs[0].ModRevision
	}
	return nil
}

// mixedWritesKeepTheirRevisions: writers on two instances mix the writes a
// batch can prepare without the lock (plain puts, CAS on one key) with
// those it cannot (puts with a lease, a compare over a range, a range
// delete), so that batches split between the two paths. Every
// acknowledged write must be found at the revision it was acknowledged
// with, no two writes may share one, and the log must hold every revision
// once, in order.
func mixedWritesKeepTheirRevisions(t *testing.T, open SharedOpener, serial bool) {
	ctx := context.Background()
	openOn := open(t)
	var bes [2]backends.Backend
	for i := range bes {
		bes[i] = openOn(backends.EngineConfig{SerialWrites: serial})
	}
	const lease = 7
	if _, err := bes[0].LeaseGrant(ctx, lease, 600); err != nil {
		t.Fatal(err)
	}
	start, _, err := bes[0].Revisions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	type ack struct {
		rev     int64
		key     string
		value   string // "" for a delete of key..key+"0"
		deleted bool
	}
	const writersPer, each = 4, 25
	var mu sync.Mutex
	var acks []ack
	onEach(t, bes, writersPer, func(i, w int) error {
		be := bes[i]
		mine := fmt.Sprintf("mix/%d/%d/", i, w)
		for n := range each {
			key, val := fmt.Sprintf("%s%d", mine, n), fmt.Sprintf("v%d.%d.%d", i, w, n)
			putOp := &pb.PutRequest{Key: []byte(key), Value: []byte(val)}
			r := &pb.TxnRequest{}
			a := ack{key: key, value: val}
			switch n % 4 {
			case 1:
				putOp.Lease = lease
			case 2:
				// A compare over the writer's own range: its
				// keys were all written before (mod < any
				// future revision).
				r.Compare = []*pb.Compare{{Key: []byte(mine), RangeEnd: []byte(mine[:len(mine)-1] + "0"),
					Target: pb.Compare_MOD, Result: pb.Compare_LESS, TargetUnion: &pb.Compare_ModRevision{ModRevision: 1 << 40}}}
			case 3:
				// Delete what the writer put so far.
				r.Success = []*pb.RequestOp{{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: &pb.DeleteRangeRequest{
					Key: []byte(mine), RangeEnd: []byte(mine[:len(mine)-1] + "0")}}}}
				a = ack{key: mine, deleted: true}
			}
			if len(r.Success) == 0 {
				r.Success = []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: putOp}}}
			}
			resp, err := be.Txn(ctx, r)
			if err != nil {
				return err
			}
			if !resp.Succeeded {
				return fmt.Errorf("%s: txn %d did not succeed", mine, n)
			}
			a.rev = resp.Header.Revision
			mu.Lock()
			acks = append(acks, a)
			mu.Unlock()
		}
		return nil
	})
	byRev := map[int64]ack{}
	for _, a := range acks {
		if other, dup := byRev[a.rev]; dup {
			t.Fatalf("two writes acknowledged at revision %d: %+v and %+v", a.rev, other, a)
		}
		byRev[a.rev] = a
		if a.deleted {
			resp, err := bes[1].Range(ctx, &pb.RangeRequest{Key: []byte(a.key), RangeEnd: []byte(a.key[:len(a.key)-1] + "0"), Revision: a.rev})
			if err != nil {
				t.Fatal(err)
			}
			if len(resp.Kvs) != 0 {
				t.Fatalf("range %s at revision %d, where its delete was acknowledged: %d keys", a.key, a.rev, len(resp.Kvs))
			}
			continue
		}
		resp, err := bes[1].Range(ctx, &pb.RangeRequest{Key: []byte(a.key), Revision: a.rev})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != a.value || resp.Kvs[0].ModRevision != a.rev {
			t.Fatalf("%s at revision %d, where %q was acknowledged: %v", a.key, a.rev, a.value, resp.Kvs)
		}
	}
	cur, _, err := bes[0].Revisions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := start + int64(len(acks)); cur != want {
		t.Fatalf("revision %d after %d acknowledged writes from %d, want %d", cur, len(acks), start, want)
	}
	evs, err := bes[0].Changes(ctx, start, cur-start)
	if err != nil {
		t.Fatal(err)
	}
	next := start + 1
	for i, ev := range evs {
		rev := ev.Kv.ModRevision
		if i > 0 && rev == evs[i-1].Kv.ModRevision {
			continue
		}
		if rev != next {
			t.Fatalf("the log's revisions after %d: %d follows %d", start, rev, next-1)
		}
		if _, ok := byRev[rev]; !ok {
			t.Fatalf("revision %d in the log was acknowledged to no writer", rev)
		}
		next++
	}
	if next != cur+1 {
		t.Fatalf("the log ends at revision %d, the current revision is %d", next-1, cur)
	}
}

// onEach runs f(i, w) for writersPer writers w on each backend bes[i] at
// once and fails the test with the first error.
func onEach(t *testing.T, bes [2]backends.Backend, writersPer int, f func(i, w int) error) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, len(bes)*writersPer)
	for i := range bes {
		for w := range writersPer {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs <- f(i, w)
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}
