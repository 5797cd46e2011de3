package backendtest

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/kvsql/kvsql/backends"
)

// OpenerWith opens a fresh, empty backend with the given engine settings.
type OpenerWith func(tb testing.TB, cfg backends.EngineConfig) backends.Backend

// RunTuned runs the cases that need engine settings other than the
// defaults: compaction with cleanup steps of a few rows, so that every step
// boundary case occurs (after each of several compactions, every read at or
// above the compact revision and every watch replay from it is what it was
// before), and reads of the log under a small byte budget.
func RunTuned(t *testing.T, open OpenerWith) {
	t.Run("CompactionInSmallStepsKeepsHistory", func(t *testing.T) {
		t.Parallel()
		be := open(t, backends.EngineConfig{CompactStepRows: 3})
		compactInSteps(t, be)
	})
	// The same with kvsql's default wait between the steps.
	t.Run("CompactionInStepsWithSleepKeepsHistory", func(t *testing.T) {
		t.Parallel()
		be := open(t, backends.EngineConfig{CompactStepRows: 3, CompactSleep: backends.DefaultCompactSleep})
		compactInSteps(t, be)
	})
	t.Run("ChangesStopAtTheByteBudget", func(t *testing.T) {
		t.Parallel()
		be := open(t, backends.EngineConfig{ChangesBytes: 1 << 20})
		changesStopAtTheByteBudget(t, be)
	})
}

// changesStopAtTheByteBudget: a read of the log holds about the byte budget
// and never splits a revision (issue 12, item 7: 1000 revisions of 1 MiB
// values with prev_kv were up to 2 GiB in one read).
func changesStopAtTheByteBudget(t *testing.T, be backends.Backend) {
	ctx := context.Background()
	big := string(make([]byte, 300<<10))
	for i := range 12 {
		mustTxn(t, be, put(fmt.Sprintf("big/%d", i%4), big)) // revisions 2..13, prev_kv from the 5th on
	}
	// one revision of three such puts
	mustTxn(t, be, &pb.TxnRequest{Success: []*pb.RequestOp{
		put("big/a", big).Success[0], put("big/b", big).Success[0], put("big/c", big).Success[0],
	}}) // revision 14
	var got []*mvccpb.Event
	reads := 0
	for after := int64(1); after < 14; reads++ {
		evs, err := be.Changes(ctx, after, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) == 0 {
			t.Fatalf("no events after %d, want up to 14", after)
		}
		size := 0
		for _, ev := range evs {
			size += backends.EventBytes(ev)
		}
		last := evs[len(evs)-1].Kv.ModRevision
		// At most the budget plus one revision (the last one read).
		var lastRev int
		for _, ev := range evs {
			if ev.Kv.ModRevision == last {
				lastRev += backends.EventBytes(ev)
			}
		}
		if size-lastRev >= 1<<20 {
			t.Fatalf("read after %d holds %d bytes before its last revision, over the 1 MiB budget", after, size-lastRev)
		}
		got = append(got, evs...)
		after = last
	}
	if len(got) != 15 || got[len(got)-1].Kv.ModRevision != 14 {
		t.Fatalf("read %d events in %d reads, want 15 ending at revision 14", len(got), reads)
	}
	if reads < 3 {
		t.Fatalf("about 6 MiB of events came in %d reads: the budget was not applied", reads)
	}
}

