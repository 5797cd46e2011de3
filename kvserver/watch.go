package kvserver

import (
	"bytes"
	"context"
	"errors"
	"io"
	"sort"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/protobuf/proto"

	"github.com/kvsql/kvsql/backends"
)

const (
	// invalidWatchID is etcd's watch ID for responses not about one watch
	// (failed creates, RequestProgress answers).
	invalidWatchID = -1
	// maxEventsPerResponse caps the events one response carries (whole
	// revisions are never split, so a response may exceed it); their bytes
	// are capped at Config.MaxRequestBytes too (see deliver).
	maxEventsPerResponse = 1000
	// ctrlBuffer is how many client requests may queue before the receiver
	// waits for the sender.
	ctrlBuffer = 16
)

// The error texts etcd's mvcc package uses; clients show them as they are.
const (
	reasonEmptyRange  = "mvcc: watcher range is empty"
	reasonDuplicateID = "mvcc: duplicate watch ID provided on the WatchStream"
)

type watchService struct {
	pb.UnimplementedWatchServer
	s *Server
}

// watcher is one watch on a stream.
type watcher struct {
	id       int64
	kr       backends.KeyRange
	next     int64 // the next revision to deliver
	prevKV   bool
	noPut    bool
	noDelete bool
	progress bool // progress_notify requested
	fragment bool
	// quiet is true when no event was sent since the last progress tick.
	quiet bool
	// compacted is set when the watch must be cancelled as compacted.
	compacted int64
	// timeline is the hub's timeline count when the watch was created: a
	// watch of an earlier timeline is cancelled as compacted.
	timeline int64
	// compactRev is the compact revision when the watch was created. etcd
	// reads an event's prev_kv at the event's revision - 1 and leaves it
	// out when that revision is compacted, so an event at or below the
	// compact revision (a watch can start at it) has no prev_kv, whether
	// it comes from the hub's window or from the log.
	compactRev int64
}

func (w *watcher) match(ev *mvccpb.Event) bool {
	if (ev.Type == mvccpb.PUT && w.noPut) || (ev.Type == mvccpb.DELETE && w.noDelete) {
		return false
	}
	k := ev.Kv.Key
	switch {
	case w.kr.Single():
		return bytes.Equal(k, w.kr.Key)
	case w.kr.FromKey:
		return bytes.Compare(k, w.kr.Key) >= 0
	default:
		return bytes.Compare(k, w.kr.Key) >= 0 && bytes.Compare(k, w.kr.End) < 0
	}
}

// watchStream serves one gRPC Watch stream. A receiver goroutine reads
// client requests into ctrl; everything else, including every Send, happens
// on the stream's own goroutine, in order.
type watchStream struct {
	s        *Server
	stream   pb.Watch_WatchServer
	watchers map[int64]*watcher
	nextID   int64
	// progressPending is set when RequestProgress could not be answered
	// yet because a watcher was not synced.
	progressPending bool
	// retry is set when a delivery failed because the database could not
	// serve it; run tries again after watchRetryDelay.
	retry bool
}

func (ws *watchService) Watch(stream pb.Watch_WatchServer) error {
	st := &watchStream{s: ws.s, stream: stream, watchers: map[int64]*watcher{}}
	if m := ws.s.cfg.Metrics; m != nil {
		m.watchStreams.Inc()
		defer m.watchStreams.Dec()
	}
	ctx := stream.Context()
	ctrl := make(chan *pb.WatchRequest, ctrlBuffer)
	recvErr := make(chan error, 1)
	// The receiver ends when the stream does: gRPC cancels the stream's
	// context when this handler returns, which unblocks Recv.
	go func() {
		for {
			req, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			select {
			case ctrl <- req:
			case <-ctx.Done():
				return
			}
		}
	}()
	return st.run(ctx, ctrl, recvErr)
}

// gauge adjusts the open-watches metric.
func (st *watchStream) gauge(delta int) {
	if m := st.s.cfg.Metrics; m != nil {
		m.watchers.Add(float64(delta))
	}
}

