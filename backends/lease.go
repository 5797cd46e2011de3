package backends

import (
	"context"
	"fmt"
)

// expireBatch is how many expired leases one pass revokes.
const expireBatch = 256

// LeaseGrant implements Backend.
func (e *Engine) LeaseGrant(ctx context.Context, id, ttl int64) (int64, error) {
	var rev int64
	var userErr error
	err := e.write(ctx, func(ctx context.Context, o *overlay, cur int64) (int64, error) {
		rev, userErr = cur, nil
		ok, err := o.tx.LeaseInsert(ctx, id, ttl)
		if err != nil {
			return cur, fmt.Errorf("insert lease %d: %w", id, err)
		}
		if !ok {
			userErr = ErrLeaseExists
		}
		return cur, nil
	})
	if err != nil {
		return 0, err
	}
	return rev, userErr
}

// LeaseRevoke implements Backend.
func (e *Engine) LeaseRevoke(ctx context.Context, id int64) (int64, error) {
	var rev int64
	var userErr error
	err := e.write(ctx, func(ctx context.Context, o *overlay, cur int64) (int64, error) {
		userErr = nil
		next, found, err := revokeIn(ctx, o, cur, id)
		if err == nil && !found {
			userErr = ErrLeaseNotFound
		}
		rev = next
		return next, err
	})
	if err != nil {
		return 0, err
	}
	return rev, userErr
}

// revokeIn deletes lease id and its keys inside tx, all keys in one new
// revision in key order (as etcd does). It returns the revision after it.
func revokeIn(ctx context.Context, o *overlay, cur, id int64) (int64, bool, error) {
	tx, err := o.db(ctx) // the lease's keys are found by a query
	if err != nil {
		return cur, false, err
	}
	_, _, found, err := tx.LeaseGet(ctx, id)
	if err != nil || !found {
		return cur, false, err
	}
	kvs, err := tx.LeaseKeys(ctx, id)
	if err != nil {
		return cur, true, fmt.Errorf("keys of lease %d: %w", id, err)
	}
	if err := tx.LeaseDelete(ctx, id); err != nil {
		return cur, true, fmt.Errorf("delete lease %d: %w", id, err)
	}
	if len(kvs) == 0 {
		return cur, true, nil
	}
	rows := make([]LogRow, len(kvs))
	for i, kv := range kvs {
		rows[i] = LogRow{Rev: cur + 1, Sub: int64(i), Key: kv.Key, Deleted: true, PrevRev: kv.ModRevision, Value: []byte{}}
	}
	o.write(rows...)
	return cur + 1, true, nil
}

// LeaseRenew implements Backend.
func (e *Engine) LeaseRenew(ctx context.Context, id int64) (int64, error) {
	var ttl int64
	var found bool
	err := e.write(ctx, func(ctx context.Context, o *overlay, cur int64) (int64, error) {
		var err error
		ttl, found, err = o.tx.LeaseRenew(ctx, id)
		return cur, err
	})
	if err != nil {
		return 0, err
	}
	if !found {
		return 0, ErrLeaseNotFound
	}
	return ttl, nil
}

// LeasePromote implements Backend: every lease gets its full TTL again,
// as etcd's new leader gives them, so that a lease outlives the time no
// instance was expiring leases (a restart, a failover) by one TTL and its
// holder can reconnect and keep it alive.
func (e *Engine) LeasePromote(ctx context.Context) (int64, error) {
	var n int64
	err := e.writeInternal(ctx, func(ctx context.Context, o *overlay, cur int64) (int64, error) {
		var err error
		n, err = o.tx.LeaseExtendAll(ctx)
		return cur, err
	})
	if err != nil {
		return 0, err // the writer may still run apply: n is not ours to read
	}
	return n, nil
}

// LeaseInfo implements Backend.
func (e *Engine) LeaseInfo(ctx context.Context, id int64, withKeys bool) (Lease, error) {
	l := Lease{ID: id}
	err := e.read(ctx, func(tx Tx) error {
		ttl, remaining, found, err := tx.LeaseGet(ctx, id)
		if err != nil {
			return err
		}
		if !found {
			return ErrLeaseNotFound
		}
		l.GrantedTTL, l.RemainingMillis = ttl, remaining
		if withKeys {
			kvs, err := tx.LeaseKeys(ctx, id)
			if err != nil {
				return err
			}
			for _, kv := range kvs {
				l.Keys = append(l.Keys, kv.Key)
			}
		}
		return nil
	})
	return l, err
}

// Leases implements Backend.
func (e *Engine) Leases(ctx context.Context) ([]int64, error) {
	var ids []int64
	err := e.read(ctx, func(tx Tx) error {
		var err error
		ids, err = tx.Leases(ctx)
		return err
	})
	return ids, err
}

// ExpireLeases implements Backend. Each expired lease is revoked in its own
// revision, inside one group-commit batch.
func (e *Engine) ExpireLeases(ctx context.Context) (int, error) {
	n := 0
	err := e.writeInternal(ctx, func(ctx context.Context, o *overlay, cur int64) (int64, error) {
		n = 0 // apply may run again after a refused batch
		ids, err := o.tx.ExpiredLeases(ctx, expireBatch)
		if err != nil {
			return cur, fmt.Errorf("list expired leases: %w", err)
		}
		for _, id := range ids {
			next, found, err := revokeIn(ctx, o, cur, id)
			if err != nil {
				return cur, err
			}
			if found {
				n++
			}
			cur = next
		}
		return cur, nil
	})
	if err != nil {
		return 0, err // the writer may still run apply: n is not ours to read
	}
	return n, nil
}
