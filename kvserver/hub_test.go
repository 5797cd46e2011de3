package kvserver

import (
	"testing"

	"go.etcd.io/etcd/api/v3/mvccpb"
)

func ev(rev int64, valueBytes int) *mvccpb.Event {
	return &mvccpb.Event{Type: mvccpb.PUT, Kv: &mvccpb.KeyValue{Key: []byte("k"), ModRevision: rev, Value: make([]byte, valueBytes)}}
}

// TestHubWindowIsBoundedByBytes: large values trim the window by size, at
// revision boundaries, and reads older than the window say so.
func TestHubWindowIsBoundedByBytes(t *testing.T) {
	t.Parallel()
	h := &hub{changed: make(chan struct{})}
	const value = 1 << 20 // 1 MiB events: the byte cap binds long before the count cap
	for rev := int64(2); rev < 2+200; rev++ {
		h.publish([]*mvccpb.Event{ev(rev, value), ev(rev, value)}) // two events per revision
	}
	if h.bytes > hubWindowBytes+hubWindowBytes/4 {
		t.Fatalf("window holds %d bytes, over the cap", h.bytes)
	}
	if h.events[0].Kv.ModRevision != h.start+1 {
		t.Fatalf("window starts mid-revision: start %d, first event at %d", h.start, h.events[0].Kv.ModRevision)
	}
	if _, _, ok := h.read(h.start-1, 10); ok {
		t.Fatal("read before the window start did not report it")
	}
	evs, upTo, ok := h.read(h.start, 3)
	if !ok || len(evs) != 4 || upTo != h.start+2 {
		t.Fatalf("read(start, 3) = %d events up to %d, %v; want 4 (whole revisions) up to %d", len(evs), upTo, ok, h.start+2)
	}
}

// TestRetryDelay: the wait for rows a source reported but the log does not
// show yet grows only while reads make no progress. Under a steady stream of
// commits on MySQL the cursor trails the binlog by a step after every read;
// a wait that kept doubling then reached its cap and delayed every event.
func TestRetryDelay(t *testing.T) {
	t.Parallel()
	w, next := retryDelay(minRetryWait, true, false)
	for range 20 {
		w, next = retryDelay(next, true, false)
	}
	if w != maxRetryWait {
		t.Fatalf("wait after 20 reads without progress = %v, want the cap %v", w, maxRetryWait)
	}
	if w, _ = retryDelay(next, true, true); w != minRetryWait {
		t.Fatalf("wait after a read that moved the cursor = %v, want %v", w, minRetryWait)
	}
	if w, _ = retryDelay(next, false, false); w != minRetryWait {
		t.Fatalf("wait state after catching up = %v, want %v", w, minRetryWait)
	}
}
