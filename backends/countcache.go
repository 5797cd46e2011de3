package backends

import (
	"bytes"
	"context"
	"sync"

	"go.etcd.io/etcd/api/v3/mvccpb"
)

// countCache carries a paginated list's count from one page to the next,
// so that a list costs one COUNT, not one per page.
//
// Every limited Range answers etcd's count: the keys in its whole range.
// A paginated list (kube-apiserver's) asks for the next page from just
// after the last key it got, with the same range end and at the same
// revision; the state at a revision never changes, so that page's count
// is this page's count minus the keys this page returned. More exactly: a
// page of a range [start, end) at revision R that held n keys, returned
// the keys up to lo and fetched hi as the first key after them, proves
// that [k, end) at R holds n - returned keys for every k with lo < k <= hi.
//
// Only Engine.Range uses it, never a Txn (whose reads may see its own
// uncommitted writes). A read at a compacted revision fails before it
// counts, and a fence moves every revision past those handed out before,
// so an entry is never asked about a state it does not describe.
type countCache struct {
	mu      sync.Mutex // guards entries and next
	entries [countCacheSize]countEntry
	next    int // the entry to overwrite next
}

// countCacheSize bounds the lists whose next page is remembered at once.
const countCacheSize = 64

type countEntry struct {
	end     []byte
	fromKey bool
	rev     int64
	lo, hi  []byte // the next page's first key k has lo < k <= hi
	count   int64
}

func (c *countCache) lookup(kr KeyRange, rev int64) (int64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i := range c.entries {
		e := &c.entries[i]
		if e.hi != nil && e.rev == rev && e.fromKey == kr.FromKey && bytes.Equal(e.end, kr.End) &&
			bytes.Compare(kr.Key, e.lo) > 0 && bytes.Compare(kr.Key, e.hi) <= 0 {
			return e.count, true
		}
	}
	return 0, false
}

func (c *countCache) store(e countEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.entries[c.next] = e
	c.next = (c.next + 1) % countCacheSize
}

// reader wraps tx for one rangeAt call at header revision cur.
func (c *countCache) reader(tx rangeReader, cur int64) rangeReader {
	return &countingReader{rangeReader: tx, cache: c, cur: cur}
}

// countingReader answers Count from the cache when an earlier page proved
// it, and remembers what its own page proves about the next one.
type countingReader struct {
	rangeReader
	cache *countCache
	cur   int64
	// page is set by a Range that filled its fetch limit: the keys it
	// will return (limit - 1 of them; rangeAt fetches one more) and the
	// next key.
	page *countEntry
	kr   KeyRange
	// returned is how many keys the page returns.
	returned int64
}

func (r *countingReader) Range(ctx context.Context, kr KeyRange, rev, limit int64, keysOnly bool) ([]*mvccpb.KeyValue, error) {
	kvs, err := r.rangeReader.Range(ctx, kr, rev, limit, keysOnly)
	r.page = nil
	if err == nil && limit >= 2 && int64(len(kvs)) == limit && !kr.Single() {
		r.kr, r.returned = kr, limit-1
		r.page = &countEntry{end: bytes.Clone(kr.End), fromKey: kr.FromKey, rev: r.revision(rev),
			lo: bytes.Clone(kvs[limit-2].Key), hi: bytes.Clone(kvs[limit-1].Key)}
	}
	return kvs, err
}

func (r *countingReader) Count(ctx context.Context, kr KeyRange, rev int64) (int64, error) {
	n, ok := r.cache.lookup(kr, r.revision(rev))
	if !ok {
		var err error
		if n, err = r.rangeReader.Count(ctx, kr, rev); err != nil {
			return 0, err
		}
	}
	if p := r.page; p != nil && p.rev == r.revision(rev) && bytes.Equal(r.kr.Key, kr.Key) &&
		bytes.Equal(r.kr.End, kr.End) && r.kr.FromKey == kr.FromKey {
		e := *p
		e.count = n - r.returned
		r.cache.store(e)
	}
	return n, nil
}

// revision names the state a read at rev sees: rev 0 is the latest, at
// the header revision.
func (r *countingReader) revision(rev int64) int64 {
	if rev == 0 {
		return r.cur
	}
	return rev
}