func (st *watchStream) run(ctx context.Context, ctrl <-chan *pb.WatchRequest, recvErr <-chan error) error {
	defer func() { st.gauge(-len(st.watchers)) }()
	ticker := time.NewTicker(st.s.cfg.ProgressNotifyInterval)
	defer ticker.Stop()
	for {
		rev, changed := st.s.hub.snapshot()
		st.retry = false
		if err := st.deliverAll(ctx, rev); err != nil {
			return err
		}
		// A delivery the database could not serve (a lagging watcher's
		// read of the log) is tried again soon, not only on the next event.
		var retry <-chan time.Time
		if st.retry {
			retry = time.After(watchRetryDelay)
		}
		select {
		case <-retry:
		case req := <-ctrl:
			if err := st.handle(ctx, req); err != nil {
				return err
			}
		case err := <-recvErr:
			if errors.Is(err, context.Canceled) || ctx.Err() != nil {
				return rpctypes.ErrGRPCWatchCanceled
			}
			if !errors.Is(err, io.EOF) {
				return err
			}
			// The client closed its side (as the JSON gateway does once
			// it has read the request body): as etcd, keep sending
			// events until the stream itself ends.
			recvErr = nil
		case <-changed:
		case <-ticker.C:
			if err := st.progressTick(rev); err != nil {
				return err
			}
		case <-st.s.shutdown:
			return errShuttingDown
		case <-ctx.Done():
			return rpctypes.ErrGRPCWatchCanceled
		}
	}
}

// watchRetryDelay is how soon a watch stream tries again a read the
// database could not serve.
const watchRetryDelay = 500 * time.Millisecond

// revisions returns the database's current and compact revisions. While
// the database cannot answer it tries again, with growing waits up to a
// second: a watch stream outlives a database outage (its watches wait, as
// they would for events) and ends only with its client or the server.
func (st *watchStream) revisions(ctx context.Context) (cur, compact int64, err error) {
	retry := newBackoff(50*time.Millisecond, time.Second)
	for {
		cur, compact, err = st.s.be.Revisions(ctx)
		switch {
		case err == nil:
			return cur, compact, nil
		case ctx.Err() != nil:
			return 0, 0, rpctypes.ErrGRPCWatchCanceled
		case errors.Is(err, backends.ErrClosed):
			return 0, 0, errShuttingDown
		}
		wait := retry.NextBackOff()
		st.s.log.Debug("watch stream cannot read the revision; retrying", "err", err, "retry_in", wait)
		select {
		case <-time.After(wait):
		case <-st.s.shutdown:
			return 0, 0, errShuttingDown
		case <-ctx.Done():
			return 0, 0, rpctypes.ErrGRPCWatchCanceled
		}
	}
}

func (st *watchStream) send(resp *pb.WatchResponse) error {
	return st.stream.Send(resp)
}

func (st *watchStream) handle(ctx context.Context, req *pb.WatchRequest) error {
	switch v := req.RequestUnion.(type) {
	case *pb.WatchRequest_CreateRequest:
		if v.CreateRequest != nil {
			return st.create(ctx, v.CreateRequest)
		}
	case *pb.WatchRequest_CancelRequest:
		if v.CancelRequest == nil {
			return nil
		}
		id := v.CancelRequest.WatchId
		if _, ok := st.watchers[id]; !ok {
			return nil // etcd answers nothing for an unknown watch ID
		}
		delete(st.watchers, id)
		st.gauge(-1)
		// As etcd, answer with the store's current revision, which the
		// hub's cursor may not have reached yet; if the database cannot
		// answer, with the newest revision this instance has read.
		cur, err := st.s.currentRev(ctx)
		if err != nil {
			cur, _ = st.s.hub.snapshot()
		}
		return st.send(&pb.WatchResponse{Header: st.s.header(cur), WatchId: id, Canceled: true})
	case *pb.WatchRequest_ProgressRequest:
		if v.ProgressRequest != nil {
			return st.requestProgress(ctx)
		}
	}
	return nil
}

