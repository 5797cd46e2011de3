package backends

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
)

// fakeGetter is a LatestGetter over a map. Each statement takes its
// snapshot (rev and values) when it starts, as a database statement does,
// and then waits on hold, if set, so that tests can keep it in flight.
type fakeGetter struct {
	mu      sync.Mutex
	rev     int64
	kvs     map[string]string
	hold    chan struct{} // statements block on it until closed (nil: never)
	started chan string   // receives "one" or "many:<n>" as a statement starts
	many    [][][]byte    // keys of each GetLatestMany call
	err     error
}

func newFakeGetter() *fakeGetter {
	return &fakeGetter{rev: 1, kvs: map[string]string{}, started: make(chan string, 1000)}
}

func (f *fakeGetter) set(key, val string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rev++
	f.kvs[key] = val
}

func (f *fakeGetter) snapshot(keys [][]byte, kind string) (int64, []*mvccpb.KeyValue, chan struct{}, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if kind != "one" {
		f.many = append(f.many, keys)
	}
	var kvs []*mvccpb.KeyValue
	for _, k := range keys {
		if v, ok := f.kvs[string(k)]; ok && !slices.ContainsFunc(kvs, func(kv *mvccpb.KeyValue) bool { return string(kv.Key) == string(k) }) {
			kvs = append(kvs, &mvccpb.KeyValue{Key: k, ModRevision: f.rev, Value: []byte(v)})
		}
	}
	f.started <- kind
	return f.rev, kvs, f.hold, f.err
}

func (f *fakeGetter) wait(ctx context.Context, hold chan struct{}) error {
	if hold == nil {
		return nil
	}
	select {
	case <-hold:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (f *fakeGetter) GetLatest(ctx context.Context, key []byte, keysOnly bool) (int64, *mvccpb.KeyValue, error) {
	rev, kvs, hold, err := f.snapshot([][]byte{key}, "one")
	if werr := f.wait(ctx, hold); werr != nil {
		return 0, nil, werr
	}
	if err != nil || len(kvs) == 0 {
		return rev, nil, err
	}
	return rev, kvs[0], nil
}

func (f *fakeGetter) GetLatestMany(ctx context.Context, keys [][]byte, keysOnly bool) (int64, []*mvccpb.KeyValue, error) {
	rev, kvs, hold, err := f.snapshot(keys, fmt.Sprintf("many:%d", len(keys)))
	if werr := f.wait(ctx, hold); werr != nil {
		return 0, nil, werr
	}
	return rev, kvs, err
}

type getResult struct {
	key string
	rev int64
	kv  *mvccpb.KeyValue
	err error
}

// goGet runs b.get in a goroutine and sends its result on out.
func goGet(ctx context.Context, b *getBatcher, key string, out chan<- getResult) {
	go func() {
		rev, kv, err := b.get(ctx, []byte(key), false)
		out <- getResult{key, rev, kv, err}
	}()
}

// setHold makes the statements that start from now on wait on hold
// (nil: answer at once).
func (f *fakeGetter) setHold(hold chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.hold = hold
}

// occupy returns a batcher on f whose every slot is taken by a Get whose
// statement waits until release is called; release returns those Gets'
// answers. Statements that start in between wait on whatever f.hold is
// then: occupy leaves it nil, so they answer at once.
func occupy(t *testing.T, f *fakeGetter) (b *getBatcher, release func() []getResult) {
	t.Helper()
	hold := make(chan struct{})
	f.setHold(hold)
	b = &getBatcher{g: f, slots: DefaultGetsInFlight}
	busy := make(chan getResult, DefaultGetsInFlight)
	for i := range DefaultGetsInFlight {
		goGet(context.Background(), b, fmt.Sprintf("busy%d", i), busy)
	}
	for range DefaultGetsInFlight {
		if kind := <-f.started; kind != "one" {
			t.Fatalf("statement %q started, want a single Get", kind)
		}
	}
	f.setHold(nil)
	return b, func() []getResult {
		close(hold)
		var rs []getResult
		for range DefaultGetsInFlight {
			rs = append(rs, <-busy)
		}
		return rs
	}
}

// waitQueued waits until n requests are queued.
func waitQueued(t *testing.T, b *getBatcher, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b.mu.Lock()
		q := len(b.queue)
		b.mu.Unlock()
		if q == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d requests queued, want %d", q, n)
		}
		time.Sleep(time.Millisecond)
	}
}

