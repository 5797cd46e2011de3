package kvserver

import (
	"container/list"
	"context"
	"fmt"
	"runtime/debug"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	grpcstats "google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// Memory of large responses (issues 12 and 14): a Range builds its whole
// response in memory, as etcd does, so the server bounds how many bytes of
// Range results are in flight at once (rangeBudget), refuses a response no
// gRPC message could carry before building it, and gives the memory of a
// large response back to the operating system once it is sent, instead of
// keeping a gigabyte after a full list of a large cluster.
const (
	// DefaultMaxRangeBytesInFlight is Config.MaxRangeBytesInFlight's
	// default.
	DefaultMaxRangeBytesInFlight = 512 << 20
	// maxResponseBytes is the largest message gRPC sends (MaxSendMsgSize,
	// etcd's too): a Range whose response would exceed it fails as soon
	// as it is known, not after it was built.
	maxResponseBytes = 1<<31 - 1
	// onePageKeys: a Range limited to this many keys reads them in one
	// statement, as before the budget (a Kubernetes list page is 500
	// keys); a larger or unlimited one reads chunks, the first of a few
	// keys (values can be 1.5 MiB each), the next ones growing or
	// shrinking to about rangeChunkBytes. The budget is taken chunk by
	// chunk.
	onePageKeys     = 500
	rangeChunkBytes = 4 << 20
	// unpooledMessageBytes: gRPC keeps the buffers of sent messages in a
	// pool for reuse; a pool entry survives a garbage collection, so a
	// 400 MB list response would stay in memory until the second
	// collection after it. Messages this large are encoded into buffers
	// of their own instead, which the collector frees once sent.
	unpooledMessageBytes = 8 << 20
	// releaseAfterBytes: once a response at least this large has been
	// sent, the memory the runtime no longer uses is returned to the
	// operating system (debug.FreeOSMemory) rather than kept for the next
	// one, releaseEvery later (see releaser).
	releaseAfterBytes = 64 << 20
	releaseEvery      = time.Second
)

// rangeBudget bounds the bytes of Range results in flight: read from the
// database and not yet handed to gRPC (the end of the RPC). A large Range
// takes its bytes chunk by chunk as it reads them; a chunk that would take
// the total over the limit waits until others finish — unless its Range is
// the oldest one holding bytes, which always proceeds, so that a response
// larger than the whole budget is served too (alone) and waiting Ranges
// cannot deadlock. Ranges join the order at their first chunk, when they
// already hold their read transaction: the oldest never waits for a
// database connection that a waiting Range holds.
type rangeBudget struct {
	limit int64

	mu      sync.Mutex // guards the fields below
	used    int64
	order   *list.List    // *reservation that took bytes, oldest first
	wake    chan struct{} // closed and replaced when used falls or the order changes
	waiting int           // takes waiting now
}

func newRangeBudget(limit int64) *rangeBudget {
	return &rangeBudget{limit: limit, order: list.New(), wake: make(chan struct{})}
}

// reservation is one Range's share of the budget.
type reservation struct {
	b    *rangeBudget
	elem *list.Element // in b.order once it holds bytes
	held int64         // guarded by b.mu
	done bool          // released; guarded by b.mu
}

func (b *rangeBudget) reserve() *reservation { return &reservation{b: b} }

// take adds n bytes to the reservation. With wait it blocks while the
// budget is spent, unless this is the oldest reservation; without, it
// counts bytes already read. It fails with ResourceExhausted when the
// response would be larger than gRPC can send.
func (r *reservation) take(ctx context.Context, n int64, wait bool) error {
	b := r.b
	b.mu.Lock()
	if r.done {
		b.mu.Unlock()
		return nil // released already: nothing holds the bytes
	}
	if r.held+n > maxResponseBytes {
		b.mu.Unlock()
		return status.Errorf(codes.ResourceExhausted,
			"kvsql: the range's response is larger than %d bytes, the largest gRPC message; read it in pages (limit) or with RangeStream", maxResponseBytes)
	}
	if r.elem == nil {
		r.elem = b.order.PushBack(r)
	}
	for wait && b.used+n > b.limit && b.order.Front() != r.elem {
		ch := b.wake
		b.waiting++
		b.mu.Unlock()
		var err error
		select {
		case <-ch:
		case <-ctx.Done():
			err = ctx.Err()
		}
		b.mu.Lock()
		b.waiting--
		if err != nil {
			b.mu.Unlock()
			return err
		}
	}
	b.used += n
	r.held += n
	b.mu.Unlock()
	return nil
}

// release gives the reservation's bytes back; it returns how many it held
// (0 when already released).
func (r *reservation) release() int64 {
	b := r.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if r.done {
		return 0
	}
	r.done = true
	if r.elem != nil {
		b.order.Remove(r.elem)
		b.used -= r.held
		close(b.wake)
		b.wake = make(chan struct{})
	}
	return r.held
}

// state returns the bytes reserved and how many takes wait.
func (b *rangeBudget) state() (used int64, waiting int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used, b.waiting
}

// rpcHold carries a Range's reservation from its handler to the end of
// its RPC, when gRPC has encoded and queued the response (see rpcStats).
type rpcHold struct {
	mu  sync.Mutex // guards the fields below
	res *reservation
	// resp is the response whose kvs wait, encoded, in Server.encoded.
	resp *pb.RangeResponse
}

type rpcHoldKey struct{}

// rpcHoldOf returns the hold of ctx's Range RPC, nil when ctx is not a
// gRPC call of this server (a direct call).
func rpcHoldOf(ctx context.Context) *rpcHold {
	h, _ := ctx.Value(rpcHoldKey{}).(*rpcHold)
	return h
}

// keep makes res end with the RPC.
func (h *rpcHold) keep(res *reservation) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.res = res
}

