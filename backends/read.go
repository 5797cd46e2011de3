// Reads: a read transaction on one snapshot (fenced and retried once if the
// database went back), the current revisions, Range, and the single-key Get
// that skips the transaction through the dialect's GetLatest.

package backends

import (
	"context"
	"errors"
	"fmt"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// read runs fn in a read transaction. If fn reads the revisions (with
// e.revisions) and finds the database below a revision seen before, read
// fences the database (fence.go) and runs fn once more, on a new snapshot.
func (e *Engine) read(ctx context.Context, fn func(tx Tx) error) error {
	err := e.readOnce(ctx, fn)
	var re *regressedError
	if !errors.As(err, &re) {
		return err
	}
	if err := e.fence(ctx); err != nil {
		return err
	}
	err = e.readOnce(ctx, fn)
	if errors.As(err, &re) {
		// Fenced, yet below again: another server answers (a second
		// primary?). Never serve it.
		return e.dbErr(fmt.Errorf("after fencing: %w", re))
	}
	return err
}

func (e *Engine) readOnce(ctx context.Context, fn func(tx Tx) error) error {
	select {
	case <-e.stop:
		return ErrClosed
	default:
	}
	tx, err := e.d.BeginRead(ctx)
	if err != nil {
		return e.dbErr(fmt.Errorf("begin read transaction: %w", err))
	}
	defer func() { _ = tx.Rollback() }()
	err = fn(tx)
	if errors.As(err, new(*regressedError)) {
		return err
	}
	return e.dbErr(err)
}

// Revisions implements Backend.
func (e *Engine) Revisions(ctx context.Context) (current, compact int64, err error) {
	err = e.read(ctx, func(tx Tx) error {
		current, compact, err = e.revisions(ctx, tx)
		return err
	})
	return current, compact, err
}

// Range implements Backend.
func (e *Engine) Range(ctx context.Context, r *pb.RangeRequest) (*pb.RangeResponse, error) {
	if isPlainGet(r) {
		return e.getLatest(ctx, r)
	}
	var resp *pb.RangeResponse
	err := e.read(ctx, func(tx Tx) error {
		cur, compact, err := e.revisions(ctx, tx)
		if err != nil {
			return err
		}
		// A plain Range reads the latest state for any revision <= 0
		// (inside a Txn, etcd checks negative revisions like others).
		if err := checkRev(max(r.Revision, 0), cur, compact); err != nil {
			return err
		}
		resp, err = rangeAt(ctx, e.counts.reader(tx, cur), r, cur, false)
		return err
	})
	return resp, err
}

// isPlainGet reports whether r reads one key's latest version with no
// filter, so that the dialect's GetLatest can answer it in one statement.
func isPlainGet(r *pb.RangeRequest) bool {
	return r.Revision <= 0 && len(r.RangeEnd) == 0 && !r.CountOnly &&
		r.MinModRevision == 0 && r.MaxModRevision == 0 && r.MinCreateRevision == 0 && r.MaxCreateRevision == 0
}

func (e *Engine) getLatest(ctx context.Context, r *pb.RangeRequest) (*pb.RangeResponse, error) {
	select {
	case <-e.stop:
		return nil, ErrClosed
	default:
	}
	cur, kv, err := e.getOnce(ctx, r)
	var re *regressedError
	if errors.As(err, &re) {
		if err := e.fence(ctx); err != nil {
			return nil, err
		}
		if cur, kv, err = e.getOnce(ctx, r); errors.As(err, &re) {
			err = fmt.Errorf("after fencing: %w", re)
		}
	}
	if err != nil {
		return nil, e.dbErr(err)
	}
	resp := &pb.RangeResponse{Header: &pb.ResponseHeader{Revision: cur}}
	if kv != nil {
		if r.KeysOnly {
			// as rangeAt: etcd answers keys_only from its index, which has no lease
			kv.Value = nil
			if r.SortTarget != pb.RangeRequest_VALUE {
				kv.Lease = 0
			}
		}
		resp.Kvs, resp.Count = []*mvccpb.KeyValue{kv}, 1
	}
	return resp, nil
}

// getOnce reads r's key with the getBatcher, failing with a regressedError
// if the database is below a revision seen before the read.
func (e *Engine) getOnce(ctx context.Context, r *pb.RangeRequest) (int64, *mvccpb.KeyValue, error) {
	floor := e.seen.Load()
	cur, kv, err := e.gets.get(ctx, r.Key, r.KeysOnly)
	if err != nil {
		return 0, nil, err
	}
	if cur < floor {
		return 0, nil, &regressedError{seen: floor, cur: cur}
	}
	e.observe(cur)
	return cur, kv, nil
}

// checkRev validates a requested read revision against the current and
// compact revisions; 0 means "current".
func checkRev(rev, cur, compact int64) error {
	switch {
	case rev == 0:
		return nil
	case rev > cur:
		return ErrFutureRev
	case rev < compact:
		return ErrCompacted
	}
	return nil
}
