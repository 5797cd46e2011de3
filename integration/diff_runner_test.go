package integration

// The differential runner: every operation goes to a fresh real etcd and to
// a fresh kvsql (for each entry of kvsqlBackends), sequentially, and the two
// responses must be equal field by field. Both servers start empty at
// revision 1, so revisions must match exactly.
//
// What is deliberately not compared (inherent differences, not bugs):
//   - header cluster_id, member_id and raft_term: identities of the cluster,
//     not of the data;
//   - LeaseTimeToLive.TTL when positive: the remaining seconds depend on the
//     wall clock (-1 for an unknown lease is compared);
//   - the order of LeaseTimeToLive.Keys (etcd lists them from a Go map) and
//     of LeaseLeases.Leases (etcd orders them by expiry time): both are sorted
//     before comparing;
//   - how watch events are grouped into responses, and how RangeStream
//     results are split into chunks: events are compared per watch as one
//     ordered list, RangeStream chunks are merged first.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/proto"
)

// diffTimeout bounds every single wait of the differential tests.
const diffTimeout = 10 * time.Second

// target is one server under comparison, spoken to over raw gRPC so that
// nothing in clientv3 hides a difference.
type target struct {
	name    string
	kv      pb.KVClient
	lease   pb.LeaseClient
	watch   pb.WatchClient
	auth    pb.AuthClient
	maint   pb.MaintenanceClient
	cluster pb.ClusterClient
}

func newTarget(t testing.TB, name string, s server) target {
	return targetOn(name, newClient(t, s).ActiveConnection())
}

// newRawTarget speaks to s over a plain gRPC connection, without
// clientv3's interceptors (which retry, and log in again, on auth errors).
func newRawTarget(t testing.TB, name string, s server) target {
	conn, err := grpc.NewClient(strings.TrimPrefix(s.Endpoint, "http://"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return targetOn(name, conn)
}

func targetOn(name string, conn *grpc.ClientConn) target {
	return target{name: name, kv: pb.NewKVClient(conn), lease: pb.NewLeaseClient(conn), watch: pb.NewWatchClient(conn),
		auth: pb.NewAuthClient(conn), maint: pb.NewMaintenanceClient(conn), cluster: pb.NewClusterClient(conn)}
}

// differ sends every operation to etcd (want) and kvsql (got).
type differ struct {
	t    testing.TB
	ctx  context.Context
	etcd target
	kv   target
	// admin, once auth is enabled, is the session the runner's own
	// reads (currentRev) use.
	admin *authSession
}

// runDiff runs fn against a fresh etcd and a fresh kvsql for every backend.
func runDiff(t *testing.T, opts serverOptions, fn func(d *differ)) {
	t.Helper()
	for _, b := range kvsqlBackends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			fn(newDiffer(t, opts, b.start))
		})
	}
}

func newDiffer(t testing.TB, opts serverOptions, start starter) *differ {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	nt := newTarget
	if opts.RawGRPC {
		nt = newRawTarget
	}
	return &differ{
		t:    t,
		ctx:  ctx,
		etcd: nt(t, "etcd", startEtcd(t, opts)),
		kv:   nt(t, "kvsql", start(t, opts)),
	}
}

// normalize returns a copy of m without the fields that identify the
// cluster rather than the data: the top-level header's cluster_id,
// member_id and raft_term. Nested headers (inside a Txn) are compared as
// they are.
func normalize(m proto.Message) proto.Message {
	if m == nil {
		return nil
	}
	m = proto.Clone(m)
	type headered interface{ GetHeader() *pb.ResponseHeader }
	if h, ok := m.(headered); ok {
		if hd := h.GetHeader(); hd != nil {
			hd.ClusterId, hd.MemberId, hd.RaftTerm = 0, 0, 0
		}
	}
	return m
}

// errString renders an error as etcd's clients see it: gRPC code and message.
func errString(err error) string {
	if err == nil {
		return "<nil>"
	}
	if st, ok := status.FromError(err); ok {
		return fmt.Sprintf("%s: %s", st.Code(), st.Message())
	}
	return "non-grpc: " + err.Error()
}

