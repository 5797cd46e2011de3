package kvserver

import (
	"cmp"
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"math"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	grpcpeer "google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/kvsql/kvsql/backends"
)

// Write forwarding. Every instance's group commit takes the database's
// global write lock and holds it through the commit's fsync, so instances
// writing at once queue behind each other's fsyncs. An instance that does
// not hold the leader lock therefore sends its writes (Put, DeleteRange and
// Txn with writes) to the leader's KV service, as an etcd follower sends
// proposals to its raft leader: the writes of every instance then share
// one group commit and one fsync.
//
// Forwarding is an optimisation only: correctness rests on the database
// lock, so any instance may write directly at any time. One that finds no
// ready connection to the leader does so; a forwarded request is never
// forwarded again (the leader may have changed meanwhile).
//
// A write must never land in another store: before it forwards anything, a
// follower asks the server at the leader's URL for its Status and checks
// its member and cluster IDs (an advertised 127.0.0.1 URL reaches another
// server on another host). Each forwarded request also names the member it
// is for, and a kvsql that is not that member refuses it unapplied (the
// address may since have been taken over by another instance).

// forwardedKey is the gRPC metadata key that marks a forwarded write; its
// value is the member ID (hex) of the leader it is for.
const forwardedKey = "kvsql-forwarded"

// verifyTimeout bounds the Status call that checks a new leader connection.
const verifyTimeout = 5 * time.Second

// defaultStallAfter: once writes forwarded to the leader have gone this long
// without the leader answering any, new writes are written directly until
// it answers again. A leader whose host vanished, or a network that drops
// everything between the instances, is otherwise noticed only by gRPC's
// keepalive, which pings no more often than every 10 s (its floor) and
// then waits 2 s for the answer: about 12 s in which every write through
// this instance would wait. Writing directly is always correct, so a
// leader that is merely slow costs nothing but shared commits; the writes
// already sent wait for their answer or for the keepalive.
const defaultStallAfter = 2 * time.Second

// wrongMemberPrefix starts the error a kvsql returns for a write forwarded
// to another member: nothing was applied.
const wrongMemberPrefix = "kvsql: write forwarded to member "

// Outcomes counted by kvsql_write_forwards_total.
const (
	fwdForwarded = "forwarded" // the leader answered (with a result or an etcd error)
	fwdDirect    = "direct"    // a leader is known but not reachable now: written directly
	fwdLost      = "lost"      // the connection failed mid-request: outcome unknown
)

// errForwardLost is returned when the connection to the leader failed after
// the write was sent: it may or may not have been applied, exactly like
// etcd's answer when a proposal's outcome is unknown.
var errForwardLost = rpctypes.ErrGRPCTimeoutDueToConnectionLost

// forwarder holds the connection to the current leader.
type forwarder struct {
	self    uint64
	cluster uint64
	selfURL map[string]bool // this instance's advertised URLs
	tls     *tls.Config     // for https:// leader URLs; nil: system roots
	log     *slog.Logger
	metrics *Metrics
	// sign signs a request for the member it is forwarded to (see
	// authGate.sign): the leader then trusts the permission check this
	// instance made, as it has no token of the client's.
	sign func(target uint64, m proto.Message, authRev uint64) (string, bool)
	// stallAfter is defaultStallAfter unless a test sets it.
	stallAfter time.Duration

	mu         sync.Mutex
	peer       *peer // nil: write directly
	warnedSelf bool
	warnedDial string // the URL a dial failure was last logged for
	// retiring counts the goroutines closing retired connections once
	// their requests are done; close waits for them.
	retiring sync.WaitGroup
}

// peer is a connection to one leader. inflight counts the requests using
// it, so that a retired connection closes only after they finish (closing
// it under them would make their outcome unknown).
type peer struct {
	id       uint64
	name     string
	url      string
	conn     *grpc.ClientConn
	kv       pb.KVClient
	inflight sync.WaitGroup

	// pending counts the writes sent and not yet answered, busySince is
	// when it last rose from zero and lastAnswer when the leader last
	// answered one (Unix nanoseconds): see stalled.
	pending    atomic.Int64
	busySince  atomic.Int64
	lastAnswer atomic.Int64
	stallSeen  atomic.Bool // a stall was logged; cleared by an answer

	// verified: the server at url answered Status as member id of this
	// cluster; only then are writes forwarded to it.
	verified  atomic.Bool
	verifying atomic.Bool
	warned    atomic.Bool // a verification failure was logged
}

