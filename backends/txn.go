// Txn evaluation: a read-only Txn on a read snapshot, any other through the
// group-commit writer; compares against the state before the Txn, every op
// checked before any runs, puts and deletes queued in the batch's overlay
// with their sub-revisions.

package backends

import (
	"bytes"
	"context"
	"fmt"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// Txn implements Backend. A read-only txn runs on a read snapshot; one with
// any Put, DeleteRange or nested Txn goes through the group-commit writer.
func (e *Engine) Txn(ctx context.Context, r *pb.TxnRequest) (*pb.TxnResponse, error) {
	if isReadOnly(r) {
		var resp *pb.TxnResponse
		err := e.read(ctx, func(tx Tx) error {
			cur, compact, err := e.revisions(ctx, tx)
			if err != nil {
				return err
			}
			t := &txnState{o: newOverlay(tx), base: cur, compact: compact, maxKey: e.cfg.MaxKeyBytes}
			if err := t.o.prefetch(ctx, txnKeys(r, nil)); err != nil {
				return err
			}
			resp, err = t.run(ctx, r)
			return err
		})
		return resp, err
	}
	var resp *pb.TxnResponse
	var userErr error
	err := e.writeKeys(ctx, txnKeys(r, nil), txnReadsMore(r), func(ctx context.Context, o *overlay, cur int64) (int64, error) {
		// apply may run again after a refused batch: start clean.
		resp, userErr = nil, nil
		_, compact, err := o.tx.Revisions(ctx)
		if err != nil {
			return cur, err
		}
		t := &txnState{o: o, base: cur, compact: compact, maxKey: e.cfg.MaxKeyBytes}
		resp, err = t.run(ctx, r)
		if err != nil {
			if isUserErr(err) && t.sub == 0 {
				userErr = err
				return cur, nil
			}
			return cur, err
		}
		if t.sub > 0 {
			return cur + 1, nil
		}
		return cur, nil
	})
	if err != nil {
		return nil, err
	}
	if userErr != nil {
		return nil, userErr
	}
	return resp, nil
}

// isReadOnly reports whether every op of both branches is a Range (etcd's
// definition: a nested txn counts as a write).
func isReadOnly(r *pb.TxnRequest) bool {
	for _, ops := range [][]*pb.RequestOp{r.Success, r.Failure} {
		for _, op := range ops {
			if op.GetRequestRange() == nil {
				return false
			}
		}
	}
	return true
}

// txnKeys appends every single key r names (compares, ops, nested txns)
// to keys: what the writer loads up front.
func txnKeys(r *pb.TxnRequest, keys [][]byte) [][]byte {
	for _, c := range r.Compare {
		if len(c.RangeEnd) == 0 {
			keys = append(keys, c.Key)
		}
	}
	for _, ops := range [][]*pb.RequestOp{r.Success, r.Failure} {
		for _, op := range ops {
			switch v := op.Request.(type) {
			case *pb.RequestOp_RequestRange:
				if len(v.RequestRange.RangeEnd) == 0 {
					keys = append(keys, v.RequestRange.Key)
				}
			case *pb.RequestOp_RequestPut:
				keys = append(keys, v.RequestPut.Key)
			case *pb.RequestOp_RequestDeleteRange:
				if len(v.RequestDeleteRange.RangeEnd) == 0 {
					keys = append(keys, v.RequestDeleteRange.Key)
				}
			case *pb.RequestOp_RequestTxn:
				keys = txnKeys(v.RequestTxn, keys)
			}
		}
	}
	return keys
}

// txnReadsMore reports whether evaluating r may read more than the latest
// versions of the keys txnKeys names: a compare or an op over a range, a
// historic read, or a put's lease.
func txnReadsMore(r *pb.TxnRequest) bool {
	for _, c := range r.Compare {
		if len(c.RangeEnd) != 0 {
			return true
		}
	}
	for _, ops := range [][]*pb.RequestOp{r.Success, r.Failure} {
		for _, op := range ops {
			switch v := op.Request.(type) {
			case *pb.RequestOp_RequestRange:
				if len(v.RequestRange.RangeEnd) != 0 || v.RequestRange.Revision != 0 {
					return true
				}
			case *pb.RequestOp_RequestPut:
				if v.RequestPut.Lease != 0 {
					return true
				}
			case *pb.RequestOp_RequestDeleteRange:
				if len(v.RequestDeleteRange.RangeEnd) != 0 {
					return true
				}
			case *pb.RequestOp_RequestTxn:
				if txnReadsMore(v.RequestTxn) {
					return true
				}
			}
		}
	}
	return false
}

// txnState evaluates one client Txn inside a database transaction.
type txnState struct {
	o       *overlay
	base    int64 // the revision before this txn
	compact int64
	sub     int64 // sub-revisions written so far; > 0 means the txn writes base+1
	maxKey  int   // longest storable key, 0: no limit
	// pre maps each key this txn touched to the mod revision of its live
	// version before the txn (0: absent). A watch event's prev_kv is the
	// key's state at the previous revision, as in etcd, even when the same
	// txn deleted and re-put the key.
	pre map[string]int64
}

// rev is the revision the txn's reads see: base, or base+1 once it wrote.
func (t *txnState) rev() int64 {
	if t.sub > 0 {
		return t.base + 1
	}
	return t.base
}

func (t *txnState) run(ctx context.Context, r *pb.TxnRequest) (*pb.TxnResponse, error) {
	// etcd evaluates every compare, nested ones included, against the state
	// before the txn, and checks every chosen op before executing any.
	path, err := t.comparePath(ctx, r)
	if err != nil {
		return nil, err
	}
	if _, err := t.check(ctx, r, path); err != nil {
		return nil, err
	}
	resp, _, err := t.exec(ctx, r, path)
	if err != nil {
		return nil, err
	}
	resp.Header = &pb.ResponseHeader{Revision: t.rev()}
	return resp, nil
}

// comparePath returns, depth first, whether each txn (this one and every
// nested one on the chosen branches) took its success branch.
func (t *txnState) comparePath(ctx context.Context, r *pb.TxnRequest) ([]bool, error) {
	ok := true
	for _, c := range r.Compare {
		m, err := t.compare(ctx, c)
		if err != nil {
			return nil, err
		}
		if !m {
			ok = false
			break
		}
	}
	path := []bool{ok}
	for _, op := range branch(r, ok) {
		if n := op.GetRequestTxn(); n != nil {
			sub, err := t.comparePath(ctx, n)
			if err != nil {
				return nil, err
			}
			path = append(path, sub...)
		}
	}
	return path, nil
}

func branch(r *pb.TxnRequest, success bool) []*pb.RequestOp {
	if success {
		return r.Success
	}
	return r.Failure
}

// compare evaluates one Compare: true when every key in its range matches.
// A missing key compares as a zero KeyValue, except for VALUE where it fails.
func (t *txnState) compare(ctx context.Context, c *pb.Compare) (bool, error) {
	kvs, err := t.current(ctx, NewKeyRange(c.Key, c.RangeEnd), c.Target != pb.Compare_VALUE)
	if err != nil {
		return false, err
	}
	if len(kvs) == 0 {
		if c.Target == pb.Compare_VALUE {
			return false, nil
		}
		return compareKV(c, &mvccpb.KeyValue{}), nil
	}
	for _, kv := range kvs {
		if !compareKV(c, kv) {
			return false, nil
		}
	}
	return true, nil
}

func compareKV(c *pb.Compare, kv *mvccpb.KeyValue) bool {
	var res int
	switch c.Target {
	case pb.Compare_VALUE:
		res = bytes.Compare(kv.Value, c.GetValue())
	case pb.Compare_CREATE:
		res = cmpInt(kv.CreateRevision, c.GetCreateRevision())
	case pb.Compare_MOD:
		res = cmpInt(kv.ModRevision, c.GetModRevision())
	case pb.Compare_VERSION:
		res = cmpInt(kv.Version, c.GetVersion())
	case pb.Compare_LEASE:
		res = cmpInt(kv.Lease, c.GetLease())
	}
	switch c.Result {
	case pb.Compare_EQUAL:
		return res == 0
	case pb.Compare_NOT_EQUAL:
		return res != 0
	case pb.Compare_GREATER:
		return res > 0
	case pb.Compare_LESS:
		return res < 0
	}
	return true
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// check validates the ops on the chosen path before any executes: range
// revisions, leases of puts, and the keys of ignore_value/ignore_lease puts.
// It returns how many path entries the nested txns consumed.
func (t *txnState) check(ctx context.Context, r *pb.TxnRequest, path []bool) (int, error) {
	used := 0
	for _, op := range branch(r, path[0]) {
		switch v := op.Request.(type) {
		case *pb.RequestOp_RequestRange:
			if err := checkRev(v.RequestRange.Revision, t.base, t.compact); err != nil {
				return 0, err
			}
		case *pb.RequestOp_RequestPut:
			if err := t.checkPut(ctx, v.RequestPut); err != nil {
				return 0, err
			}
		case *pb.RequestOp_RequestTxn:
			n, err := t.check(ctx, v.RequestTxn, path[1+used:])
			if err != nil {
				return 0, err
			}
			used += n + 1
		}
	}
	return used, nil
}

func (t *txnState) checkPut(ctx context.Context, p *pb.PutRequest) error {
	if t.maxKey > 0 && len(p.Key) > t.maxKey {
		return fmt.Errorf("%w: the key is %d bytes, and this database stores keys of at most %d bytes", ErrKeyTooLarge, len(p.Key), t.maxKey)
	}
	if p.Lease != 0 {
		_, _, found, err := t.o.tx.LeaseGet(ctx, p.Lease)
		if err != nil {
			return err
		}
		if !found {
			return ErrLeaseNotFound
		}
	}
	if p.IgnoreValue || p.IgnoreLease {
		kv, err := t.o.get(ctx, p.Key)
		if err != nil {
			return err
		}
		if kv == nil {
			return ErrKeyNotFound
		}
	}
	return nil
}

// exec runs the ops of the chosen branch and returns the response and the
// number of path entries consumed by nested txns.
func (t *txnState) exec(ctx context.Context, r *pb.TxnRequest, path []bool) (*pb.TxnResponse, int, error) {
	ops := branch(r, path[0])
	resp := &pb.TxnResponse{Succeeded: path[0], Responses: make([]*pb.ResponseOp, len(ops))}
	used := 0
	for i, op := range ops {
		switch v := op.Request.(type) {
		case *pb.RequestOp_RequestRange:
			rr, err := t.rangeOp(ctx, v.RequestRange)
			if err != nil {
				return nil, 0, err
			}
			resp.Responses[i] = &pb.ResponseOp{Response: &pb.ResponseOp_ResponseRange{ResponseRange: rr}}
		case *pb.RequestOp_RequestPut:
			pr, err := t.put(ctx, v.RequestPut)
			if err != nil {
				return nil, 0, err
			}
			resp.Responses[i] = &pb.ResponseOp{Response: &pb.ResponseOp_ResponsePut{ResponsePut: pr}}
		case *pb.RequestOp_RequestDeleteRange:
			dr, err := t.deleteRange(ctx, v.RequestDeleteRange)
			if err != nil {
				return nil, 0, err
			}
			resp.Responses[i] = &pb.ResponseOp{Response: &pb.ResponseOp_ResponseDeleteRange{ResponseDeleteRange: dr}}
		case *pb.RequestOp_RequestTxn:
			nr, n, err := t.exec(ctx, v.RequestTxn, path[1+used:])
			if err != nil {
				return nil, 0, err
			}
			used += n + 1
			// etcd leaves a nested txn's header empty: only the outermost
			// response carries the revision.
			nr.Header = &pb.ResponseHeader{}
			resp.Responses[i] = &pb.ResponseOp{Response: &pb.ResponseOp_ResponseTxn{ResponseTxn: nr}}
		}
	}
	return resp, used, nil
}

func (t *txnState) rangeOp(ctx context.Context, r *pb.RangeRequest) (*pb.RangeResponse, error) {
	return rangeAt(ctx, viewReader{t.o}, r, t.rev(), t.sub > 0)
}

// current returns the latest versions of the keys in kr: a single key from
// the overlay, a range from the database (after flushing the overlay).
func (t *txnState) current(ctx context.Context, kr KeyRange, keysOnly bool) ([]*mvccpb.KeyValue, error) {
	if kr.Single() {
		kv, err := t.o.get(ctx, kr.Key)
		if err != nil || kv == nil {
			return nil, err
		}
		return []*mvccpb.KeyValue{kv}, nil
	}
	tx, err := t.o.db(ctx)
	if err != nil {
		return nil, err
	}
	return tx.Range(ctx, kr, 0, 0, keysOnly)
}

// preRev records and returns the mod revision key had before this txn;
// cur is its current row (nil if absent), which on the first touch is
// still the pre-txn row.
func (t *txnState) preRev(key []byte, cur *mvccpb.KeyValue) int64 {
	if r, ok := t.pre[string(key)]; ok {
		return r
	}
	var r int64
	if cur != nil {
		r = cur.ModRevision
	}
	if t.pre == nil {
		t.pre = map[string]int64{}
	}
	t.pre[string(key)] = r
	return r
}

func (t *txnState) put(ctx context.Context, p *pb.PutRequest) (*pb.PutResponse, error) {
	old, err := t.o.get(ctx, p.Key)
	if err != nil {
		return nil, err
	}
	rev := t.base + 1
	row := LogRow{Rev: rev, Sub: t.sub, Key: p.Key, CreateRev: rev, Version: 1, Lease: p.Lease, Value: p.Value}
	resp := &pb.PutResponse{}
	// A put that creates the key has no prev_kv in its watch event.
	if pre := t.preRev(p.Key, old); old != nil {
		row.PrevRev = pre
	}
	if old != nil {
		row.CreateRev = old.CreateRevision
		row.Version = old.Version + 1
		if p.IgnoreValue {
			row.Value = old.Value
		}
		if p.IgnoreLease {
			row.Lease = old.Lease
		}
		if p.PrevKv {
			resp.PrevKv = old
		}
	}
	if row.Value == nil {
		row.Value = []byte{}
	}
	t.o.write(row)
	t.sub++
	resp.Header = &pb.ResponseHeader{Revision: rev}
	return resp, nil
}

func (t *txnState) deleteRange(ctx context.Context, d *pb.DeleteRangeRequest) (*pb.DeleteRangeResponse, error) {
	kvs, err := t.current(ctx, NewKeyRange(d.Key, d.RangeEnd), !d.PrevKv)
	if err != nil {
		return nil, err
	}
	resp := &pb.DeleteRangeResponse{Deleted: int64(len(kvs))}
	if d.PrevKv {
		resp.PrevKvs = kvs
	}
	if len(kvs) > 0 {
		rows := make([]LogRow, len(kvs))
		for i, kv := range kvs {
			rows[i] = LogRow{Rev: t.base + 1, Sub: t.sub + int64(i), Key: kv.Key, Deleted: true, PrevRev: t.preRev(kv.Key, kv), Value: []byte{}}
		}
		t.o.write(rows...)
		t.sub += int64(len(kvs))
	}
	resp.Header = &pb.ResponseHeader{Revision: t.rev()}
	return resp, nil
}