func show(m proto.Message) string {
	if m == nil {
		return "<nil>"
	}
	s := prototext.MarshalOptions{Multiline: true}.Format(m)
	if len(s) > 4000 {
		s = s[:4000] + "..."
	}
	return s
}

// compare reports a difference between etcd's (want) and kvsql's (got) answer.
func (d *differ) compare(what string, want proto.Message, wantErr error, got proto.Message, gotErr error) bool {
	d.t.Helper()
	if we, ge := errString(wantErr), errString(gotErr); we != ge {
		d.t.Errorf("%s: error differs\netcd:  %s\nkvsql: %s\netcd resp:\n%s\nkvsql resp:\n%s", what, we, ge, show(want), show(got))
		return false
	}
	if wantErr != nil {
		return true
	}
	if w, g := normalize(want), normalize(got); !proto.Equal(w, g) {
		d.t.Errorf("%s: response differs\netcd:\n%s\nkvsql:\n%s", what, show(w), show(g))
		return false
	}
	return true
}

// isNil reports whether a typed proto pointer is nil.
func isNil[M proto.Message](m M) bool {
	var zero M
	return any(m) == any(zero)
}

// do runs f on both servers and compares. It returns etcd's answer.
func do[M proto.Message](d *differ, what string, f func(ctx context.Context, tg target) (M, error)) (M, error) {
	d.t.Helper()
	ctx, cancel := context.WithTimeout(d.ctx, diffTimeout)
	defer cancel()
	want, wantErr := f(ctx, d.etcd)
	got, gotErr := f(ctx, d.kv)
	var w, g proto.Message
	if !isNil(want) {
		w = want
	}
	if !isNil(got) {
		g = got
	}
	d.compare(what, w, wantErr, g, gotErr)
	return want, wantErr
}

func (d *differ) rng(r *pb.RangeRequest) (*pb.RangeResponse, error) {
	d.t.Helper()
	return do(d, "Range "+compact(r), func(ctx context.Context, tg target) (*pb.RangeResponse, error) {
		return tg.kv.Range(ctx, proto.Clone(r).(*pb.RangeRequest))
	})
}

func (d *differ) put(r *pb.PutRequest) (*pb.PutResponse, error) {
	d.t.Helper()
	return do(d, "Put "+compact(r), func(ctx context.Context, tg target) (*pb.PutResponse, error) {
		return tg.kv.Put(ctx, r)
	})
}

func (d *differ) del(r *pb.DeleteRangeRequest) (*pb.DeleteRangeResponse, error) {
	d.t.Helper()
	return do(d, "DeleteRange "+compact(r), func(ctx context.Context, tg target) (*pb.DeleteRangeResponse, error) {
		return tg.kv.DeleteRange(ctx, r)
	})
}

func (d *differ) txn(r *pb.TxnRequest) (*pb.TxnResponse, error) {
	d.t.Helper()
	return do(d, "Txn "+compact(r), func(ctx context.Context, tg target) (*pb.TxnResponse, error) {
		return tg.kv.Txn(ctx, r)
	})
}

func (d *differ) compact(rev int64) (*pb.CompactionResponse, error) {
	d.t.Helper()
	return do(d, fmt.Sprintf("Compact %d", rev), func(ctx context.Context, tg target) (*pb.CompactionResponse, error) {
		return tg.kv.Compact(ctx, &pb.CompactionRequest{Revision: rev, Physical: true})
	})
}

// rangeStream calls KV.RangeStream and merges the chunks the way a client
// does: kvs concatenated, header, count and more from the last chunk (the
// only one that carries them).
func (d *differ) rangeStream(r *pb.RangeRequest) (*pb.RangeResponse, error) {
	d.t.Helper()
	return do(d, "RangeStream "+compact(r), func(ctx context.Context, tg target) (*pb.RangeResponse, error) {
		st, err := tg.kv.RangeStream(ctx, proto.Clone(r).(*pb.RangeRequest))
		if err != nil {
			return nil, err
		}
		merged := &pb.RangeResponse{}
		for {
			m, err := st.Recv()
			if err != nil {
				if errors.Is(err, io.EOF) {
					return merged, nil
				}
				return nil, err
			}
			rr := m.GetRangeResponse()
			merged.Kvs = append(merged.Kvs, rr.GetKvs()...)
			if rr.GetHeader() != nil {
				merged.Header, merged.Count, merged.More = rr.Header, rr.Count, rr.More
			}
		}
	})
}

