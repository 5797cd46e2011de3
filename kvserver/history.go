package kvserver

import (
	"context"
	"sort"
	"sync"

	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/kvsql/kvsql/backends"
)

const (
	// historyReads caps the log reads lagging watchers run at once; the
	// others wait for a turn (or share a read already running).
	historyReads = 4
	// historyCacheBytes caps the pages of history kept for lagging
	// watchers that follow each other (after a restart of kube-apiserver,
	// all its watches resume from about the same revision).
	historyCacheBytes = 32 << 20
)

// history serves watchers older than the hub's window. Reads of the log are
// shared: a watcher reading from revision R joins a read from R already
// running, and pages read recently are kept, so that many watchers
// catching up from the same place cost one read per page, not one each;
// at most historyReads run at once, so lagging watchers cannot take every
// database connection, and memory is bounded by the cache and the reads in
// flight (each at most the backend's byte budget and a revision).
type history struct {
	be  backends.Backend
	sem chan struct{} // a slot per read in flight
	// ctx ends the reads when the server stops (close); wg waits for them.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu sync.Mutex // guards the fields below
	// pages are whole-revision runs of the log, oldest first.
	pages   []*historyPage
	bytes   int
	reading map[int64]*historyRead // reads in flight, by their after revision
	closed  bool                   // set by close: no new reads start
	// epoch counts resets: a read that started before one does not keep
	// its page.
	epoch int64
}

// historyPage is the events of revisions (after, upTo], in order.
type historyPage struct {
	after, upTo int64
	evs         []*mvccpb.Event
	bytes       int
}

// historyRead is a read of the log other watchers may wait for.
type historyRead struct {
	done  chan struct{}
	page  *historyPage // nil if the read failed or found nothing
	err   error
	epoch int64 // the history's epoch when the read started
}

func newHistory(be backends.Backend) *history {
	ctx, cancel := context.WithCancel(context.Background())
	return &history{be: be, sem: make(chan struct{}, historyReads), reading: map[int64]*historyRead{}, ctx: ctx, cancel: cancel}
}

// close ends the reads in flight and waits for them.
func (h *history) close() {
	h.mu.Lock()
	h.closed = true
	h.mu.Unlock()
	h.cancel()
	h.wg.Wait()
}

// read returns committed events after revision after, whole revisions, and
// the revision they reach (after itself if none is committed yet).
// backends.ErrCompacted if the history after it is compacted.
func (h *history) read(ctx context.Context, after int64) ([]*mvccpb.Event, int64, error) {
	h.mu.Lock()
	if evs, upTo, ok := h.cached(after); ok {
		h.mu.Unlock()
		return evs, upTo, nil
	}
	if h.closed {
		h.mu.Unlock()
		return nil, 0, errShuttingDown
	}
	r, running := h.reading[after]
	if !running {
		r = &historyRead{done: make(chan struct{}), epoch: h.epoch}
		h.reading[after] = r
	}
	if !running {
		// The read has waiters of its own (other watchers may join it),
		// so it runs in a goroutine of the history's, not the caller's.
		h.wg.Add(1)
		go h.fetch(after, r)
	}
	h.mu.Unlock()
	select {
	case <-r.done:
	case <-ctx.Done():
		return nil, 0, ctx.Err()
	}
	if r.err != nil {
		return nil, 0, r.err
	}
	if r.page == nil {
		return nil, after, nil
	}
	return r.page.evs, r.page.upTo, nil
}

// reset drops the cached pages and lets no read in flight keep its page:
// the database's history was fenced onto a new timeline, and what was
// read before may be gone from it. Watchers waiting for a read in flight
// still get its result; they are cancelled all the same (watch.go).
func (h *history) reset() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.pages, h.bytes = nil, 0
	h.reading = map[int64]*historyRead{}
	h.epoch++
}

// cached returns the events after revision after from a page that holds
// that revision's successor; the caller holds mu.
func (h *history) cached(after int64) ([]*mvccpb.Event, int64, bool) {
	for _, p := range h.pages {
		if p.after <= after && after < p.upTo {
			i := sort.Search(len(p.evs), func(i int) bool { return p.evs[i].Kv.ModRevision > after })
			return p.evs[i:], p.upTo, true
		}
	}
	return nil, 0, false
}

// fetch runs read r for the events after revision after, publishes it and
// keeps its page.
func (h *history) fetch(after int64, r *historyRead) {
	defer h.wg.Done()
	defer func() {
		h.mu.Lock()
		if h.reading[after] == r {
			delete(h.reading, after)
		}
		if r.page != nil && r.epoch == h.epoch {
			h.keep(r.page)
		}
		h.mu.Unlock()
		close(r.done)
	}()
	select {
	case h.sem <- struct{}{}:
	case <-h.ctx.Done():
		r.err = h.ctx.Err()
		return
	}
	defer func() { <-h.sem }()
	evs, err := h.be.Changes(h.ctx, after, catchupRevs)
	if err != nil || len(evs) == 0 {
		r.err = err
		return
	}
	p := &historyPage{after: after, upTo: evs[len(evs)-1].Kv.ModRevision, evs: evs}
	for _, ev := range evs {
		p.bytes += backends.EventBytes(ev)
	}
	r.page = p
}

// keep adds p to the cache, dropping the oldest pages over the limit; the
// caller holds mu.
func (h *history) keep(p *historyPage) {
	h.pages = append(h.pages, p)
	h.bytes += p.bytes
	for len(h.pages) > 1 && h.bytes > historyCacheBytes {
		h.bytes -= h.pages[0].bytes
		h.pages[0] = nil
		h.pages = h.pages[1:]
	}
}
