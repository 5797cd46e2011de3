package backends

import (
	"bytes"
	"context"
	"fmt"
	"sort"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// fakeStates is a rangeReader over fixed states by revision (0: the state
// at cur), counting its Count calls.
type fakeStates struct {
	keys   map[int64][]string // sorted
	cur    int64
	counts int
}

func (f *fakeStates) in(kr KeyRange, rev int64) []string {
	if rev == 0 {
		rev = f.cur
	}
	var out []string
	for _, k := range f.keys[rev] {
		b := []byte(k)
		if bytes.Compare(b, kr.Key) >= 0 && (kr.FromKey || bytes.Compare(b, kr.End) < 0) {
			out = append(out, k)
		}
	}
	return out
}

func (f *fakeStates) Range(_ context.Context, kr KeyRange, rev, limit int64, _ bool) ([]*mvccpb.KeyValue, error) {
	var kvs []*mvccpb.KeyValue
	for _, k := range f.in(kr, rev) {
		if limit > 0 && int64(len(kvs)) == limit {
			break
		}
		kvs = append(kvs, &mvccpb.KeyValue{Key: []byte(k), ModRevision: 1})
	}
	return kvs, nil
}

func (f *fakeStates) Count(_ context.Context, kr KeyRange, rev int64) (int64, error) {
	f.counts++
	return int64(len(f.in(kr, rev))), nil
}

func fakeKeys(n, every int) []string {
	var out []string
	for i := 0; i < n; i += every {
		out = append(out, fmt.Sprintf("/pods/%05d", i))
	}
	sort.Strings(out)
	return out
}

// A paginated list at one revision counts its range once, and every page
// still answers etcd's count: the keys left in the range at that revision.
// A page at another revision, or from a key the previous page does not
// lead to, counts again.
func TestPaginatedListCountsOnce(t *testing.T) {
	ctx := context.Background()
	f := &fakeStates{keys: map[int64][]string{10: fakeKeys(1050, 1), 11: fakeKeys(1050, 2)}, cur: 11}
	var c countCache
	page := func(key []byte, rev int64) *pb.RangeResponse {
		t.Helper()
		r := &pb.RangeRequest{Key: key, RangeEnd: []byte("/pods0"), Limit: 100, Revision: rev}
		resp, err := rangeAt(ctx, c.reader(f, f.cur), r, f.cur, false)
		if err != nil {
			t.Fatal(err)
		}
		if want := int64(len(f.in(NewKeyRange(key, r.RangeEnd), rev))); resp.Count != want {
			t.Fatalf("page from %q at %d: count %d, want %d", key, rev, resp.Count, want)
		}
		return resp
	}
	// The whole list at revision 10 (not the latest: read from history).
	key, pages := []byte("/pods/"), 0
	for {
		resp := page(key, 10)
		pages++
		if !resp.More {
			break
		}
		key = append(bytes.Clone(resp.Kvs[len(resp.Kvs)-1].Key), 0)
	}
	if pages != 11 || f.counts != 1 {
		t.Fatalf("%d pages counted %d times; want 11 pages, 1 count", pages, f.counts)
	}
	// The latest state (revision 11, half the keys) from a key where the
	// list at 10 went on: a different state, counted.
	f.counts = 0
	first := page([]byte("/pods/"), 10)
	next := append(bytes.Clone(first.Kvs[99].Key), 0)
	page(next, 0)
	if f.counts != 2 {
		t.Fatalf("a page at another revision used the count of revision 10 (%d counts, want 2)", f.counts)
	}
	// Skipping ahead to a key no page ended before: counted.
	f.counts = 0
	page([]byte("/pods/00550"), 10)
	if f.counts != 1 {
		t.Fatalf("a page from a key no page led to used a carried count (%d counts, want 1)", f.counts)
	}
	// The latest state page by page: carried while the revision stays.
	f.counts = 0
	key = []byte("/pods/")
	for {
		resp := page(key, 0)
		if !resp.More {
			break
		}
		key = append(bytes.Clone(resp.Kvs[len(resp.Kvs)-1].Key), 0)
	}
	if f.counts != 1 {
		t.Fatalf("the latest state counted %d times, want 1", f.counts)
	}
	// A write between pages (a new state at header revision 12): counted
	// again.
	f.counts = 0
	first = page([]byte("/pods/"), 0)
	f.keys[12], f.cur = fakeKeys(1050, 3), 12
	page(append(bytes.Clone(first.Kvs[99].Key), 0), 0)
	if f.counts != 2 {
		t.Fatalf("a page after a write used the count from before it (%d counts, want 2)", f.counts)
	}
}