// keepEncoded makes resp, whose Kvs are empty, go out with the kvs in enc
// (see codec); they are dropped if the RPC ends before.
func (h *rpcHold) keepEncoded(s *Server, resp *pb.RangeResponse, enc *encodedKVs) {
	h.mu.Lock()
	h.resp = resp
	h.mu.Unlock()
	s.encoded.Store(resp, enc)
}

// encodedKVs are a Range response's key-values, encoded as its field 2 in
// chunks, waiting for the codec.
type encodedKVs struct {
	chunks [][]byte
	kvs    int // how many key-values (for logs and metrics that see the response)
	bytes  int // the chunks' length
}

// rpcStats is a gRPC stats handler that releases a Range's reservation at
// the end of its RPC.
type rpcStats struct{ s *Server }

func (rpcStats) TagRPC(ctx context.Context, info *grpcstats.RPCTagInfo) context.Context {
	if info.FullMethodName != "/etcdserverpb.KV/Range" {
		return ctx
	}
	return context.WithValue(ctx, rpcHoldKey{}, &rpcHold{})
}

func (h rpcStats) HandleRPC(ctx context.Context, st grpcstats.RPCStats) {
	if _, ok := st.(*grpcstats.End); !ok {
		return
	}
	hold, ok := ctx.Value(rpcHoldKey{}).(*rpcHold)
	if !ok {
		return
	}
	hold.mu.Lock()
	res, resp := hold.res, hold.resp
	hold.res, hold.resp = nil, nil
	hold.mu.Unlock()
	if resp != nil {
		// Still there if the codec never took it (the RPC failed first).
		h.s.encoded.Delete(resp)
	}
	if res != nil && res.release() >= releaseAfterBytes {
		h.s.releaseMemory()
	}
}

func (rpcStats) TagConn(ctx context.Context, _ *grpcstats.ConnTagInfo) context.Context { return ctx }
func (rpcStats) HandleConn(context.Context, grpcstats.ConnStats)                       {}

// codec is gRPC's proto codec, except for Range and Txn responses: it sends
// a Range response whose key-values were encoded as they were read (see
// rangeBudgeted) without copying them, encodes one larger than
// unpooledMessageBytes into a buffer of its own (see there), and asks for
// memory to be returned to the system once gRPC has sent one of
// releaseAfterBytes or more.
type codec struct {
	encoding.CodecV2
	s *Server
}