func (d *differ) leaseGrant(id, ttl int64) (*pb.LeaseGrantResponse, error) {
	d.t.Helper()
	return do(d, fmt.Sprintf("LeaseGrant id=%d ttl=%d", id, ttl), func(ctx context.Context, tg target) (*pb.LeaseGrantResponse, error) {
		return tg.lease.LeaseGrant(ctx, &pb.LeaseGrantRequest{ID: id, TTL: ttl})
	})
}

func (d *differ) leaseRevoke(id int64) (*pb.LeaseRevokeResponse, error) {
	d.t.Helper()
	return do(d, fmt.Sprintf("LeaseRevoke %d", id), func(ctx context.Context, tg target) (*pb.LeaseRevokeResponse, error) {
		return tg.lease.LeaseRevoke(ctx, &pb.LeaseRevokeRequest{ID: id})
	})
}

func (d *differ) leaseTTL(id int64, keys bool) (*pb.LeaseTimeToLiveResponse, error) {
	d.t.Helper()
	return do(d, fmt.Sprintf("LeaseTimeToLive %d keys=%v", id, keys), func(ctx context.Context, tg target) (*pb.LeaseTimeToLiveResponse, error) {
		resp, err := tg.lease.LeaseTimeToLive(ctx, &pb.LeaseTimeToLiveRequest{ID: id, Keys: keys})
		if resp != nil {
			if resp.TTL > 0 {
				resp.TTL = 1 // remaining seconds depend on the clock; "alive" is compared
			}
			sort.Slice(resp.Keys, func(i, j int) bool { return string(resp.Keys[i]) < string(resp.Keys[j]) })
		}
		return resp, err
	})
}

func (d *differ) leases() (*pb.LeaseLeasesResponse, error) {
	d.t.Helper()
	return do(d, "LeaseLeases", func(ctx context.Context, tg target) (*pb.LeaseLeasesResponse, error) {
		resp, err := tg.lease.LeaseLeases(ctx, &pb.LeaseLeasesRequest{})
		if resp != nil {
			sort.Slice(resp.Leases, func(i, j int) bool { return resp.Leases[i].ID < resp.Leases[j].ID })
		}
		return resp, err
	})
}

// keepAliveOnce sends one keep-alive on a fresh stream and returns the answer.
func (d *differ) keepAliveOnce(id int64) (*pb.LeaseKeepAliveResponse, error) {
	d.t.Helper()
	return do(d, fmt.Sprintf("LeaseKeepAlive %d", id), func(ctx context.Context, tg target) (*pb.LeaseKeepAliveResponse, error) {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		st, err := tg.lease.LeaseKeepAlive(ctx)
		if err != nil {
			return nil, err
		}
		if err := st.Send(&pb.LeaseKeepAliveRequest{ID: id}); err != nil {
			return nil, err
		}
		return st.Recv()
	})
}

// currentRev returns both servers' current revisions (they must agree).
func (d *differ) currentRev() int64 {
	d.t.Helper()
	resp, err := doAs(d, d.admin, "Range count all", func(ctx context.Context, tg target) (*pb.RangeResponse, error) {
		return tg.kv.Range(ctx, &pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}, CountOnly: true})
	})
	if err != nil {
		d.t.Fatalf("current revision: %v", err)
	}
	return resp.Header.Revision
}

// compact renders a request on one line for failure messages, cut short.
func compact(m proto.Message) string {
	s := prototext.MarshalOptions{}.Format(m)
	if len(s) > 400 {
		s = s[:400] + "..."
	}
	return s
}

