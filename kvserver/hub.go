package kvserver

import (
	"context"
	"errors"
	"log/slog"
	"sort"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/kvsql/kvsql/backends"
	"github.com/kvsql/kvsql/notify"
)

const (
	// hubWindowEvents is how many recent events the hub keeps in memory.
	// Watchers whose next revision is older read from the backend instead.
	hubWindowEvents = 20000
	// hubWindowBytes caps the window's size (keys and values, with prev_kv):
	// Kubernetes objects can be large, so the event count alone is no bound.
	hubWindowBytes = 64 << 20
	// hubReadRevs is how many revisions the tailer reads per query.
	hubReadRevs = 1000
	// catchupRevs is how many revisions a read for lagging watchers covers
	// at most (see history).
	catchupRevs = 500
)

// hub follows the database's history for this instance. One tailer
// goroutine owns the cursor: woken by the notify source (or a kick, or the
// safety poll), it reads every event after the cursor from the backend, in
// order, appends it to a bounded in-memory window and wakes the watchers.
// Watchers pull from the window at their own pace (a slow one never blocks
// the tailer or the others) and fall back to the backend when they are
// older than the window.
type hub struct {
	be     backends.Backend
	src    notify.Source
	poll   time.Duration
	log    *slog.Logger
	kickCh chan struct{} // buffered(1): read now
	// metrics, if set, receives the cursor, the lag and the key count.
	metrics *Metrics
	// recount is buffered(1): count the keys again (at start, and when
	// the history after the cursor was compacted away).
	recount chan struct{}
	// onNewTimeline, if set, is called (from the tailer) when the
	// database's history was fenced onto a new timeline, after the window
	// was dropped: the server drops its history cache.
	onNewTimeline func()
	// newTimelinePending is set while a new timeline the backend reported
	// (once) has not been acted on yet, because reading the revisions
	// failed. Only the tailer uses it.
	newTimelinePending bool

	mu sync.Mutex // guards the fields below
	// rev is the newest revision in the window: every event <= rev has
	// been read. start is the revision before the oldest one in the window.
	rev, start int64
	events     []*mvccpb.Event
	sizes      []int // sizes[i] is the approximate size of events[i]
	bytes      int   // sum of sizes
	// want is the newest revision the notify source reported; the tailer
	// keeps reading until rev reaches it.
	want    int64
	changed chan struct{} // closed and replaced when rev advances
	// keys is the number of live keys as of revision keysAt, kept by
	// applying every published event after it; valid only if keysKnown.
	keys, keysAt int64
	keysKnown    bool
	// timeline counts the new timelines the tailer was told of (see
	// backends.ErrNewTimeline); a watch created on an earlier one is
	// cancelled as compacted at timelineCompact, the compact revision the
	// database had then.
	timeline, timelineCompact int64
}

func newHub(be backends.Backend, src notify.Source, poll time.Duration, log *slog.Logger) *hub {
	h := &hub{be: be, src: src, poll: poll, log: log, kickCh: make(chan struct{}, 1), recount: make(chan struct{}, 1), changed: make(chan struct{})}
	h.recount <- struct{}{}
	return h
}

// init sets the cursor to the backend's current revision; call before run.
func (h *hub) init(ctx context.Context) error {
	cur, _, err := h.be.Revisions(ctx)
	if err != nil {
		return err
	}
	// Watch streams may already be open (gRPC can serve before Run has
	// called init): set the cursor under the lock and wake them.
	h.mu.Lock()
	defer h.mu.Unlock()
	h.rev, h.start = cur, cur
	close(h.changed)
	h.changed = make(chan struct{})
	return nil
}

// snapshot returns the cursor and the channel closed when it next moves.
func (h *hub) snapshot() (int64, <-chan struct{}) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.rev, h.changed
}

func (h *hub) kick() {
	select {
	case h.kickCh <- struct{}{}:
	default:
	}
}

