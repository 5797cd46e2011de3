package kvserver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/kvsql/kvsql/backends"
)

// waitWaiting waits until n takes wait on b.
func waitWaiting(t *testing.T, b *rangeBudget, n int) {
	t.Helper()
	waitFor(t, func() bool { _, w := b.state(); return w == n }, "takes to wait")
}

// waitFor polls cond until it holds, failing after 10 seconds.
func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	deadline := time.After(10 * time.Second)
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestRangeBudget: takes within the limit proceed; the oldest reservation
// proceeds over it; a younger one waits until bytes are released, or its
// context ends; a response larger than gRPC's largest message is refused.
func TestRangeBudget(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := newRangeBudget(100)
	old, young := b.reserve(), b.reserve()
	for _, step := range []struct {
		r *reservation
		n int64
	}{{old, 60}, {young, 30}, {old, 60}} {
		if err := step.r.take(ctx, step.n, true); err != nil {
			t.Fatal(err)
		}
	}
	if used, _ := b.state(); used != 150 {
		t.Fatalf("used %d, want 150 (the oldest goes over the limit)", used)
	}
	done := make(chan error, 1)
	go func() { done <- young.take(ctx, 30, true) }()
	waitWaiting(t, b, 1)
	if n := old.release(); n != 120 {
		t.Fatalf("release returned %d, want 120", n)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if used, _ := b.state(); used != 60 {
		t.Fatalf("used %d after the oldest left, want 60", used)
	}
	if n := old.release(); n != 0 {
		t.Fatalf("a second release returned %d", n)
	}

	// young is now the oldest: a third one waits for it, until canceled.
	third := b.reserve()
	if err := young.take(ctx, 100, true); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	go func() { done <- third.take(cctx, 1, true) }()
	waitWaiting(t, b, 1)
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("take after cancel: %v", err)
	}
	// Bytes already read are counted without waiting.
	if err := third.take(ctx, 50, false); err != nil {
		t.Fatal(err)
	}
	young.release()
	third.release()
	if used, w := b.state(); used != 0 || w != 0 {
		t.Fatalf("used %d, %d waiting after every release", used, w)
	}

	big := b.reserve()
	err := big.take(ctx, maxResponseBytes+1, false)
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("take over gRPC's largest message: %v, want ResourceExhausted", err)
	}
	big.release()
}

// chunkedBackend serves RangeStream from kvs in chunks of chunkKeys keys;
// a call whose gate is set sends its first chunk, then waits for the gate.
type chunkedBackend struct {
	backends.Backend
	kvs   []*mvccpb.KeyValue
	gates chan chan struct{} // one per call, nil: no wait
}

const chunkKeys = 100

func (f *chunkedBackend) RangeStream(ctx context.Context, r *pb.RangeRequest, chunkBytes int, send func([]*mvccpb.KeyValue) error) (*pb.RangeResponse, error) {
	gate := <-f.gates
	kvs := f.kvs
	for i := 0; len(kvs) > chunkKeys; i++ {
		if err := send(kvs[:chunkKeys]); err != nil {
			return nil, err
		}
		kvs = kvs[chunkKeys:]
		if i == 0 && gate != nil {
			<-gate
		}
	}
	return &pb.RangeResponse{Header: &pb.ResponseHeader{Revision: 7}, Kvs: kvs, Count: int64(len(f.kvs))}, nil
}

// TestRangeWaitsForTheBudget: a large Range takes the bytes of its result
// chunk by chunk from the budget; a second one that would exceed it waits
// until the first one is done, and both get every key.
func TestRangeWaitsForTheBudget(t *testing.T) {
	t.Parallel()
	be := &chunkedBackend{gates: make(chan chan struct{}, 2)}
	for i := range 3 * chunkKeys {
		be.kvs = append(be.kvs, &mvccpb.KeyValue{Key: fmt.Appendf(nil, "k%04d", i), Value: make([]byte, 100), ModRevision: 2})
	}
	// Auth off, as a Server has it before auth is enabled.
	ag, err := newAuthGate(Config{Logger: slog.New(slog.DiscardHandler), AuthToken: "simple", AuthTokenTTL: DefaultAuthTokenTTL, BcryptCost: 4}, false)
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{cfg: Config{}, be: be, ranges: newRangeBudget(kvsBytes(be.kvs[:chunkKeys])), auth: ag}
	k := &kvService{s: s}
	req := &pb.RangeRequest{Key: []byte("k"), RangeEnd: []byte("l")}
	gate := make(chan struct{})
	be.gates <- gate
	first := make(chan *pb.RangeResponse, 1)
	go func() {
		resp, err := k.Range(context.Background(), req)
		if err != nil {
			t.Error(err)
		}
		first <- resp
	}()
	// The first Range holds a chunk: the whole budget.
	waitFor(t, func() bool { used, _ := s.ranges.state(); return used > 0 }, "the first Range's first chunk")
	be.gates <- nil
	second := make(chan *pb.RangeResponse, 1)
	go func() {
		resp, err := k.Range(context.Background(), req)
		if err != nil {
			t.Error(err)
		}
		second <- resp
	}()
	waitWaiting(t, s.ranges, 1)
	close(gate)
	for _, ch := range []chan *pb.RangeResponse{first, second} {
		resp := <-ch
		if resp == nil {
			t.FailNow()
		}
		if len(resp.Kvs) != len(be.kvs) || resp.Count != int64(len(be.kvs)) {
			t.Fatalf("got %d kvs (count %d), want %d", len(resp.Kvs), resp.Count, len(be.kvs))
		}
		for i, kv := range resp.Kvs {
			if !proto.Equal(kv, be.kvs[i]) {
				t.Fatalf("kv %d is %v, want %v", i, kv, be.kvs[i])
			}
		}
	}
	if used, w := s.ranges.state(); used != 0 || w != 0 {
		t.Fatalf("used %d, %d waiting after both Ranges", used, w)
	}
}

// TestMarshalEncoded: a response sent with its key-values encoded in
// chunks is byte for byte what proto.Marshal makes of the whole response.
func TestMarshalEncoded(t *testing.T) {
	t.Parallel()
	resp := &pb.RangeResponse{Header: &pb.ResponseHeader{ClusterId: 1, MemberId: 2, Revision: 30, RaftTerm: 1}, More: true, Count: 12}
	var kvs []*mvccpb.KeyValue
	for i := range 10 {
		kvs = append(kvs, &mvccpb.KeyValue{Key: fmt.Appendf(nil, "key/%d", i), Value: make([]byte, i*100), CreateRevision: int64(i + 2), ModRevision: 20, Version: 3, Lease: int64(i)})
	}
	var chunks [][]byte
	for _, part := range [][]*mvccpb.KeyValue{kvs[:3], kvs[3:3], kvs[3:9], kvs[9:]} {
		b, err := encodeKVs(nil, part)
		if err != nil {
			t.Fatal(err)
		}
		chunks = append(chunks, b)
	}
	s := &Server{release: make(chan struct{}, 1)}
	out, err := s.marshalEncoded(resp, chunks)
	if err != nil {
		t.Fatal(err)
	}
	got := out.Materialize()
	full := proto.Clone(resp).(*pb.RangeResponse)
	full.Kvs = kvs
	want, err := proto.Marshal(full)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Fatalf("encoded response differs from proto.Marshal's:\n got %x\nwant %x", got, want)
	}
}