// forwardedTo reports whether ctx is a request another instance forwarded,
// and the member (hex ID) it was meant for.
func forwardedTo(ctx context.Context) (string, bool) {
	md, ok := metadata.FromIncomingContext(ctx)
	if !ok {
		return "", false
	}
	v := md.Get(forwardedKey)
	if len(v) == 0 {
		return "", false
	}
	return v[0], true
}

// update points the forwarder at the leader in ms. It stops forwarding when
// this instance leads or no other instance is marked as leader, and when
// the leader advertises one of this instance's own URLs (instances that all
// advertise the default http://127.0.0.1:2379 on different hosts would
// otherwise each forward to itself).
func (f *forwarder) update(ms []backends.Member, leading bool) {
	var lead *backends.Member
	if !leading {
		for i := range ms {
			if ms[i].Leader && ms[i].ID != f.self && len(ms[i].ClientURLs) > 0 {
				lead = &ms[i]
				break
			}
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if lead == nil {
		f.retireLocked()
		return
	}
	u := lead.ClientURLs[0]
	if f.selfURL[u] {
		if f.peer != nil || !f.warnedSelf {
			f.log.Warn("the leader advertises this instance's own client URL; writing directly (set --advertise-client-urls to an address the other instances reach)", "leader", lead.Name, "url", u)
		}
		f.warnedSelf = true
		f.retireLocked()
		return
	}
	if p := f.peer; p != nil && p.id == lead.ID && p.url == u {
		if !p.verified.Load() {
			go f.verify(p)
		}
		return
	}
	f.retireLocked()
	conn, err := f.dial(u)
	if err != nil {
		if f.warnedDial != u {
			f.log.Warn("cannot forward writes to the leader; writing directly", "leader", lead.Name, "url", u, "err", err)
		}
		f.warnedDial = u
		return
	}
	conn.Connect()
	f.peer = &peer{id: lead.ID, name: lead.Name, url: u, conn: conn, kv: pb.NewKVClient(conn)}
	go f.verify(f.peer)
}

// verify checks that the server at p's URL is member p.id of this cluster,
// and marks p usable if it is. Until then writes go to the database
// directly; a failure is logged once per leader connection and retried at
// the next heartbeat.
func (f *forwarder) verify(p *peer) {
	if !p.verifying.CompareAndSwap(false, true) {
		return
	}
	defer p.verifying.Store(false)
	ctx, cancel := context.WithTimeout(context.Background(), verifyTimeout)
	defer cancel()
	req := &pb.StatusRequest{}
	if mac, ok := f.sign(p.id, req, 0); ok {
		// Status needs an identity once auth is enabled.
		ctx = metadata.AppendToOutgoingContext(ctx, forwardMACKey, mac)
	}
	st, err := pb.NewMaintenanceClient(p.conn).Status(ctx, req, grpc.WaitForReady(true))
	if err == nil && (st.Header == nil || st.Header.MemberId != p.id || st.Header.ClusterId != f.cluster) {
		got := st.GetHeader()
		err = fmt.Errorf("it answers as member %x of cluster %x, not member %x of cluster %x (is --advertise-client-urls an address the other instances reach?)",
			got.GetMemberId(), got.GetClusterId(), p.id, f.cluster)
	}
	f.mu.Lock()
	current := f.peer == p
	f.mu.Unlock()
	if !current {
		return // retired meanwhile
	}
	if err != nil {
		if !p.warned.Swap(true) {
			f.log.Warn("cannot forward writes to the leader; writing directly", "leader", p.name, "url", p.url, "err", err)
		}
		return
	}
	p.verified.Store(true)
	f.log.Info("forwarding writes to the leader", "leader", p.name, "url", p.url)
}

// close stops forwarding (at shutdown): it retires the connection to the
// leader and waits until every retired connection is closed.
func (f *forwarder) close() {
	f.mu.Lock()
	f.retireLocked()
	f.mu.Unlock()
	f.retiring.Wait()
}

func (f *forwarder) retireLocked() {
	p := f.peer
	if p == nil {
		return
	}
	f.peer = nil
	f.retiring.Go(func() {
		p.inflight.Wait()
		_ = p.conn.Close()
	})
}

// dial creates (without connecting) a client for an advertised client URL.
func (f *forwarder) dial(rawURL string) (*grpc.ClientConn, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, err
	}
	var creds credentials.TransportCredentials
	switch strings.ToLower(u.Scheme) {
	case "http":
		creds = insecure.NewCredentials()
	case "https":
		c := &tls.Config{MinVersion: tls.VersionTLS12}
		if f.tls != nil {
			c = f.tls.Clone()
		}
		c.ServerName = u.Hostname()
		creds = credentials.NewTLS(c)
	default:
		return nil, fmt.Errorf("advertised URL %q: scheme must be http or https", rawURL)
	}
	return grpc.NewClient(u.Host,
		grpc.WithTransportCredentials(creds),
		// A write is sent once: no retry policy from a service config
		// (DNS TXT) may resend one whose outcome is unknown. gRPC's
		// transparent retry of streams the server never processed stays.
		grpc.WithDisableRetry(),
		grpc.WithDisableServiceConfig(),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(math.MaxInt32), grpc.MaxCallSendMsgSize(math.MaxInt32)),
		// gRPC's floor for pings (10 s; etcd's server allows one every
		// 5 s), so that a connection to a leader that froze or vanished
		// without a FIN is closed within about 12 s: the writes waiting on
		// it then fail with an unknown outcome. New writes go directly to
		// the database after defaultStallAfter already.
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 2 * time.Second}),
	)
}

