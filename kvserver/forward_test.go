package kvserver

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/kvsql/kvsql/backends"
)

// testSign stands for authGate.sign in forwarder tests.
func testSign(uint64, proto.Message, uint64) (string, bool) { return "signed", true }

// TestForwarderPicksLeader: a follower forwards to the instance marked as
// leader, and writes directly when it leads itself, when nobody is marked,
// when the leader advertises this instance's own URL, or when the URL
// cannot be dialled.
func TestForwarderPicksLeader(t *testing.T) {
	const me, other = 1, 2
	f := &forwarder{self: me, selfURL: map[string]bool{"http://127.0.0.1:2379": true}, log: slog.New(slog.DiscardHandler), sign: testSign}
	defer f.close()
	members := func(leader uint64, url string) []backends.Member {
		return []backends.Member{
			{ID: me, Name: "me", ClientURLs: []string{"http://127.0.0.1:2379"}, Leader: leader == me},
			{ID: other, Name: "other", ClientURLs: []string{url}, Leader: leader == other},
		}
	}
	for _, tc := range []struct {
		name    string
		ms      []backends.Member
		leading bool
		want    string // the leader URL forwarded to; "" for none
	}{
		{"other leads", members(other, "http://127.0.0.1:1"), false, "http://127.0.0.1:1"},
		{"same leader again", members(other, "http://127.0.0.1:1"), false, "http://127.0.0.1:1"},
		{"leader moved to another URL", members(other, "https://127.0.0.1:2"), false, "https://127.0.0.1:2"},
		{"this instance leads", members(other, "http://127.0.0.1:1"), true, ""},
		{"marked as leader in the table", members(me, "http://127.0.0.1:1"), false, ""},
		{"nobody marked", members(0, "http://127.0.0.1:1"), false, ""},
		{"leader advertises this instance's URL", members(other, "http://127.0.0.1:2379"), false, ""},
		{"unusable URL", members(other, "unix:///tmp/kvsql.sock"), false, ""},
	} {
		f.update(tc.ms, tc.leading)
		got := ""
		if f.peer != nil {
			got = f.peer.url
		}
		if got != tc.want {
			t.Errorf("%s: forwarding to %q, want %q", tc.name, got, tc.want)
		}
	}
}

// observingBackend records the highest revision it is told of.
type observingBackend struct {
	backends.Backend // other methods unused
	seen             atomic.Int64
}

func (b *observingBackend) ObserveRevision(rev int64) { b.seen.Store(max(b.seen.Load(), rev)) }

// stubKV answers Put with whatever its test sets, recording the member the
// request was forwarded to ("" if it was not marked as forwarded).
type stubKV struct {
	pb.UnimplementedKVServer
	answer    func() (*pb.PutResponse, error)
	forwarded chan string
}

func (k *stubKV) Put(ctx context.Context, r *pb.PutRequest) (*pb.PutResponse, error) {
	to, _ := forwardedTo(ctx)
	k.forwarded <- to
	return k.answer()
}

// stubStatus answers Status as the given member of the given cluster.
type stubStatus struct {
	pb.UnimplementedMaintenanceServer
	member, cluster uint64
}

func (m *stubStatus) Status(context.Context, *pb.StatusRequest) (*pb.StatusResponse, error) {
	return &pb.StatusResponse{Header: &pb.ResponseHeader{MemberId: m.member, ClusterId: m.cluster}}, nil
}

// stubLeader serves stub KV and Maintenance services on a loopback port.
func stubLeader(t *testing.T, kv *stubKV, st *stubStatus) (*grpc.Server, string) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// As a kvsql server, the stub marks its answers (see markAnswered).
	gs := grpc.NewServer(grpc.ChainUnaryInterceptor((&Server{memberID: st.member}).markAnswered))
	pb.RegisterKVServer(gs, kv)
	pb.RegisterMaintenanceServer(gs, st)
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	return gs, "http://" + lis.Addr().String()
}