// watchSide is one Watch stream on one server. A receiver goroutine files
// every response: events per watch ID (fragments just append), created and
// canceled responses in ctrl, RequestProgress answers (watch ID -1, no
// events) in progress. Per-watch progress notifications are timing
// dependent and dropped.
type watchSide struct {
	tg     target
	stream pb.Watch_WatchClient
	ctrl   chan *pb.WatchResponse
	prog   chan *pb.WatchResponse
	errc   chan error

	mu     sync.Mutex // guards events
	events map[int64][]*mvccpb.Event
}

const watchChanBuffer = 1024

func openWatchSide(t testing.TB, ctx context.Context, tg target) *watchSide {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	st, err := tg.watch.Watch(ctx)
	if err != nil {
		cancel()
		t.Fatalf("%s: open watch stream: %v", tg.name, err)
	}
	ws := &watchSide{tg: tg, stream: st, ctrl: make(chan *pb.WatchResponse, watchChanBuffer),
		prog: make(chan *pb.WatchResponse, watchChanBuffer), errc: make(chan error, 1), events: map[int64][]*mvccpb.Event{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			resp, err := st.Recv()
			if err != nil {
				ws.errc <- err
				return
			}
			switch {
			case resp.Created || resp.Canceled:
				if len(resp.Events) > 0 {
					ws.addEvents(resp)
				}
				ws.ctrl <- resp
			case len(resp.Events) > 0:
				ws.addEvents(resp)
			case resp.WatchId == -1:
				ws.prog <- resp
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return ws
}

func (ws *watchSide) addEvents(resp *pb.WatchResponse) {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	ws.events[resp.WatchId] = append(ws.events[resp.WatchId], resp.Events...)
}

func (ws *watchSide) snapshot() map[int64][]*mvccpb.Event {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	out := make(map[int64][]*mvccpb.Event, len(ws.events))
	for id, evs := range ws.events {
		out[id] = append([]*mvccpb.Event(nil), evs...)
	}
	return out
}

// forget drops the events received so far.
func (ws *watchSide) forget() {
	ws.mu.Lock()
	defer ws.mu.Unlock()
	ws.events = map[int64][]*mvccpb.Event{}
}

// nextCtrl waits for the next created/canceled response.
func (ws *watchSide) nextCtrl(ctx context.Context) (*pb.WatchResponse, error) {
	select {
	case r := <-ws.ctrl:
		return r, nil
	case err := <-ws.errc:
		ws.errc <- err
		return nil, fmt.Errorf("%s: watch stream ended: %w", ws.tg.name, err)
	case <-ctx.Done():
		return nil, fmt.Errorf("%s: no created/canceled response: %w", ws.tg.name, ctx.Err())
	}
}

// syncTo sends RequestProgress until an answer reports revision >= rev:
// then every event <= rev has been received on this stream (etcd answers
// only once every watch on the stream is synced, so it may need asking
// again). It returns the answer.
func (ws *watchSide) syncTo(ctx context.Context, rev int64) (*pb.WatchResponse, error) {
	for {
		if err := ws.stream.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_ProgressRequest{ProgressRequest: &pb.WatchProgressRequest{}}}); err != nil {
			return nil, fmt.Errorf("%s: request progress: %w", ws.tg.name, err)
		}
		retry := time.NewTimer(100 * time.Millisecond)
		for waiting := true; waiting; {
			select {
			case r := <-ws.prog:
				if r.Header.Revision >= rev {
					retry.Stop()
					return r, nil
				}
			case err := <-ws.errc:
				ws.errc <- err
				retry.Stop()
				return nil, fmt.Errorf("%s: watch stream ended: %w", ws.tg.name, err)
			case <-ctx.Done():
				retry.Stop()
				return nil, fmt.Errorf("%s: no progress answer at revision %d: %w", ws.tg.name, rev, ctx.Err())
			case <-retry.C:
				waiting = false
			}
		}
	}
}

// watchPair is one Watch stream on each server.
type watchPair struct {
	d        *differ
	etcd, kv *watchSide
	// active holds the watches created and not cancelled: etcd (like
	// kvsql) answers RequestProgress only on a stream with watches.
	active map[int64]bool
}

func (d *differ) openWatch() *watchPair {
	d.t.Helper()
	return &watchPair{d: d, etcd: openWatchSide(d.t, d.ctx, d.etcd), kv: openWatchSide(d.t, d.ctx, d.kv), active: map[int64]bool{}}
}

func (wp *watchPair) send(req *pb.WatchRequest) {
	wp.d.t.Helper()
	if err := wp.etcd.stream.Send(req); err != nil {
		wp.d.t.Fatalf("etcd: send %s: %v", compact(req), err)
	}
	if err := wp.kv.stream.Send(req); err != nil {
		wp.d.t.Fatalf("kvsql: send %s: %v", compact(req), err)
	}
}

// ctrl waits for the next created/canceled response on both sides and compares them.
func (wp *watchPair) ctrl(what string) (*pb.WatchResponse, *pb.WatchResponse) {
	wp.d.t.Helper()
	ctx, cancel := context.WithTimeout(wp.d.ctx, diffTimeout)
	defer cancel()
	want, err := wp.etcd.nextCtrl(ctx)
	if err != nil {
		wp.d.t.Fatalf("%s: %v", what, err)
	}
	got, err := wp.kv.nextCtrl(ctx)
	if err != nil {
		wp.d.t.Fatalf("%s: %v", what, err)
	}
	wp.d.compare(what, want, nil, got, nil)
	return want, got
}

// create creates a watch on both streams, compares the created responses
// and returns etcd's.
func (wp *watchPair) create(c *pb.WatchCreateRequest) *pb.WatchResponse {
	wp.d.t.Helper()
	what := "Watch create " + compact(c)
	wp.send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: c}})
	want, _ := wp.ctrl(what)
	wp.d.t.Logf("%s: watch %d", what, want.WatchId)
	if want.Created && !want.Canceled {
		wp.active[want.WatchId] = true
	}
	return want
}

