package backends

import (
	"bytes"
	"context"
	"sync"

	"go.etcd.io/etcd/api/v3/mvccpb"
)

// Limits of a getBatcher.
const (
	// MaxGetBatch is how many keys one coalesced Get statement reads at most.
	MaxGetBatch = 64
	// DefaultGetsInFlight is how many Get statements an instance runs at
	// once unless EngineConfig.GetsInFlight says otherwise. Requests
	// arriving while that many run wait and share the next one.
	DefaultGetsInFlight = 4
)

// getBatcher coalesces concurrent single-key Gets into shared statements,
// as etcd serves concurrent linearizable reads behind one ReadIndex.
//
// A request joins only a statement that has not been sent yet: it is queued
// on arrival, and a statement takes its keys from the queue just before it
// starts. So every statement starts after each of its requests arrived and
// sees every write acknowledged before then: the reads stay linearizable.
//
// Up to slots statements run at once. A request that finds a free
// slot runs its statement itself, on its own goroutine, with no added
// latency. When a statement finishes and requests are queued, the slot goes
// to a new goroutine that reads them together.
type getBatcher struct {
	g     LatestGetter
	slots int

	mu       sync.Mutex
	inFlight int
	queue    []*getReq
}

type getReq struct {
	key      []byte
	keysOnly bool
	done     chan getRes // buffered: the answer never waits for the caller
	// batch is the shared read serving the request; nil while it is
	// queued. Guarded by getBatcher.mu.
	batch *sharedRead
}

type getRes struct {
	cur int64
	kv  *mvccpb.KeyValue
	err error
}

// sharedRead is one statement for several requests. Its context is
// cancelled once every one of them has given up, so that a read nobody
// waits for does not hold a slot until the database answers.
type sharedRead struct {
	ctx     context.Context
	cancel  context.CancelFunc
	waiting int // requests still waiting; guarded by getBatcher.mu
}

// get returns the current revision and key's live version (nil if absent).
func (b *getBatcher) get(ctx context.Context, key []byte, keysOnly bool) (int64, *mvccpb.KeyValue, error) {
	b.mu.Lock()
	if b.inFlight < b.slots {
		b.inFlight++
		b.mu.Unlock()
		cur, kv, err := b.g.GetLatest(ctx, key, keysOnly)
		b.release()
		return cur, kv, err
	}
	req := &getReq{key: key, keysOnly: keysOnly, done: make(chan getRes, 1)}
	b.queue = append(b.queue, req)
	b.mu.Unlock()
	select {
	case r := <-req.done:
		return r.cur, r.kv, r.err
	case <-ctx.Done():
		b.leave(req)
		return 0, nil, ctx.Err()
	}
}

// leave takes a request whose caller has given up out of the queue, or
// out of its shared read's count.
func (b *getBatcher) leave(req *getReq) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if sr := req.batch; sr != nil {
		if sr.waiting--; sr.waiting == 0 {
			sr.cancel()
		}
		return
	}
	for i, r := range b.queue {
		if r == req {
			b.queue = append(b.queue[:i:i], b.queue[i+1:]...)
			return
		}
	}
}

// release gives up a slot, or hands it to a goroutine that serves the
// queued requests.
func (b *getBatcher) release() {
	if batch, sr := b.take(); batch != nil {
		go b.serve(batch, sr)
	}
}

// take removes up to MaxGetBatch queued requests and keeps the slot for
// them; with none queued it frees the slot and returns nil.
func (b *getBatcher) take() ([]*getReq, *sharedRead) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.queue) == 0 {
		b.inFlight--
		return nil, nil
	}
	n := min(len(b.queue), MaxGetBatch)
	batch := b.queue[:n:n]
	b.queue = b.queue[n:]
	if len(b.queue) == 0 {
		b.queue = nil // let the served requests' backing array go
	}
	ctx, cancel := context.WithCancel(context.Background())
	sr := &sharedRead{ctx: ctx, cancel: cancel, waiting: n}
	for _, r := range batch {
		r.batch = sr
	}
	return batch, sr
}

// serve answers batches until the queue is empty, then frees the slot.
func (b *getBatcher) serve(batch []*getReq, sr *sharedRead) {
	for batch != nil {
		b.read(sr.ctx, batch)
		sr.cancel()
		batch, sr = b.take()
	}
}

// read answers batch from one statement.
func (b *getBatcher) read(ctx context.Context, batch []*getReq) {
	if len(batch) == 1 {
		r := batch[0]
		cur, kv, err := b.g.GetLatest(ctx, r.key, r.keysOnly)
		r.done <- getRes{cur: cur, kv: kv, err: err}
		return
	}
	keys := make([][]byte, 0, len(batch))
	keysOnly := true
	for _, r := range batch {
		keys = append(keys, r.key)
		keysOnly = keysOnly && r.keysOnly
	}
	cur, kvs, err := b.g.GetLatestMany(ctx, keys, keysOnly)
	for _, r := range batch {
		res := getRes{cur: cur, err: err}
		if err == nil {
			res.kv = findKV(kvs, r.key)
		}
		r.done <- res
	}
}

// findKV returns a copy of key's entry in kvs (nil if absent): each caller
// gets its own, since the server may change what it is given.
func findKV(kvs []*mvccpb.KeyValue, key []byte) *mvccpb.KeyValue {
	for _, kv := range kvs {
		if bytes.Equal(kv.Key, key) {
			return &mvccpb.KeyValue{Key: kv.Key, CreateRevision: kv.CreateRevision, ModRevision: kv.ModRevision,
				Version: kv.Version, Lease: kv.Lease, Value: kv.Value}
		}
	}
	return nil
}