// compactInSteps writes a random history (puts, overwrites, deletes,
// multi-key txns, a key changed twice in one revision), records every
// revision's state and the events, then compacts three times and checks
// what is left against the record.
func compactInSteps(t *testing.T, be backends.Backend) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(1, 2))
	key := func() string { return fmt.Sprintf("c/%02d", rng.IntN(12)) }
	for i := range 300 {
		var r *pb.TxnRequest
		switch rng.IntN(6) {
		case 0:
			r = del(key(), "")
		case 1:
			a := fmt.Sprintf("c/%02d", rng.IntN(6))
			r = del(a, a+"\xff")
		case 2:
			// three distinct keys in one txn: sub-revisions 0..2
			p := rng.Perm(12)
			k := func(j int) string { return fmt.Sprintf("c/%02d", p[j]) }
			r = &pb.TxnRequest{Success: []*pb.RequestOp{
				put(k(0), fmt.Sprint(i)).Success[0], put(k(1), fmt.Sprint(i)).Success[0], del(k(2), "").Success[0],
			}}
		case 3:
			// delete a from-key range, then put a key inside it: one key
			// changes twice in one revision
			r = &pb.TxnRequest{Success: []*pb.RequestOp{del("c/08", "\x00").Success[0], put("c/10", fmt.Sprint(i)).Success[0]}}
		default:
			r = put(key(), fmt.Sprint(i))
		}
		mustTxn(t, be, r)
	}
	cur, _, err := be.Revisions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	all := func(rev int64) *pb.RangeRequest {
		return &pb.RangeRequest{Key: []byte("c/"), RangeEnd: []byte("c0"), Revision: rev}
	}
	states := map[int64][]*mvccpb.KeyValue{}
	for rev := int64(1); rev <= cur; rev++ {
		resp, err := be.Range(ctx, all(rev))
		if err != nil {
			t.Fatal(err)
		}
		states[rev] = resp.Kvs
	}
	events, err := be.Changes(ctx, 0, cur)
	if err != nil {
		t.Fatal(err)
	}
	for _, compact := range []int64{cur / 4, cur / 2, cur - 3} {
		if _, err := be.Compact(ctx, compact); err != nil {
			t.Fatalf("compact %d: %v", compact, err)
		}
		if _, err := be.Range(ctx, all(compact-1)); !errors.Is(err, backends.ErrCompacted) {
			t.Fatalf("read at %d after compacting at %d: %v, want ErrCompacted", compact-1, compact, err)
		}
		for rev := compact; rev <= cur; rev++ {
			resp, err := be.Range(ctx, all(rev))
			if err != nil {
				t.Fatalf("read at %d after compacting at %d: %v", rev, compact, err)
			}
			if got, want := kvsString(resp.Kvs), kvsString(states[rev]); got != want {
				t.Fatalf("after compacting at %d, the state at %d is\n%s\nwant\n%s", compact, rev, got, want)
			}
		}
		// A watch may start at the compact revision: every event from
		// there on is still there. A prev_kv at or below the compact
		// revision may be gone (etcd leaves it out then), so compare
		// events without it where the previous version is compacted.
		got, err := be.Changes(ctx, compact-1, cur)
		if err != nil {
			t.Fatalf("changes from %d after compacting at %d: %v", compact, compact, err)
		}
		var want []*mvccpb.Event
		for _, ev := range events {
			if ev.Kv.ModRevision >= compact {
				want = append(want, ev)
			}
		}
		if len(got) != len(want) {
			t.Fatalf("after compacting at %d: %d events from %d, want %d", compact, len(got), compact, len(want))
		}
		for i := range want {
			g, w := got[i], want[i]
			if w.PrevKv != nil && w.PrevKv.ModRevision < compact {
				g, w = &mvccpb.Event{Type: g.Type, Kv: g.Kv}, &mvccpb.Event{Type: w.Type, Kv: w.Kv}
			}
			if eventString(g) != eventString(w) {
				t.Fatalf("after compacting at %d, event %d is %s, want %s", compact, i, eventString(g), eventString(w))
			}
		}
	}
}

func kvsString(kvs []*mvccpb.KeyValue) string {
	s := ""
	for _, kv := range kvs {
		s += fmt.Sprintf("%s=%s c%d m%d v%d\n", kv.Key, kv.Value, kv.CreateRevision, kv.ModRevision, kv.Version)
	}
	return s
}

func eventString(ev *mvccpb.Event) string {
	s := fmt.Sprintf("%s %s", ev.Type, kvsString([]*mvccpb.KeyValue{ev.Kv}))
	if ev.PrevKv != nil {
		s += "prev " + kvsString([]*mvccpb.KeyValue{ev.PrevKv})
	}
	return s
}