func (c codec) Marshal(v any) (mem.BufferSlice, error) {
	var m proto.Message
	switch r := v.(type) {
	case *pb.RangeResponse:
		if enc, ok := c.s.encoded.LoadAndDelete(r); ok {
			return c.s.marshalEncoded(r, enc.(*encodedKVs).chunks)
		}
		m = r
	case *pb.TxnResponse:
		m = r // its range results can be large too
	default:
		// Watch responses and RangeStream chunks are about
		// MaxRequestBytes; nothing else grows with the data.
		return c.CodecV2.Marshal(v)
	}
	size := proto.Size(m)
	if size <= unpooledMessageBytes {
		return c.CodecV2.Marshal(v)
	}
	buf, err := proto.MarshalOptions{UseCachedSize: true}.MarshalAppend(make([]byte, 0, size), m)
	if err != nil {
		return nil, fmt.Errorf("marshal %T: %w", v, err)
	}
	if size < releaseAfterBytes {
		return mem.BufferSlice{mem.SliceBuffer(buf)}, nil
	}
	return mem.BufferSlice{mem.NewBuffer(&buf, sentBuffer{c.s})}, nil
}

// encodeKVs appends kvs to b as RangeResponse's field 2.
func encodeKVs(b []byte, kvs []*mvccpb.KeyValue) ([]byte, error) {
	var err error
	for _, kv := range kvs {
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(proto.Size(kv)))
		if b, err = (proto.MarshalOptions{UseCachedSize: true}).MarshalAppend(b, kv); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// marshalEncoded encodes r (whose Kvs are empty) around kvs, already
// encoded: the header (field 1), then the kvs (2), then more and count (3,
// 4), which is proto.Marshal's output for the whole response, without
// copying the kvs into one buffer.
func (s *Server) marshalEncoded(r *pb.RangeResponse, kvs [][]byte) (mem.BufferSlice, error) {
	head, err := proto.Marshal(&pb.RangeResponse{Header: r.Header})
	if err != nil {
		return nil, err
	}
	tail, err := proto.Marshal(&pb.RangeResponse{More: r.More, Count: r.Count})
	if err != nil {
		return nil, err
	}
	total := len(head) + len(tail)
	for _, b := range kvs {
		total += len(b)
	}
	out := make(mem.BufferSlice, 0, len(kvs)+2)
	out = append(out, mem.SliceBuffer(head))
	pool := mem.BufferPool(nopPool{})
	if total >= releaseAfterBytes {
		pool = sentBuffer{s}
	}
	for i := range kvs {
		out = append(out, mem.NewBuffer(&kvs[i], pool))
	}
	return append(out, mem.SliceBuffer(tail)), nil
}

// nopPool is the "pool" of an encoded chunk: nothing is kept.
type nopPool struct{}

func (nopPool) Get(int) *[]byte { panic("kvsql: nopPool hands out no buffers") }
func (nopPool) Put(b *[]byte)   { *b = nil }

// sentBuffer is the "pool" of a large encoded message: gRPC puts the
// buffer back when it has written it out (or dropped it), and nothing is
// kept.
type sentBuffer struct{ s *Server }

func (sentBuffer) Get(int) *[]byte { panic("kvsql: sentBuffer hands out no buffers") }

func (p sentBuffer) Put(b *[]byte) {
	*b = nil
	p.s.releaseMemory()
}

// memoryOptions returns the gRPC server options of this file.
func (s *Server) memoryOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ForceServerCodecV2(codec{CodecV2: encoding.GetCodecV2("proto"), s: s}),
		grpc.StatsHandler(rpcStats{s: s}),
	}
}

// releaseMemory asks releaser to return unused memory to the system.
func (s *Server) releaseMemory() {
	select {
	case s.release <- struct{}{}:
	default:
	}
}

// releaser returns the runtime's unused memory to the system when asked,
// releaseEvery after the request (and so at most once per releaseEvery),
// until ctx ends. The wait matters: gRPC's writer signals as it frees a
// buffer, but still holds views of it for a moment; a collection that
// started then would keep the buffer, and nothing would ask again.
func (s *Server) releaser(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.release:
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(releaseEvery):
		}
		debug.FreeOSMemory()
	}
}
