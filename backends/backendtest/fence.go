package backendtest

import (
	"context"
	"errors"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/kvsql/kvsql/backends"
)

// lostRevisions is how far past the database's revision the fence tests
// make the backend believe a client was served: what a failover to a
// replica that was behind loses.
const lostRevisions = 10

// runFence runs the cases of a database whose revision went below one the
// backend had served (backends.Engine's fence): whichever way the backend
// notices first, it fences the database past every revision it served,
// compacted, and never answers from the older revision.
func runFence(t *testing.T, open Opener) {
	ctx := context.Background()
	// Each notices the regression through one path.
	for _, c := range []struct {
		name   string
		notice func(t *testing.T, be backends.Backend)
	}{
		{"Range", func(t *testing.T, be backends.Backend) {
			resp, err := be.Range(ctx, &pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("z")})
			if err != nil {
				t.Fatal(err)
			}
			if len(resp.Kvs) != 2 {
				t.Fatalf("range after the fence: %d keys, want 2", len(resp.Kvs))
			}
			checkFenced(t, "Range's header", resp.Header.Revision)
		}},
		{"Get", func(t *testing.T, be backends.Backend) {
			resp, err := be.Range(ctx, &pb.RangeRequest{Key: []byte("a")})
			if err != nil {
				t.Fatal(err)
			}
			if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "2" {
				t.Fatalf("get after the fence = %v", resp.Kvs)
			}
			checkFenced(t, "Get's header", resp.Header.Revision)
		}},
		{"Revisions", func(t *testing.T, be backends.Backend) {
			cur, compact, err := be.Revisions(ctx)
			if err != nil {
				t.Fatal(err)
			}
			checkFenced(t, "Revisions", cur)
			if compact != cur {
				t.Fatalf("compact revision %d after the fence, want the fenced revision %d", compact, cur)
			}
		}},
		{"Write", func(t *testing.T, be backends.Backend) {
			resp := mustTxn(t, be, put("c", "1"))
			checkFenced(t, "a put's revision", resp.Header.Revision-1)
		}},
		{"Changes", func(t *testing.T, be backends.Backend) {
			if _, err := be.Changes(ctx, 4, 10); !errors.Is(err, backends.ErrCompacted) {
				t.Fatalf("Changes after 4 when the database went back: %v, want ErrCompacted", err)
			}
		}},
		{"TailChanges", func(t *testing.T, be backends.Backend) {
			if _, err := be.TailChanges(ctx, 4, 10); !errors.Is(err, backends.ErrNewTimeline) {
				t.Fatalf("TailChanges after 4 when the database went back: %v, want ErrNewTimeline", err)
			}
		}},
	} {
		t.Run("NoticedBy"+c.name, func(t *testing.T) {
			t.Parallel()
			be := open(t)
			obs, ok := be.(backends.RevisionObserver)
			if !ok {
				t.Fatalf("%T is no backends.RevisionObserver", be)
			}
			mustTxn(t, be, put("a", "1")) // 2
			mustTxn(t, be, put("b", "1")) // 3
			mustTxn(t, be, put("a", "2")) // 4
			// The tailer follows the database, as an instance's does.
			if evs, err := be.TailChanges(ctx, 1, 100); err != nil || len(evs) != 3 {
				t.Fatalf("TailChanges before the fence = %d events, %v", len(evs), err)
			}
			// A client was served a revision the database no longer has
			// (here: the backend is told so, as kvserver tells it of
			// forwarded writes).
			served := int64(4 + lostRevisions)
			obs.ObserveRevision(served)
			c.notice(t, be)

			cur, compact, err := be.Revisions(ctx)
			if err != nil {
				t.Fatal(err)
			}
			checkFenced(t, "the current revision", min(cur, compact))
			for _, rev := range []int64{2, 4, served, served + 1} {
				if _, err := be.Range(ctx, &pb.RangeRequest{Key: []byte("a"), Revision: rev}); !errors.Is(err, backends.ErrCompacted) {
					t.Errorf("read at revision %d after the fence: %v, want ErrCompacted", rev, err)
				}
			}
			// The tailer is told once, then follows the new timeline.
			if c.name != "TailChanges" {
				if _, err := be.TailChanges(ctx, 4, 100); !errors.Is(err, backends.ErrNewTimeline) {
					t.Fatalf("TailChanges after the fence: %v, want ErrNewTimeline", err)
				}
			}
			if _, err := be.TailChanges(ctx, 4, 100); !errors.Is(err, backends.ErrCompacted) {
				t.Fatalf("TailChanges from the old cursor once told: %v, want ErrCompacted", err)
			}
			p := mustTxn(t, be, put("a", "3"))
			if p.Header.Revision <= compact {
				t.Fatalf("put after the fence at revision %d, want above %d", p.Header.Revision, compact)
			}
			evs, err := be.TailChanges(ctx, compact-1, 100)
			if err != nil || len(evs) == 0 || evs[0].Kv.ModRevision <= compact {
				t.Fatalf("TailChanges on the new timeline = %v, %v; want events above %d", evs, err, compact)
			}
			if last := evs[len(evs)-1]; last.Kv.ModRevision != p.Header.Revision || string(last.PrevKv.GetValue()) != "2" {
				t.Fatalf("last event on the new timeline = %v; want the put at %d with prev_kv a=2", last, p.Header.Revision)
			}
			// The database's state is kept: what it had is still there.
			b, err := be.Range(ctx, &pb.RangeRequest{Key: []byte("b")})
			if err != nil || len(b.Kvs) != 1 || b.Kvs[0].ModRevision != 3 {
				t.Fatalf("b after the fence = %v, %v; want its version of revision 3", b, err)
			}
			// One fence: a revision served below the database's is nothing.
			obs.ObserveRevision(served)
			if again, _, err := be.Revisions(ctx); err != nil || again != p.Header.Revision {
				t.Fatalf("revision %d after a second look, %v; want %d (no second fence)", again, err, p.Header.Revision)
			}
			// The revisions the fence skipped cost nothing to step over.
			if _, _, err := be.Hash(ctx, 0); err != nil {
				t.Fatalf("Hash after the fence: %v", err)
			}
		})
	}
}

// checkFenced fails unless rev (what is named what) is at least the fenced
// revision: past every revision the tests served by FenceJump.
func checkFenced(t *testing.T, what string, rev int64) {
	t.Helper()
	if want := int64(4+lostRevisions) + backends.FenceJump; rev < want {
		t.Fatalf("%s is %d after the database went back below a served revision; want the fence at %d or above", what, rev, want)
	}
}