func (st *watchStream) create(ctx context.Context, c *pb.WatchCreateRequest) error {
	key := c.Key
	if len(key) == 0 {
		key = []byte{0}
	}
	cur, compact, err := st.revisions(ctx)
	if err != nil {
		return err
	}
	fail := func(reason string) error {
		return st.send(&pb.WatchResponse{Header: st.s.header(cur), WatchId: invalidWatchID, Created: true, Canceled: true, CancelReason: reason})
	}
	if c.StartRevision < 0 {
		return fail(rpctypes.ErrCompacted.Error())
	}
	// As etcd: a watch on keys the caller may not read is refused, with
	// the reason in the cancel response.
	if err := st.s.auth.watchPermitted(ctx, key, c.RangeEnd); err != nil {
		if reason, ok := watchRefusal(err); ok {
			return fail(reason)
		}
		return st.s.toGRPC(err)
	}
	kr := backends.NewKeyRange(key, c.RangeEnd)
	if kr.End != nil && bytes.Compare(kr.Key, kr.End) >= 0 {
		return fail(reasonEmptyRange)
	}
	id := c.WatchId
	if id == 0 {
		for st.watchers[st.nextID] != nil {
			st.nextID++
		}
		id = st.nextID
		st.nextID++
	} else if st.watchers[id] != nil {
		return fail(reasonDuplicateID)
	}
	w := &watcher{id: id, kr: kr, next: c.StartRevision, prevKV: c.PrevKv, progress: c.ProgressNotify, fragment: c.Fragment, quiet: true, compactRev: compact}
	w.timeline, _ = st.s.hub.timelineOf()
	for _, f := range c.Filters {
		switch f {
		case pb.WatchCreateRequest_NOPUT:
			w.noPut = true
		case pb.WatchCreateRequest_NODELETE:
			w.noDelete = true
		}
	}
	if w.next == 0 {
		w.next = cur + 1
	}
	if w.next < compact {
		w.compacted = compact
	}
	// Revision 1 is the empty initial revision: it has no events, so a
	// watch from it starts at 2 (else it would wait for events at 1 and
	// never count as synced for RequestProgress).
	w.next = max(w.next, 2)
	st.watchers[id] = w
	st.gauge(1)
	return st.send(&pb.WatchResponse{Header: st.s.header(cur), WatchId: id, Created: true})
}

