package kvserver

import (
	"context"
	"errors"
	"sync"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/grpc"

	"github.com/kvsql/kvsql/backends"
)

// timelineBackend serves a history and reports a new timeline once when
// told to, as an engine does after the database was fenced.
type timelineBackend struct {
	backends.Backend // other methods unused
	mu               sync.Mutex
	log              []*mvccpb.Event
	cur, compact     int64
	fenced           bool // the next TailChanges reports ErrNewTimeline
	revisionsFail    int  // how many Revisions calls fail from now
}

var errRevisions = errors.New("revisions: connection lost")

func (b *timelineBackend) Revisions(context.Context) (int64, int64, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.revisionsFail > 0 {
		b.revisionsFail--
		return 0, 0, errRevisions
	}
	return b.cur, b.compact, nil
}

func (b *timelineBackend) Changes(_ context.Context, after, maxRevs int64) ([]*mvccpb.Event, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if after+1 < b.compact {
		return nil, backends.ErrCompacted
	}
	var out []*mvccpb.Event
	for _, e := range b.log {
		if e.Kv.ModRevision > after && e.Kv.ModRevision <= after+maxRevs {
			out = append(out, e)
		}
	}
	return out, nil
}

func (b *timelineBackend) TailChanges(ctx context.Context, after, maxRevs int64) ([]*mvccpb.Event, error) {
	b.mu.Lock()
	fenced := b.fenced
	b.fenced = false
	b.mu.Unlock()
	if fenced {
		return nil, backends.ErrNewTimeline
	}
	return b.Changes(ctx, after, maxRevs)
}

// sentStream is a Watch stream that records what the server sends.
type sentStream struct {
	grpc.ServerStream
	ctx  context.Context
	sent []*pb.WatchResponse
}

func (s *sentStream) Send(r *pb.WatchResponse) error {
	s.sent = append(s.sent, r)
	return nil
}

func (s *sentStream) Recv() (*pb.WatchRequest, error) { select {} }

func (s *sentStream) Context() context.Context { return s.ctx }

// TestNewTimelineCancelsEveryWatch: when the backend reports that the
// database's history went backwards (ErrNewTimeline), the hub drops its
// window and the history cache, and every watch open on the old timeline
// is cancelled as compacted at the new compact revision, at its next
// delivery, whatever revision it had reached: none is continued with the
// new timeline's events. (The engine's fence also moves the compact
// revision past every watch; the hub does not depend on it.)
func TestNewTimelineCancelsEveryWatch(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	be := &timelineBackend{cur: 5, compact: -1}
	for rev := int64(2); rev <= 5; rev++ {
		be.log = append(be.log, ev(rev, 1))
	}
	s, err := New(Config{Backend: be, Notify: &scriptSource{}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.history.close()
	s.hub.rev, s.hub.start = 1, 1
	if err := s.hub.catchUp(ctx); err != nil {
		t.Fatal(err)
	}
	stream := &sentStream{ctx: ctx}
	st := &watchStream{s: s, stream: stream, watchers: map[int64]*watcher{}}
	for _, start := range []int64{2, 0} { // from the start, and synced from now
		if err := st.create(ctx, &pb.WatchCreateRequest{Key: []byte("k"), StartRevision: start}); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.deliverAll(ctx, 5); err != nil {
		t.Fatal(err)
	}
	// A lagging watcher's read of the log is cached.
	if _, _, err := s.history.read(ctx, 1); err != nil {
		t.Fatal(err)
	}

	// The database is fenced: a new timeline from revision 3 (below where
	// the watches are: only the hub's own bookkeeping can tell them).
	be.mu.Lock()
	be.fenced, be.compact = true, 3
	be.log = append(be.log[:1:1], ev(3, 2), ev(4, 2), ev(5, 2), ev(6, 2))
	be.cur = 6
	be.mu.Unlock()
	if err := s.hub.catchUp(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(s.history.pages); n != 0 {
		t.Fatalf("history cache holds %d pages after the new timeline, want none", n)
	}
	stream.sent = nil
	rev, _ := s.hub.snapshot()
	if err := st.deliverAll(ctx, rev); err != nil {
		t.Fatal(err)
	}
	cancelled := map[int64]bool{}
	for _, r := range stream.sent {
		if len(r.Events) > 0 {
			t.Fatalf("watch %d was sent events of the new timeline: %v", r.WatchId, r.Events)
		}
		if r.Canceled && r.CompactRevision == 3 {
			cancelled[r.WatchId] = true
		}
	}
	if len(cancelled) != 2 || len(st.watchers) != 0 {
		t.Fatalf("cancelled as compacted at 3: %v; %d watches left open; want both cancelled", cancelled, len(st.watchers))
	}
	// A watch created now follows the new timeline.
	if err := st.create(ctx, &pb.WatchCreateRequest{Key: []byte("k"), StartRevision: 3}); err != nil {
		t.Fatal(err)
	}
	stream.sent = nil
	if err := st.deliverAll(ctx, rev); err != nil {
		t.Fatal(err)
	}
	var got []int64
	for _, r := range stream.sent {
		for _, e := range r.Events {
			got = append(got, e.Kv.ModRevision)
		}
	}
	if len(got) != 4 || got[0] != 3 || got[3] != 6 {
		t.Fatalf("a watch from 3 on the new timeline got revisions %v, want 3..6", got)
	}
}

// TestNewTimelineSurvivesAFailedRead: the backend reports a new timeline
// once; if the hub cannot act on it at once (reading the revisions fails),
// it still does at its next read, when the backend only reports the
// compaction the fence made: the window and the history cache are dropped
// and the watches of the old timeline are cancelled.
func TestNewTimelineSurvivesAFailedRead(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	be := &timelineBackend{cur: 5, compact: -1}
	for rev := int64(2); rev <= 5; rev++ {
		be.log = append(be.log, ev(rev, 1))
	}
	s, err := New(Config{Backend: be, Notify: &scriptSource{}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.history.close()
	s.hub.rev, s.hub.start = 1, 1
	if err := s.hub.catchUp(ctx); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.history.read(ctx, 1); err != nil {
		t.Fatal(err)
	}
	be.mu.Lock()
	be.fenced, be.revisionsFail = true, 1
	be.cur, be.compact = 100, 100
	be.log = append(be.log, ev(101, 1))
	be.cur = 101
	be.mu.Unlock()
	if err := s.hub.catchUp(ctx); !errors.Is(err, errRevisions) {
		t.Fatalf("catchUp with the revisions unreadable: %v, want %v", err, errRevisions)
	}
	if err := s.hub.catchUp(ctx); err != nil {
		t.Fatal(err)
	}
	if tl, compact := s.hub.timelineOf(); tl != 1 || compact != 100 {
		t.Fatalf("hub timeline %d at compact revision %d after the retry, want 1 at 100", tl, compact)
	}
	if n := len(s.history.pages); n != 0 {
		t.Fatalf("history cache holds %d pages after the new timeline, want none", n)
	}
	if rev, _ := s.hub.snapshot(); rev != 101 {
		t.Fatalf("hub at revision %d, want 101", rev)
	}
}
