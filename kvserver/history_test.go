package kvserver

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/kvsql/kvsql/backends"
)

// logBackend serves Changes from a fixed history, counting the reads and
// the most that run at once; release, if set, holds every read until it
// is closed.
type logBackend struct {
	backends.Backend // other methods unused
	log              []*mvccpb.Event
	release          chan struct{}
	reads, inFlight  atomic.Int64
	maxInFlight      atomic.Int64
}

func (b *logBackend) Changes(ctx context.Context, after, maxRevs int64) ([]*mvccpb.Event, error) {
	b.reads.Add(1)
	n := b.inFlight.Add(1)
	defer b.inFlight.Add(-1)
	for {
		m := b.maxInFlight.Load()
		if n <= m || b.maxInFlight.CompareAndSwap(m, n) {
			break
		}
	}
	if b.release != nil {
		select {
		case <-b.release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	// As the engine, stop after the revision that reaches the byte budget.
	var out []*mvccpb.Event
	size := 0
	for _, e := range b.log {
		if e.Kv.ModRevision > after && e.Kv.ModRevision <= after+maxRevs {
			if size >= backends.DefaultChangesBytes && e.Kv.ModRevision != out[len(out)-1].Kv.ModRevision {
				break
			}
			out = append(out, e)
			size += backends.EventBytes(e)
		}
	}
	return out, nil
}

// readAll reads the history after revision after to its end, as a lagging
// watcher does, and returns the revisions it got.
func readAll(t *testing.T, h *history, after int64) []int64 {
	var revs []int64
	for {
		evs, upTo, err := h.read(context.Background(), after)
		if err != nil {
			t.Error(err)
			return nil
		}
		if len(evs) == 0 {
			return revs
		}
		for _, e := range evs {
			revs = append(revs, e.Kv.ModRevision)
		}
		after = upTo
	}
}

// TestHistorySharesReads: many watchers catching up from the same revision
// (a restarted kube-apiserver's watches) share each page of the log instead
// of reading it once each (issue 12, item 7), and at most historyReads
// reads run at once.
func TestHistorySharesReads(t *testing.T) {
	t.Parallel()
	const revs, watchers = 2000, 50 // 4 pages of catchupRevs
	be := &logBackend{release: make(chan struct{})}
	for r := int64(2); r < 2+revs; r++ {
		be.log = append(be.log, ev(r, 10))
	}
	h := newHistory(be)
	defer h.close()
	var wg sync.WaitGroup
	got := make([][]int64, watchers)
	start := func(w int) int64 { return 1 + int64(w%10)*150 } // ten starting points
	for w := range watchers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[w] = readAll(t, h, start(w))
		}()
	}
	// Hold the first reads until as many run as may, and a moment longer,
	// so that a missing bound on concurrent reads shows.
	for be.inFlight.Load() < historyReads {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	close(be.release)
	wg.Wait()
	for w, revs := range got {
		start := start(w) + 1
		if len(revs) == 0 || revs[0] != start || revs[len(revs)-1] != 1+2000 {
			t.Fatalf("watcher %d read %d revisions from %v; want %d..%d", w, len(revs), revs[:min(3, len(revs))], start, 1+2000)
		}
		for i := 1; i < len(revs); i++ {
			if revs[i] != revs[i-1]+1 {
				t.Fatalf("watcher %d: revision %d after %d", w, revs[i], revs[i-1])
			}
		}
	}
	// Each starting point needs at most 4 page reads and one that finds
	// the end; unshared, 50 watchers would read about 200 times.
	if n := be.reads.Load(); n > 10*5 {
		t.Fatalf("%d watchers from 10 revisions made %d reads of the log; want them shared (at most %d)", watchers, n, 10*5)
	}
	if m := be.maxInFlight.Load(); m > historyReads {
		t.Fatalf("%d log reads ran at once, want at most %d", m, historyReads)
	}
}

// TestHistoryCacheIsBounded: the kept pages never exceed the byte cap.
func TestHistoryCacheIsBounded(t *testing.T) {
	t.Parallel()
	be := &logBackend{}
	for r := int64(2); r < 2+400; r++ {
		be.log = append(be.log, ev(r, 1<<20)) // 400 MiB of history
	}
	h := newHistory(be)
	defer h.close()
	revs := readAll(t, h, 1)
	if len(revs) != 400 {
		t.Fatalf("read %d revisions, want 400", len(revs))
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if limit := historyCacheBytes + backends.DefaultChangesBytes + 1<<20 + 200; h.bytes > limit {
		t.Fatalf("history keeps %d bytes, over its cap of %d and a page", h.bytes, historyCacheBytes)
	}
}