// cancelWatch cancels a watch; an unknown ID gets no answer from etcd, so
// none is awaited.
func (wp *watchPair) cancelWatch(id int64, known bool) {
	wp.d.t.Helper()
	wp.send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CancelRequest{CancelRequest: &pb.WatchCancelRequest{WatchId: id}}})
	if known {
		wp.ctrl(fmt.Sprintf("Watch cancel %d", id))
	}
	delete(wp.active, id)
}

// sync waits until both streams have delivered every event up to the
// current revision, comparing the RequestProgress answers.
func (wp *watchPair) sync() {
	wp.d.t.Helper()
	if len(wp.active) == 0 {
		return // no watch: nothing to wait for, and no answer would come
	}
	rev := wp.d.currentRev()
	ctx, cancel := context.WithTimeout(wp.d.ctx, diffTimeout)
	defer cancel()
	want, err := wp.etcd.syncTo(ctx, rev)
	if err != nil {
		wp.d.t.Fatal(err)
	}
	got, err := wp.kv.syncTo(ctx, rev)
	if err != nil {
		wp.d.t.Fatal(err)
	}
	wp.d.compare(fmt.Sprintf("RequestProgress at %d", rev), want, nil, got, nil)
}

// forget drops the events both streams received so far (once compared,
// so that a long run compares each event once).
func (wp *watchPair) forget() {
	wp.etcd.forget()
	wp.kv.forget()
}

// compareEvents syncs both streams and compares every watch's events.
func (wp *watchPair) compareEvents(what string) {
	wp.d.t.Helper()
	wp.sync()
	want, got := wp.etcd.snapshot(), wp.kv.snapshot()
	ids := map[int64]bool{}
	for id := range want {
		ids[id] = true
	}
	for id := range got {
		ids[id] = true
	}
	for id := range ids {
		w, g := want[id], got[id]
		n := max(len(w), len(g))
		for i := range n {
			var we, ge *mvccpb.Event
			if i < len(w) {
				we = w[i]
			}
			if i < len(g) {
				ge = g[i]
			}
			if !proto.Equal(we, ge) {
				wp.d.t.Errorf("%s: watch %d event %d of (etcd %d, kvsql %d) differs\netcd:\n%s\nkvsql:\n%s",
					what, id, i, len(w), len(g), show(we), show(ge))
				break
			}
		}
	}
}