// A Get that arrives while every slot is busy must not be answered by a
// statement that started before it: it would miss writes acknowledged
// before it arrived.
func TestGetBatcherReadsAfterArrival(t *testing.T) {
	f := newFakeGetter()
	b, release := occupy(t, f)
	f.set("k", "v") // acknowledged after the busy statements took their snapshot
	late := make(chan getResult, 2)
	goGet(context.Background(), b, "k", late)
	goGet(context.Background(), b, "absent", late)
	waitQueued(t, b, 2)

	for _, r := range release() {
		if r.err != nil || r.rev != 1 {
			t.Fatalf("busy get = %+v, want revision 1", r)
		}
	}
	for range 2 {
		r := <-late
		if r.err != nil || r.rev != 2 {
			t.Fatalf("get %q = rev %d, %v; want revision 2", r.key, r.rev, r.err)
		}
		switch {
		case r.key == "k" && (r.kv == nil || string(r.kv.Value) != "v"):
			t.Fatalf("get k = %v, want v", r.kv)
		case r.key == "absent" && r.kv != nil:
			t.Fatalf("get absent = %v, want nothing", r.kv)
		}
	}
	if len(f.many) != 1 || len(f.many[0]) != 2 {
		t.Fatalf("GetLatestMany calls: %q; want one with both keys", f.many)
	}
	assertIdle(t, b)
}

// Queued Gets share statements of at most MaxGetBatch keys, and each gets
// its own key's answer.
func TestGetBatcherSharesStatements(t *testing.T) {
	f := newFakeGetter()
	const n = MaxGetBatch + 6
	for i := 0; i < n; i += 2 {
		f.set(fmt.Sprintf("k%d", i), fmt.Sprintf("v%d", i)) // odd keys are absent
	}
	b, release := occupy(t, f)
	out := make(chan getResult, n)
	for i := range n {
		goGet(context.Background(), b, fmt.Sprintf("k%d", i), out)
	}
	waitQueued(t, b, n)
	release()
	for range n {
		r := <-out
		var i int
		if _, err := fmt.Sscanf(r.key, "k%d", &i); err != nil || r.err != nil {
			t.Fatalf("get %q: %v", r.key, r.err)
		}
		switch {
		case i%2 == 0 && (r.kv == nil || string(r.kv.Key) != r.key || string(r.kv.Value) != fmt.Sprintf("v%d", i)):
			t.Fatalf("get %s = %v", r.key, r.kv)
		case i%2 == 1 && r.kv != nil:
			t.Fatalf("get %s = %v, want nothing", r.key, r.kv)
		}
	}
	var sizes []int
	for _, keys := range f.many {
		sizes = append(sizes, len(keys))
	}
	slices.Sort(sizes)
	if total := func() (s int) {
		for _, n := range sizes {
			s += n
		}
		return
	}(); total != n || sizes[len(sizes)-1] > MaxGetBatch {
		t.Fatalf("GetLatestMany sizes %v: want %d keys in statements of at most %d", sizes, n, MaxGetBatch)
	}
	assertIdle(t, b)
}

// A queued Get whose caller gives up leaves the queue; a shared statement
// all of whose callers gave up is cancelled and frees its slot.
func TestGetBatcherCallerGivesUp(t *testing.T) {
	f := newFakeGetter()
	b, release := occupy(t, f)

	ctx, cancel := context.WithCancel(context.Background())
	gone := make(chan getResult, 1)
	goGet(ctx, b, "gone", gone)
	waitQueued(t, b, 1)
	cancel()
	if r := <-gone; !errors.Is(r.err, context.Canceled) {
		t.Fatalf("cancelled get = %v, want context.Canceled", r.err)
	}
	waitQueued(t, b, 0)

	// Two more wait for the next statement, which will hang; both give up.
	ctx, cancel = context.WithCancel(context.Background())
	stuck := make(chan getResult, 2)
	goGet(ctx, b, "a", stuck)
	goGet(ctx, b, "b", stuck)
	waitQueued(t, b, 2)
	f.setHold(make(chan struct{})) // never closed
	release()                      // the busy statements finish; the shared one starts and hangs
	cancel()
	for range 2 {
		if r := <-stuck; !errors.Is(r.err, context.Canceled) {
			t.Fatalf("get = %v, want context.Canceled", r.err)
		}
	}
	assertIdle(t, b) // the shared statement was cancelled: no slot is held
	for _, keys := range f.many {
		for _, k := range keys {
			if string(k) == "gone" {
				t.Fatalf("a Get that left the queue was read: %q", f.many)
			}
		}
	}
}

// A failed statement fails every Get it serves.
func TestGetBatcherError(t *testing.T) {
	f := newFakeGetter()
	b, release := occupy(t, f)
	boom := errors.New("boom")
	f.mu.Lock()
	f.err = boom
	f.mu.Unlock()
	out := make(chan getResult, 3)
	for i := range 3 {
		goGet(context.Background(), b, fmt.Sprint(i), out)
	}
	waitQueued(t, b, 3)
	release()
	for range 3 {
		if r := <-out; !errors.Is(r.err, boom) {
			t.Fatalf("get %s = %v, want %v", r.key, r.err, boom)
		}
	}
	assertIdle(t, b)
}

// assertIdle waits for every slot to be free and the queue to be empty.
func assertIdle(t *testing.T, b *getBatcher) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b.mu.Lock()
		n, q := b.inFlight, len(b.queue)
		b.mu.Unlock()
		if n == 0 && q == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d statements in flight and %d queued, want none", n, q)
		}
		time.Sleep(time.Millisecond)
	}
}