// ids returns the watch IDs in ascending order, so delivery order is stable.
func (st *watchStream) ids() []int64 {
	ids := make([]int64, 0, len(st.watchers))
	for id := range st.watchers {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids
}

// deliverAll sends every watcher its events up to rev, then answers a
// pending RequestProgress if every watcher is now synced.
func (st *watchStream) deliverAll(ctx context.Context, rev int64) error {
	for _, id := range st.ids() {
		if err := st.deliver(ctx, st.watchers[id], rev); err != nil {
			return err
		}
	}
	if st.progressPending && st.synced(rev) {
		st.progressPending = false
		return st.send(&pb.WatchResponse{Header: st.s.header(rev), WatchId: invalidWatchID})
	}
	return nil
}

// synced reports whether every watcher has been sent everything up to rev
// and waits for nothing older.
func (st *watchStream) synced(rev int64) bool {
	for _, w := range st.watchers {
		if w.next != rev+1 {
			return false
		}
	}
	return true
}

// deliver sends w its events with revisions in [w.next, rev].
func (st *watchStream) deliver(ctx context.Context, w *watcher, rev int64) error {
	if tl, compact := st.s.hub.timelineOf(); w.compacted == 0 && w.timeline != tl {
		// The database's history went backwards under this watch: what it
		// was sent may be gone. As after a compaction, the client lists
		// again and watches from there.
		w.compacted = compact
	}
	for w.compacted == 0 && w.next <= rev {
		evs, upTo, ok := st.s.hub.read(w.next-1, maxEventsPerResponse)
		if !ok {
			var err error
			evs, upTo, err = st.s.history.read(ctx, w.next-1)
			if errors.Is(err, backends.ErrCompacted) {
				_, compact, rerr := st.revisions(ctx)
				if rerr != nil {
					return rerr
				}
				w.compacted = compact
				break
			}
			if err != nil {
				if ctx.Err() != nil {
					return rpctypes.ErrGRPCWatchCanceled
				}
				// The database cannot serve the read now (an outage): the
				// watch waits, as it would for events, and the stream and
				// its other watches stay open.
				st.s.log.Debug("watch cannot read the log; retrying", "watch_id", w.id, "next", w.next, "err", err)
				st.retry = true
				break
			}
			if len(evs) == 0 {
				break // not committed yet as far as this snapshot goes
			}
		}
		var out []*mvccpb.Event
		size, next := 0, upTo+1
		for i, ev := range evs {
			if ev.Kv.ModRevision < w.next {
				continue
			}
			// Stop at a revision boundary once the response holds
			// MaxRequestBytes: a watcher that reads slowly, or not at
			// all, keeps one response of about that size blocked in
			// this stream's Send, however far behind it is (the rest
			// stays in the hub's window or the log, shared).
			if size >= st.s.cfg.MaxRequestBytes && ev.Kv.ModRevision != evs[i-1].Kv.ModRevision {
				next = ev.Kv.ModRevision
				break
			}
			if !w.match(ev) {
				continue
			}
			if ev.PrevKv != nil && (!w.prevKV || ev.Kv.ModRevision <= w.compactRev) {
				ev = &mvccpb.Event{Type: ev.Type, Kv: ev.Kv}
			}
			out = append(out, ev)
			size += backends.EventBytes(ev)
		}
		w.next = next
		if len(out) > 0 {
			w.quiet = false
			if err := st.sendEvents(w, max(rev, next-1), out); err != nil {
				return err
			}
		}
	}
	if w.compacted != 0 {
		delete(st.watchers, w.id)
		st.gauge(-1)
		// etcd's compaction cancellation carries no revision in its header.
		return st.send(&pb.WatchResponse{Header: st.s.header(0), WatchId: w.id, CompactRevision: w.compacted, Canceled: true})
	}
	return nil
}

// sendEvents sends one response, split into fragments when the watch asked
// for them and the response exceeds MaxRequestBytes (as etcd does).
func (st *watchStream) sendEvents(w *watcher, rev int64, evs []*mvccpb.Event) error {
	resp := &pb.WatchResponse{Header: st.s.header(rev), WatchId: w.id, Events: evs}
	limit := st.s.cfg.MaxRequestBytes
	if !w.fragment || len(evs) < 2 || proto.Size(resp) < limit {
		return st.send(resp)
	}
	for i := 0; i < len(evs); {
		part := &pb.WatchResponse{Header: resp.Header, WatchId: w.id, Fragment: true}
		for i < len(evs) {
			part.Events = append(part.Events, evs[i])
			if len(part.Events) > 1 && proto.Size(part) >= limit {
				part.Events = part.Events[:len(part.Events)-1]
				break
			}
			i++
		}
		if i == len(evs) {
			part.Fragment = false
		}
		if err := st.send(part); err != nil {
			return err
		}
	}
	return nil
}

// requestProgress answers a client's RequestProgress: catch up with the
// database's current revision first, so that the answer R promises every
// event <= R was sent on this stream.
func (st *watchStream) requestProgress(ctx context.Context) error {
	cur, _, err := st.revisions(ctx)
	if err != nil {
		return err
	}
	if err := st.s.hub.waitRev(ctx, cur); err != nil {
		return st.s.toGRPC(err)
	}
	if len(st.watchers) == 0 {
		return nil // etcd sends nothing when the stream has no watchers
	}
	st.progressPending = true
	rev, _ := st.s.hub.snapshot()
	return st.deliverAll(ctx, rev)
}

// progressTick sends a progress notification to every progress_notify
// watcher that is synced and had no events since the previous tick.
func (st *watchStream) progressTick(rev int64) error {
	for _, id := range st.ids() {
		w := st.watchers[id]
		if !w.progress {
			continue
		}
		if w.quiet && w.next == rev+1 {
			if err := st.send(&pb.WatchResponse{Header: st.s.header(rev), WatchId: w.id}); err != nil {
				return err
			}
		}
		w.quiet = true
	}
	return nil
}
