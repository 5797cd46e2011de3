package kvserver

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/kvsql/kvsql/backends"
)

func ev(rev int64, valueBytes int) *mvccpb.Event {
	return &mvccpb.Event{Type: mvccpb.PUT, Kv: &mvccpb.KeyValue{Key: []byte("k"), ModRevision: rev, Value: make([]byte, valueBytes)}}
}

// TestHubWindowIsBoundedByBytes: large values trim the window by size, at
// revision boundaries, and reads older than the window say so.
func TestHubWindowIsBoundedByBytes(t *testing.T) {
	t.Parallel()
	h := &hub{changed: make(chan struct{})}
	const value = 1 << 20 // 1 MiB events: the byte cap binds long before the count cap
	for rev := int64(2); rev < 2+200; rev++ {
		h.publish([]*mvccpb.Event{ev(rev, value), ev(rev, value)}) // two events per revision
	}
	if h.bytes > hubWindowBytes+hubWindowBytes/4 {
		t.Fatalf("window holds %d bytes, over the cap", h.bytes)
	}
	if h.events[0].Kv.ModRevision != h.start+1 {
		t.Fatalf("window starts mid-revision: start %d, first event at %d", h.start, h.events[0].Kv.ModRevision)
	}
	if _, _, ok := h.read(h.start-1, 10); ok {
		t.Fatal("read before the window start did not report it")
	}
	evs, upTo, ok := h.read(h.start, 3)
	if !ok || len(evs) != 4 || upTo != h.start+2 {
		t.Fatalf("read(start, 3) = %d events up to %d, %v; want 4 (whole revisions) up to %d", len(evs), upTo, ok, h.start+2)
	}
}

// TestRetryDelay: the wait for rows a source reported but the log does not
// show yet stays short for the first reads (a MySQL commit becomes visible
// within milliseconds of its binlog events: a doubling wait overshot that
// by up to 2x) and grows only while reads make no progress. Under a steady
// stream of commits the cursor trails the binlog by a step after every read;
// a wait that kept growing then reached its cap and delayed every event.
func TestRetryDelay(t *testing.T) {
	t.Parallel()
	var w time.Duration
	n := 0
	for i := range retryFast {
		if w, n = retryDelay(n, true, false); w != retryEvery {
			t.Fatalf("wait before read %d without progress = %v, want %v", i+2, w, retryEvery)
		}
	}
	for range 20 {
		w, n = retryDelay(n, true, false)
	}
	if w != retryMax {
		t.Fatalf("wait after %d reads without progress = %v, want the cap %v", n, w, retryMax)
	}
	if w, _ = retryDelay(n, true, true); w != retryEvery {
		t.Fatalf("wait after a read that moved the cursor = %v, want %v", w, retryEvery)
	}
	if _, n = retryDelay(n, false, false); n != 0 {
		t.Fatalf("count after catching up = %d, want it to start again", n)
	}
}

// scriptSource reports the revisions of its script in turn, calling
// before(rev) first, then blocks.
type scriptSource struct {
	revs   []int64
	before func(int64)
}

func (s *scriptSource) Next(ctx context.Context, after int64) (int64, error) {
	if len(s.revs) == 0 {
		<-ctx.Done()
		return 0, ctx.Err()
	}
	r := s.revs[0]
	s.revs = s.revs[1:]
	s.before(r)
	return r, nil
}

// countingBackend serves TailChanges from a history that grows with
// commit, and counts calls.
type countingBackend struct {
	backends.Backend // other methods unused
	mu               sync.Mutex
	history          []*mvccpb.Event
	reads            atomic.Int64
}

func (b *countingBackend) commit(e *mvccpb.Event) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.history = append(b.history, e)
}

func (b *countingBackend) TailChanges(ctx context.Context, after, maxRevs int64) ([]*mvccpb.Event, error) {
	b.reads.Add(1)
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []*mvccpb.Event
	for _, e := range b.history {
		if e.Kv.ModRevision > after && e.Kv.ModRevision <= after+maxRevs {
			out = append(out, e)
		}
	}
	return out, nil
}

// TestHubSkipsStaleNotifications: a notification for a revision the
// tailer has already read (a read that ran while the source waited went
// past it) costs no read.
func TestHubSkipsStaleNotifications(t *testing.T) {
	t.Parallel()
	be := &countingBackend{}
	reported := make(chan struct{})
	src := &scriptSource{revs: []int64{5, 8, 9, 10, 11}, before: func(rev int64) {
		if rev == 11 {
			be.commit(ev(11, 1)) // 11 commits, then its notification comes
			close(reported)
		}
	}}
	h := newHub(be, src, time.Hour, slog.New(slog.DiscardHandler))
	h.rev, h.start = 10, 10
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.run(ctx) }()
	<-reported
	for {
		if rev, ch := h.snapshot(); rev < 11 {
			<-ch
			continue
		}
		break
	}
	cancel()
	<-done
	// One read at start, one for 11; each of the four stale notifications
	// would add one.
	if n := be.reads.Load(); n != 2 {
		t.Fatalf("tailer read %d times for 4 stale notifications and 1 new revision; want 2", n)
	}
}
