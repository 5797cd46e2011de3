// Range reading: rangeAt answers a RangeRequest with etcd's semantics
// (limit, count, revision and create/mod filters, sort order, keys_only)
// over a rangeReader, which is a database transaction or, inside a write
// batch, a view through the batch's overlay.

package backends

import (
	"bytes"
	"context"
	"sort"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// rangeReader is what rangeAt reads through: a Tx, or a viewReader.
type rangeReader interface {
	Range(ctx context.Context, kr KeyRange, rev, limit int64, keysOnly bool) ([]*mvccpb.KeyValue, error)
	Count(ctx context.Context, kr KeyRange, rev int64) (int64, error)
}

// viewReader answers reads of one key's latest version from the overlay
// when it knows the key, and every other read from the database after
// flushing the overlay. A Get in a Txn (Kubernetes' GuaranteedUpdate has
// one in its else branch) then costs no round trip while the batch holds
// the write lock.
type viewReader struct{ o *overlay }

// known returns kr's one live version (nil if absent) when the overlay can
// answer a read of it at rev.
func (v viewReader) known(kr KeyRange, rev int64) (kv *mvccpb.KeyValue, ok bool) {
	if rev != 0 || !kr.Single() {
		return nil, false
	}
	kv, ok = v.o.cur[string(kr.Key)]
	return kv, ok
}

func (v viewReader) Range(ctx context.Context, kr KeyRange, rev, limit int64, keysOnly bool) ([]*mvccpb.KeyValue, error) {
	if kv, ok := v.known(kr, rev); ok {
		if kv == nil {
			return nil, nil
		}
		// A copy: rangeAt edits what it returns, the overlay's versions
		// are shared.
		c := &mvccpb.KeyValue{Key: kv.Key, CreateRevision: kv.CreateRevision, ModRevision: kv.ModRevision,
			Version: kv.Version, Lease: kv.Lease, Value: kv.Value}
		if keysOnly {
			c.Value = nil
		}
		return []*mvccpb.KeyValue{c}, nil
	}
	tx, err := v.o.db(ctx)
	if err != nil {
		return nil, err
	}
	return tx.Range(ctx, kr, rev, limit, keysOnly)
}

func (v viewReader) Count(ctx context.Context, kr KeyRange, rev int64) (int64, error) {
	if kv, ok := v.known(kr, rev); ok {
		if kv == nil {
			return 0, nil
		}
		return 1, nil
	}
	tx, err := v.o.db(ctx)
	if err != nil {
		return 0, err
	}
	return tx.Count(ctx, kr, rev)
}

// rangeAt answers a RangeRequest inside tx with etcd's semantics: fetch
// limit+1 (or everything when sorting or filtering), filter by revision,
// sort, truncate to limit, and count every key in the range. cur is the
// revision reads see and the header revision; dirty says that tx holds
// uncommitted writes at cur, so that only a read at exactly cur may use
// kv_current.
func rangeAt(ctx context.Context, tx rangeReader, r *pb.RangeRequest, cur int64, dirty bool) (*pb.RangeResponse, error) {
	kr := NewKeyRange(r.Key, r.RangeEnd)
	atRev := r.Revision
	if atRev <= 0 || (atRev == cur && !dirty) {
		atRev = 0 // as in etcd, a revision <= 0 reads the latest state
	}
	resp := &pb.RangeResponse{Header: &pb.ResponseHeader{Revision: cur}}
	if r.CountOnly {
		n, err := tx.Count(ctx, kr, atRev)
		if err != nil {
			return nil, err
		}
		resp.Count = n
		return resp, nil
	}
	defaultOrder := r.SortOrder == pb.RangeRequest_NONE ||
		(r.SortTarget == pb.RangeRequest_KEY && r.SortOrder == pb.RangeRequest_ASCEND)
	filters := r.MinModRevision != 0 || r.MaxModRevision != 0 || r.MinCreateRevision != 0 || r.MaxCreateRevision != 0
	limit := r.Limit
	if !defaultOrder || filters {
		limit = 0
	} else if limit > 0 {
		limit++
	}
	kvs, err := tx.Range(ctx, kr, atRev, limit, r.KeysOnly && r.SortTarget != pb.RangeRequest_VALUE)
	if err != nil {
		return nil, err
	}
	count := int64(len(kvs))
	if limit > 0 && count >= limit {
		// Truncated by the fetch limit: count the whole range.
		if count, err = tx.Count(ctx, kr, atRev); err != nil {
			return nil, err
		}
	}
	if filters {
		kvs = filterKVs(kvs, r)
	}
	sortKVs(kvs, r)
	if r.Limit > 0 && int64(len(kvs)) > r.Limit {
		kvs = kvs[:r.Limit]
		resp.More = true
	}
	if r.KeysOnly {
		// etcd answers keys_only from its in-memory index, which has no
		// lease, unless it had to read values to sort by them.
		dropLease := r.SortTarget != pb.RangeRequest_VALUE
		for _, kv := range kvs {
			kv.Value = nil
			if dropLease {
				kv.Lease = 0
			}
		}
	}
	resp.Count = count
	resp.Kvs = kvs
	return resp, nil
}

func filterKVs(kvs []*mvccpb.KeyValue, r *pb.RangeRequest) []*mvccpb.KeyValue {
	out := kvs[:0]
	for _, kv := range kvs {
		switch {
		case r.MaxModRevision != 0 && kv.ModRevision > r.MaxModRevision:
		case r.MinModRevision != 0 && kv.ModRevision < r.MinModRevision:
		case r.MaxCreateRevision != 0 && kv.CreateRevision > r.MaxCreateRevision:
		case r.MinCreateRevision != 0 && kv.CreateRevision < r.MinCreateRevision:
		default:
			out = append(out, kv)
		}
	}
	return out
}

func sortKVs(kvs []*mvccpb.KeyValue, r *pb.RangeRequest) {
	order := r.SortOrder
	if r.SortTarget != pb.RangeRequest_KEY && order == pb.RangeRequest_NONE {
		order = pb.RangeRequest_ASCEND
	}
	if order == pb.RangeRequest_NONE || (r.SortTarget == pb.RangeRequest_KEY && order == pb.RangeRequest_ASCEND) {
		return // already in key order
	}
	var cmp func(a, b *mvccpb.KeyValue) int
	switch r.SortTarget {
	case pb.RangeRequest_KEY:
		cmp = func(a, b *mvccpb.KeyValue) int { return bytes.Compare(a.Key, b.Key) }
	case pb.RangeRequest_VERSION:
		cmp = func(a, b *mvccpb.KeyValue) int { return cmpInt(a.Version, b.Version) }
	case pb.RangeRequest_CREATE:
		cmp = func(a, b *mvccpb.KeyValue) int { return cmpInt(a.CreateRevision, b.CreateRevision) }
	case pb.RangeRequest_MOD:
		cmp = func(a, b *mvccpb.KeyValue) int { return cmpInt(a.ModRevision, b.ModRevision) }
	case pb.RangeRequest_VALUE:
		cmp = func(a, b *mvccpb.KeyValue) int { return bytes.Compare(a.Value, b.Value) }
	default:
		return
	}
	// sort.Sort, not a stable sort, and descending as the reverse of
	// ascending: etcd sorts this way, and with ties (and a limit) the order
	// of equal elements decides which keys a client gets.
	var s sort.Interface = kvSorter{kvs, cmp}
	if order == pb.RangeRequest_DESCEND {
		s = sort.Reverse(s)
	}
	sort.Sort(s)
}

type kvSorter struct {
	kvs []*mvccpb.KeyValue
	cmp func(a, b *mvccpb.KeyValue) int
}

func (s kvSorter) Len() int           { return len(s.kvs) }
func (s kvSorter) Less(i, j int) bool { return s.cmp(s.kvs[i], s.kvs[j]) < 0 }
func (s kvSorter) Swap(i, j int)      { s.kvs[i], s.kvs[j] = s.kvs[j], s.kvs[i] }