// followStub points f at the stub leader at url (member 2) and waits until
// it is verified and connected.
func followStub(t *testing.T, ctx context.Context, f *forwarder, url string) {
	t.Helper()
	f.update([]backends.Member{{ID: 2, Name: "leader", ClientURLs: []string{url}, Leader: true}}, false)
	for !f.peer.verified.Load() || f.peer.conn.GetState() != connectivity.Ready {
		if ctx.Err() != nil {
			t.Fatal("the stub leader was not verified")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestForwarderVerifiesLeader: writes are forwarded only once the server at
// the leader's URL has answered Status as that member of this cluster.
func TestForwarderVerifiesLeader(t *testing.T) {
	const cluster, leader = 7, 2
	for _, tc := range []struct {
		name            string
		member, cluster uint64
		want            bool
	}{
		{"the leader", leader, cluster, true},
		{"another member", 3, cluster, false},
		{"another cluster", leader, 8, false},
	} {
		_, url := stubLeader(t, &stubKV{forwarded: make(chan string, 1)}, &stubStatus{member: tc.member, cluster: tc.cluster})
		f := &forwarder{self: 1, cluster: cluster, log: slog.New(slog.DiscardHandler), sign: testSign}
		f.update([]backends.Member{{ID: leader, Name: "leader", ClientURLs: []string{url}, Leader: true}}, false)
		p := f.peer
		deadline := time.Now().Add(verifyTimeout + time.Second)
		for !p.verified.Load() && !p.warned.Load() && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		got := f.acquire()
		if (got != nil) != tc.want {
			t.Errorf("%s: forwarding = %v, want %v", tc.name, got != nil, tc.want)
		}
		if got != nil {
			got.inflight.Done()
		}
		f.close()
	}
}

// TestForwardOutcomes: how forward classifies the leader's answers. A
// result or an etcd error comes back as the answer; "shutting down" (the
// leader refused the write unapplied) makes this instance write directly;
// a connection that breaks mid-request is an unknown outcome.
func TestForwardOutcomes(t *testing.T) {
	stub := &stubKV{forwarded: make(chan string, 1)}
	gs, url := stubLeader(t, stub, &stubStatus{member: 2, cluster: 7})

	f := &forwarder{self: 1, cluster: 7, log: slog.New(slog.DiscardHandler), sign: testSign}
	defer f.close()
	obs := &observingBackend{}
	s := &Server{log: f.log, fwd: f, memberID: 1, be: obs}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	followStub(t, ctx, f, url)

	release := make(chan struct{}) // lets the stub's last handler return
	defer close(release)
	for _, tc := range []struct {
		name   string
		answer func() (*pb.PutResponse, error)
		during func() // runs while the stub handles the request
		ok     bool
		err    error
	}{
		{"result", func() (*pb.PutResponse, error) { return &pb.PutResponse{Header: &pb.ResponseHeader{Revision: 7}}, nil }, nil, true, nil},
		{"etcd error", func() (*pb.PutResponse, error) { return nil, rpctypes.ErrGRPCLeaseNotFound }, nil, true, rpctypes.ErrGRPCLeaseNotFound},
		{"database error", func() (*pb.PutResponse, error) { return nil, toGRPC(errors.New("boom")) }, nil, true, toGRPC(errors.New("boom"))},
		{"leader shutting down", func() (*pb.PutResponse, error) { return nil, errShuttingDown }, nil, false, nil},
		// An Unavailable error the leader's server returned (its trailer
		// says so), whatever its message: not a lost connection.
		{"server's own Unavailable", func() (*pb.PutResponse, error) { return nil, status.Error(codes.Unavailable, "no such prefix") }, nil, true, status.Error(codes.Unavailable, "no such prefix")},
		{"another member at the address", func() (*pb.PutResponse, error) {
			return nil, withReason(codes.FailedPrecondition, reasonWrongMember, wrongMemberPrefix+"2, but this is member 3; not applied")
		}, nil, false, nil},
		{"connection lost", func() (*pb.PutResponse, error) { <-release; return nil, nil }, func() { gs.Stop() }, true, errForwardLost},
	} {
		if !f.peer.verified.Load() {
			f.verify(f.peer) // after "another member at the address"
		}
		stub.answer = tc.answer
		var during sync.WaitGroup
		if tc.during != nil {
			during.Go(func() {
				<-stub.forwarded
				tc.during()
			})
		}
		resp, ok, err := forward(ctx, s, &pb.PutRequest{Key: []byte("k")}, pb.KVClient.Put)
		during.Wait()
		if tc.during == nil {
			if to := <-stub.forwarded; to != "2" {
				t.Errorf("%s: the leader saw the request forwarded to %q, want member \"2\"", tc.name, to)
			}
		}
		if ok != tc.ok || status.Convert(err).Message() != status.Convert(tc.err).Message() || status.Code(err) != status.Code(tc.err) {
			t.Errorf("%s: forward = ok %v, err %v; want ok %v, err %v", tc.name, ok, err, tc.ok, tc.err)
		}
		if tc.name == "another member at the address" && f.peer.verified.Load() {
			t.Error("another member at the address: the leader connection is still trusted")
		}
		if tc.name == "result" && (resp == nil || resp.Header.Revision != 7) {
			t.Errorf("result: response %v, want revision 7", resp)
		}
		if tc.name == "result" && obs.seen.Load() != 7 {
			// The client holds revision 7 now: this instance must know, so
			// that it notices if the database goes back below it.
			t.Errorf("result: the backend was told of revision %d, want 7", obs.seen.Load())
		}
	}
}

// TestForwarderWritesDirectlyWhileTheLeaderIsSilent: while a forwarded
// write waits and the leader has answered nothing for stallAfter, new
// writes go to the database directly; once it answers, they are forwarded
// again. Writes keep being forwarded as long as answers come, however long
// writes have been waiting in all.
func TestForwarderWritesDirectlyWhileTheLeaderIsSilent(t *testing.T) {
	hold := make(chan struct{})
	stub := &stubKV{forwarded: make(chan string, 1), answer: func() (*pb.PutResponse, error) {
		<-hold
		return &pb.PutResponse{Header: &pb.ResponseHeader{Revision: 1}}, nil
	}}
	_, url := stubLeader(t, stub, &stubStatus{member: 2, cluster: 7})
	const after = 200 * time.Millisecond
	f := &forwarder{self: 1, cluster: 7, log: slog.New(slog.DiscardHandler), sign: testSign, stallAfter: after}
	defer f.close()
	s := &Server{log: f.log, fwd: f, memberID: 1, be: &observingBackend{}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	followStub(t, ctx, f, url)
	p := f.peer

	done := make(chan error, 1)
	go func() {
		_, _, err := forward(ctx, s, &pb.PutRequest{Key: []byte("k")}, pb.KVClient.Put)
		done <- err
	}()
	<-stub.forwarded
	busy := time.Unix(0, p.busySince.Load())
	if p.stalled(busy.Add(after), after) {
		t.Error("stalled as soon as the wait reached stallAfter; want only past it")
	}
	if !p.stalled(busy.Add(after+time.Nanosecond), after) {
		t.Error("not stalled once the wait passed stallAfter with no answer")
	}
	time.Sleep(after + 50*time.Millisecond)
	if got := f.acquire(); got != nil {
		got.inflight.Done()
		t.Fatal("a new write was forwarded while the leader had answered nothing for longer than stallAfter")
	}
	close(hold)
	if err := <-done; err != nil {
		t.Fatalf("the held write: %v", err)
	}
	got := f.acquire()
	if got == nil {
		t.Fatal("writes are not forwarded again after the leader answered")
	}
	got.inflight.Done()

	// A write waiting long on a leader that keeps answering others: not a
	// stall.
	p.sent()
	now := time.Now()
	p.busySince.Store(now.Add(-time.Hour).UnixNano())
	p.lastAnswer.Store(now.UnixNano())
	if p.stalled(now.Add(after), after) {
		t.Error("stalled although the leader answered just now")
	}
	p.finished(true)
}