// stalled reports whether, at now, writes are waiting on p and none was
// answered for the last after (see defaultStallAfter).
func (p *peer) stalled(now time.Time, after time.Duration) bool {
	if p.pending.Load() == 0 {
		return false
	}
	since := max(p.busySince.Load(), p.lastAnswer.Load())
	return now.UnixNano()-since > int64(after)
}

// sent records a write about to be sent to the leader.
func (p *peer) sent() {
	if p.pending.Add(1) == 1 {
		p.busySince.Store(time.Now().UnixNano())
	}
}

// finished records the end of a write sent to the leader; answered says
// whether the leader answered it (a result or its own error), rather than
// the connection failing.
func (p *peer) finished(answered bool) {
	if answered {
		p.lastAnswer.Store(time.Now().UnixNano())
		p.stallSeen.Store(false)
	}
	p.pending.Add(-1)
}

// acquire returns a ready connection to the leader, or nil when this
// instance should write directly. Call p.inflight.Done when finished.
func (f *forwarder) acquire() *peer {
	f.mu.Lock()
	defer f.mu.Unlock()
	p := f.peer
	if p == nil {
		return nil
	}
	if !p.verified.Load() {
		f.count(fwdDirect)
		return nil
	}
	switch p.conn.GetState() {
	case connectivity.Ready:
		after := cmp.Or(f.stallAfter, defaultStallAfter)
		if p.stalled(time.Now(), after) {
			if !p.stallSeen.Swap(true) {
				f.log.Warn("the leader has not answered forwarded writes for a while; writing directly until it does", "leader", p.name, "url", p.url, "after", after)
			}
			f.count(fwdDirect)
			return nil
		}
		p.inflight.Add(1)
		return p
	case connectivity.Idle:
		p.conn.Connect()
	}
	f.count(fwdDirect)
	return nil
}

func (f *forwarder) count(outcome string) {
	if f.metrics != nil {
		f.metrics.forwards.WithLabelValues(outcome).Inc()
	}
}