// waitRev blocks until the cursor reaches rev.
func (h *hub) waitRev(ctx context.Context, rev int64) error {
	for {
		cur, ch := h.snapshot()
		if cur >= rev {
			return nil
		}
		h.kick()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// read returns up to most events (whole revisions) after revision after that
// are in the window, and the revision they reach. ok is false when after is
// older than the window.
func (h *hub) read(after int64, most int) (evs []*mvccpb.Event, upTo int64, ok bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if after < h.start {
		return nil, 0, false
	}
	if after >= h.rev {
		return nil, after, true
	}
	i := sort.Search(len(h.events), func(i int) bool { return h.events[i].Kv.ModRevision > after })
	j := min(i+most, len(h.events))
	// never split a revision
	for j < len(h.events) && j > i && h.events[j].Kv.ModRevision == h.events[j-1].Kv.ModRevision {
		j++
	}
	if j == len(h.events) {
		return h.events[i:j], h.rev, true
	}
	return h.events[i:j], h.events[j-1].Kv.ModRevision, true
}

// run is the tailer. It returns when ctx ends.
func (h *hub) run(ctx context.Context) error {
	wake := make(chan struct{}, 1)
	done := make(chan struct{})
	counted := make(chan struct{})
	defer func() { <-done; <-counted }()
	go func() {
		defer close(counted)
		if h.metrics != nil { // the count is only exported
			h.countKeys(ctx)
		}
	}()
	go func() {
		defer close(done)
		retry := newBackoff(50*time.Millisecond, 2*time.Second)
		var lostAt time.Time // when the source failed; zero while it works
		for ctx.Err() == nil {
			h.mu.Lock()
			after := h.rev
			h.mu.Unlock()
			rev, err := h.src.Next(ctx, after)
			if err != nil {
				if ctx.Err() != nil {
					return
				}
				// The source reconnects on its next call and then makes us
				// re-read the log; the safety poll covers the gap. One line
				// when it fails, one when it is back: retries are Debug.
				if lostAt.IsZero() {
					lostAt = time.Now()
					h.log.Warn("database change stream lost; reconnecting", "err", err)
				}
				wait := retry.NextBackOff()
				h.log.Debug("database change stream down; retrying", "err", err, "retry_in", wait)
				if !sleepCtx(ctx, wait) {
					return
				}
				continue
			}
			retry.Reset()
			if !lostAt.IsZero() {
				h.log.Info("database change stream reconnected", "down_for", time.Since(lostAt).Round(time.Millisecond))
				lostAt = time.Time{}
				if h.metrics != nil {
					h.metrics.notifyReconnects.Inc()
				}
			}
			h.mu.Lock()
			h.want = max(h.want, rev)
			h.reportLocked()
			// A read that ran while we waited may already cover rev (it
			// went up to the log's end): then there is nothing to read.
			stale := rev != 0 && rev <= h.rev
			h.mu.Unlock()
			if !stale {
				select {
				case wake <- struct{}{}:
				default:
				}
			}
			// Let the tailer catch up before asking again, so that a
			// source that returns at once does not spin.
			select {
			case <-time.After(time.Millisecond):
			case <-ctx.Done():
				return
			}
		}
	}()
	t := time.NewTicker(h.poll)
	defer t.Stop()
	readRetry := newBackoff(10*time.Millisecond, 2*time.Second)
	stuck := 0                // reads in a row that found nothing while behind
	var readFailing time.Time // when reads started failing; zero while they work
	for {
		h.mu.Lock()
		before := h.rev
		h.mu.Unlock()
		if err := h.catchUp(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			// One line per outage; the retries are Debug.
			if readFailing.IsZero() {
				readFailing = time.Now()
				h.log.Warn("reading changes failed; retrying", "err", err)
			}
			wait := readRetry.NextBackOff()
			h.log.Debug("reading changes failed; retrying after a wait", "err", err, "retry_in", wait)
			if !sleepCtx(ctx, wait) {
				return nil
			}
			continue
		}
		readRetry.Reset()
		if !readFailing.IsZero() {
			h.log.Info("reading changes works again", "failed_for", time.Since(readFailing).Round(time.Millisecond))
			readFailing = time.Time{}
		}
		// A source may report a commit before this instance can read it:
		// MySQL sends a transaction's binlog events before InnoDB makes its
		// rows visible. Until the log shows what was reported, read again
		// soon instead of waiting for the next notification (see
		// retryDelay).
		h.mu.Lock()
		behind, moved := h.rev < h.want, h.rev > before
		h.mu.Unlock()
		var retry <-chan time.Time
		var wait time.Duration
		wait, stuck = retryDelay(stuck, behind, moved)
		if behind {
			retry = time.After(wait)
		}
		select {
		case <-wake:
		case <-h.kickCh:
		case <-t.C:
		case <-retry:
		case <-ctx.Done():
			return nil
		}
	}
}

const (
	// retryEvery is how soon the tailer reads again while the log does
	// not yet show a reported revision; retryFast such reads in a row run
	// at that pace (a MySQL commit becomes visible within milliseconds of
	// its binlog events), then the wait doubles up to retryMax.
	retryEvery = time.Millisecond
	retryFast  = 20
	retryMax   = 200 * time.Millisecond
)

// retryDelay returns how long the tailer waits before reading again while
// the cursor is behind what the source reported, given stuck, the number of
// reads before this one that found nothing new, and the count to pass next
// time. A read that moved the cursor, or caught up, starts the count again:
// under a steady stream of commits the cursor trails the binlog by a step
// after every read, which is no reason to read less often.
func retryDelay(stuck int, behind, moved bool) (wait time.Duration, next int) {
	if !behind {
		return retryEvery, 0
	}
	if moved {
		stuck = 0
	}
	wait = retryEvery
	if stuck >= retryFast {
		wait = min(retryEvery<<min(stuck-retryFast+1, 16), retryMax)
	}
	return wait, stuck + 1
}

// catchUp reads and publishes every committed event after the cursor.
func (h *hub) catchUp(ctx context.Context) error {
	for {
		h.mu.Lock()
		after := h.rev
		h.mu.Unlock()
		evs, err := h.be.TailChanges(ctx, after, hubReadRevs)
		if errors.Is(err, backends.ErrNewTimeline) || (h.newTimelinePending && errors.Is(err, backends.ErrCompacted)) {
			// The backend says so once; until the reset is done, the
			// compaction it reports from then on is that timeline's.
			h.newTimelinePending = true
			if err := h.newTimeline(ctx, after); err != nil {
				return err
			}
			h.newTimelinePending = false
			continue
		}
		if errors.Is(err, backends.ErrCompacted) {
			// The history after the cursor is gone (this instance fell behind
			// a compaction). Restart the window at the compact revision:
			// watchers needing the lost events get ErrCompacted from the
			// backend, as they would on etcd.
			_, compact, rerr := h.be.Revisions(ctx)
			if rerr != nil {
				return rerr
			}
			h.mu.Lock()
			h.events, h.sizes, h.bytes = nil, nil, 0
			h.rev, h.start = compact-1, compact-1
			h.keysKnown = false // events were skipped: count again
			h.mu.Unlock()
			select {
			case h.recount <- struct{}{}:
			default:
			}
			h.log.Warn("history after the watch cursor was compacted", "cursor", after, "compact", compact)
			continue
		}
		if err != nil {
			return err
		}
		if len(evs) == 0 {
			return nil
		}
		h.publish(evs)
		// A read that stopped short of its limit saw the log's end at its
		// snapshot; if that covers what the source reported, another read
		// would come back empty. A commit after the snapshot brings its own
		// notification (or the safety poll), so skip that round trip.
		last := evs[len(evs)-1].Kv.ModRevision
		h.mu.Lock()
		want := h.want
		h.mu.Unlock()
		if last-after < hubReadRevs && last >= want {
			return nil
		}
	}
}

// newTimeline starts over after the database was fenced onto a new
// timeline (its history went backwards: backends.ErrNewTimeline). The
// window held events the database may no longer have, so it is dropped and
// the cursor restarts at the new compact revision; every watch is
// cancelled as compacted (see timelineOf), so that clients list again.
func (h *hub) newTimeline(ctx context.Context, cursor int64) error {
	cur, compact, err := h.be.Revisions(ctx)
	if err != nil {
		return err
	}
	h.mu.Lock()
	h.events, h.sizes, h.bytes = nil, nil, 0
	h.rev, h.start = compact-1, compact-1
	h.keysKnown = false
	h.timeline++
	h.timelineCompact = compact
	h.reportLocked()
	close(h.changed)
	h.changed = make(chan struct{})
	h.mu.Unlock()
	select {
	case h.recount <- struct{}{}:
	default:
	}
	if h.onNewTimeline != nil {
		h.onNewTimeline()
	}
	h.log.Error("the database's history went backwards and was fenced onto a new timeline (a failover to a replica that was behind?): "+
		"every watch on this instance is cancelled as compacted, so that clients list again",
		"watch_cursor", cursor, "compact_rev", compact, "current_rev", cur)
	return nil
}

// timelineOf returns the hub's timeline count, and the compact revision to
// cancel a watch of an earlier timeline with.
func (h *hub) timelineOf() (timeline, compact int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.timeline, h.timelineCompact
}

func (h *hub) publish(evs []*mvccpb.Event) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, ev := range evs {
		sz := backends.EventBytes(ev)
		h.events = append(h.events, ev)
		h.sizes = append(h.sizes, sz)
		h.bytes += sz
	}
	if h.keysKnown {
		for _, ev := range evs {
			if ev.Kv.ModRevision > h.keysAt {
				h.keys += keyDelta(ev)
			}
		}
	}
	h.rev = evs[len(evs)-1].Kv.ModRevision
	h.keysAt = max(h.keysAt, h.rev)
	h.reportLocked()
	// Trim once over a limit by a quarter, so the copy is amortised; drop
	// whole revisions from the front. Watchers older than the window read
	// from the backend instead.
	if len(h.events) > hubWindowEvents+hubWindowEvents/4 || h.bytes > hubWindowBytes+hubWindowBytes/4 {
		cut, dropped := 0, 0
		for cut < len(h.events) && (len(h.events)-cut > hubWindowEvents || h.bytes-dropped > hubWindowBytes) {
			dropped += h.sizes[cut]
			cut++
		}
		for cut < len(h.events) && cut > 0 && h.events[cut].Kv.ModRevision == h.events[cut-1].Kv.ModRevision {
			dropped += h.sizes[cut]
			cut++
		}
		if cut > 0 {
			h.start = h.events[cut-1].Kv.ModRevision
			h.events = append([]*mvccpb.Event(nil), h.events[cut:]...)
			h.sizes = append([]int(nil), h.sizes[cut:]...)
			h.bytes -= dropped
		}
	}
	close(h.changed)
	h.changed = make(chan struct{})
}

// keyDelta is how an event changes the number of live keys: a put of
// version 1 creates its key, a delete removes one.
func keyDelta(ev *mvccpb.Event) int64 {
	switch {
	case ev.Type == mvccpb.DELETE:
		return -1
	case ev.Kv.Version == 1:
		return 1
	}
	return 0
}

// countKeys counts the live keys whenever recount says so, until ctx
// ends. The count comes from one snapshot at some revision; events after
// it keep it current (publish), so this runs once per start or compaction
// gap, never per request.
func (h *hub) countKeys(ctx context.Context) {
	for {
		select {
		case <-h.recount:
		case <-ctx.Done():
			return
		}
		retry := newBackoff(100*time.Millisecond, 10*time.Second)
		for {
			resp, err := h.be.Range(ctx, &pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}, CountOnly: true})
			if err == nil && h.setKeys(resp.Count, resp.Header.Revision) {
				break
			}
			if ctx.Err() != nil {
				return
			}
			if err != nil {
				h.log.Debug("counting keys failed; retrying", "err", err)
			}
			if !sleepCtx(ctx, retry.NextBackOff()) {
				return
			}
		}
	}
}

// setKeys installs a key count taken at revision at. Events up to the
// cursor that are newer than at were published already: they are applied
// from the window, or, if the window no longer holds them, the count is
// refused (false) and must be taken again.
func (h *hub) setKeys(n, at int64) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if at < h.rev {
		if at < h.start {
			return false
		}
		for _, ev := range h.events {
			if ev.Kv.ModRevision > at {
				n += keyDelta(ev)
			}
		}
	}
	h.keys, h.keysAt, h.keysKnown = n, max(at, h.rev), true
	h.reportLocked()
	return true
}

// reportLocked updates the hub's metrics; the caller holds mu.
func (h *hub) reportLocked() {
	m := h.metrics
	if m == nil {
		return
	}
	m.revision.Set(float64(h.rev))
	m.watchLag.Set(float64(max(h.want-h.rev, 0)))
	if h.keysKnown {
		m.keys.Set(float64(h.keys))
	}
}