// forward sends a write to the leader when this instance forwards writes
// and another instance leads. ok reports whether it did; then resp and err
// are the leader's answer (err is errForwardLost if the connection failed
// while the write was in flight). A write that was itself forwarded is
// written here (ok false) if it names this member, and refused unapplied
// (ok, FailedPrecondition) if it names another.
func forward[Req, Resp any](ctx context.Context, s *Server, r Req, call func(pb.KVClient, context.Context, Req, ...grpc.CallOption) (Resp, error)) (resp Resp, ok bool, err error) {
	if target, ok := forwardedTo(ctx); ok {
		if target != strconv.FormatUint(s.memberID, 16) {
			return resp, true, withReason(codes.FailedPrecondition, reasonWrongMember, fmt.Sprintf("%s%s, but this is member %x; not applied", wrongMemberPrefix, target, s.memberID))
		}
		return resp, false, nil
	}
	f := s.fwd
	if f == nil {
		return resp, false, nil
	}
	p := f.acquire()
	if p == nil {
		return resp, false, nil
	}
	defer p.inflight.Done()
	authRev := backends.AuthRevisionOf(ctx)
	mac, signed := f.sign(p.id, any(r).(proto.Message), authRev)
	if !signed {
		// Without the cluster secret the leader could not tell this
		// write was checked: write it here.
		f.count(fwdDirect)
		return resp, false, nil
	}
	// sentTo stays empty unless the request got onto a connection: gRPC
	// fills it in only from an attempt that created a stream.
	var sentTo grpcpeer.Peer
	// A fresh outgoing context: the client's own metadata (its token) is
	// not passed on; the signature stands for the check made here.
	md := metadata.Pairs(forwardedKey, strconv.FormatUint(p.id, 16), forwardMACKey, mac)
	if authRev != 0 {
		// The leader applies the write only at this auth revision.
		md.Set(forwardAuthRevKey, strconv.FormatUint(authRev, 10))
	}
	fctx := metadata.NewOutgoingContext(ctx, md)
	var trailer metadata.MD
	p.sent()
	resp, err = call(p.kv, fctx, r, grpc.Peer(&sentTo), grpc.Trailer(&trailer))
	p.finished(err == nil || answered(trailer, status.Convert(err).Message()))
	if err == nil {
		f.count(fwdForwarded)
		s.observeForwarded(resp)
		return resp, true, nil
	}
	if ctx.Err() != nil {
		return resp, true, toGRPC(ctx.Err())
	}
	st, _ := status.FromError(err)
	if reasonOf(err) == reasonWrongMember {
		// Another kvsql now serves the leader's address: nothing was
		// applied. Verify the address again before forwarding to it.
		p.verified.Store(false)
		f.count(fwdDirect)
		return resp, false, nil
	}
	if reasonOf(err) == reasonShuttingDown {
		// The leader's backend refused the write unapplied (it is
		// stopping, e.g. in a rolling restart): write it here instead.
		f.count(fwdDirect)
		return resp, false, nil
	}
	if st.Code() == codes.Unavailable && sentTo.Addr == nil {
		// No connection took the request (the leader went away between
		// the ready check and the call): it was never sent.
		f.count(fwdDirect)
		return resp, false, nil
	}
	if st.Code() == codes.Unavailable && !answered(trailer, st.Message()) {
		// The transport failed: the leader may have applied the write.
		f.count(fwdLost)
		s.log.Warn("forwarded write lost its connection to the leader; outcome unknown", "leader", p.url, "err", err)
		return resp, true, errForwardLost
	}
	f.count(fwdForwarded)
	return resp, true, err
}

// observeForwarded tells the backend the revision of a write the leader
// answered, which this instance's client now holds: if the database goes
// back below it (a failover to a replica that was behind), this instance
// notices even when the leader is gone (see backends.RevisionObserver).
func (s *Server) observeForwarded(resp any) {
	o, ok := s.be.(backends.RevisionObserver)
	h, hok := resp.(interface{ GetHeader() *pb.ResponseHeader })
	if ok && hok {
		o.ObserveRevision(h.GetHeader().GetRevision())
	}
}

// answeredByKey names the trailer every response of a kvsql server carries
// (see markAnswered): an error with it is the server's answer, whatever it
// says; an error without it is the transport's, and the request may or may
// not have reached the server.
const answeredByKey = "kvsql-answered-by"

// markAnswered is a unary server interceptor that sets the answeredByKey
// trailer on every response.
func (s *Server) markAnswered(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	resp, err := handler(ctx, req)
	_ = grpc.SetTrailer(ctx, metadata.Pairs(answeredByKey, strconv.FormatUint(s.memberID, 16)))
	return resp, err
}

// answered reports whether a forwarded call's error is the leader server's
// answer: its trailer says so. A leader of a kvsql version without the
// trailer is recognised by the prefix of its own and etcd's messages.
func answered(trailer metadata.MD, msg string) bool {
	if len(trailer.Get(answeredByKey)) > 0 {
		return true
	}
	return strings.HasPrefix(msg, "etcdserver: ") || strings.HasPrefix(msg, "kvsql: ")
}
