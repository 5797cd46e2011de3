package backends

import (
	"context"
	"errors"
	"fmt"
	"math"
)

// ErrNotEmpty is the error of a bulk load into a database that already holds data.
var ErrNotEmpty = errors.New("database is not empty")

// Loader is implemented by backends that can bulk-load a whole history
// (from an etcd snapshot, a kine database, another kvsql) into an empty
// database, keeping its revisions.
type Loader interface {
	// BeginLoad opens the load's write transaction, holding the write lock
	// until Commit or Rollback, after checking that the database is empty
	// (revision 1, never compacted, no leases); ErrNotEmpty otherwise.
	BeginLoad(ctx context.Context) (*BulkLoad, error)
}

var _ Loader = (*Engine)(nil)

// BulkLoad writes a history into an empty database in one transaction:
// nothing of it is visible until Commit, and a failed or abandoned load
// leaves the database empty. Rows are written in batches as Append
// receives them; memory holds one batch, never the history.
type BulkLoad struct {
	e  *Engine
	tx Tx
	// lastRev, lastSub is the newest row appended so far.
	lastRev, lastSub int64
	// pre maps each key touched in revision lastRev to the mod revision of
	// its live version before that revision (0: absent): a row's prev_rev,
	// as the write path records it.
	pre  map[string]int64
	done bool
}

// BeginLoad implements Loader.
func (e *Engine) BeginLoad(ctx context.Context) (*BulkLoad, error) {
	select {
	case <-e.stop:
		return nil, ErrClosed
	default:
	}
	tx, err := e.d.BeginWrite(ctx)
	if err != nil {
		return nil, fmt.Errorf("begin load transaction: %w", err)
	}
	l := &BulkLoad{e: e, tx: tx}
	if err := l.checkEmpty(ctx); err != nil {
		_ = tx.Rollback()
		return nil, err
	}
	return l, nil
}

func (l *BulkLoad) checkEmpty(ctx context.Context) error {
	cur, compact, err := l.tx.Revisions(ctx)
	if err != nil {
		return fmt.Errorf("read revisions: %w", err)
	}
	if cur != 1 || compact != -1 {
		return fmt.Errorf("%w (it is at revision %d)", ErrNotEmpty, cur)
	}
	ls, err := l.tx.LeaseRows(ctx, math.MinInt64, 1)
	if err != nil {
		return fmt.Errorf("read leases: %w", err)
	}
	if len(ls) > 0 {
		return fmt.Errorf("%w (it holds leases, lease %d among them)", ErrNotEmpty, ls[0].ID)
	}
	return nil
}

// Append writes rows, which must follow every row appended before in
// (Rev, Sub) order, each Rev at least 2 (revision 1 is the empty store's,
// as in etcd). PrevRev is ignored and computed as the write path does: the
// mod revision of the key's live version before the row's revision (0 for
// a put that creates the key). A put with Version 0 (a source that keeps
// no versions) gets one more than the live version's, or 1 if it creates
// the key; with CreateRev 0 it gets the live version's, or its own
// revision. A deleted row's CreateRev, Version, Lease and Value are
// cleared.
func (l *BulkLoad) Append(ctx context.Context, rows []LogRow) error {
	if l.done {
		return errors.New("bulk load already finished")
	}
	if len(rows) == 0 {
		return nil
	}
	o := newOverlay(l.tx)
	keys := make([][]byte, len(rows))
	for i := range rows {
		keys[i] = rows[i].Key
	}
	if err := o.prefetch(ctx, keys); err != nil {
		return fmt.Errorf("load keys: %w", err)
	}
	for _, r := range rows {
		if r.Rev < 2 {
			return fmt.Errorf("row at revision %d.%d: changes start at revision 2 (revision 1 is the empty store)", r.Rev, r.Sub)
		}
		if r.Rev < l.lastRev || (r.Rev == l.lastRev && r.Sub <= l.lastSub) {
			return fmt.Errorf("row at revision %d.%d after %d.%d: rows must come in (revision, sub-revision) order", r.Rev, r.Sub, l.lastRev, l.lastSub)
		}
		if len(r.Key) == 0 {
			return fmt.Errorf("row at revision %d.%d has an empty key", r.Rev, r.Sub)
		}
		if l.e.cfg.MaxKeyBytes > 0 && len(r.Key) > l.e.cfg.MaxKeyBytes {
			return fmt.Errorf("key %q at revision %d: %w (at most %d bytes on this database)", r.Key[:32], r.Rev, ErrKeyTooLarge, l.e.cfg.MaxKeyBytes)
		}
		if r.Rev != l.lastRev {
			clear(l.pre)
		}
		l.lastRev, l.lastSub = r.Rev, r.Sub
		old, err := o.get(ctx, r.Key)
		if err != nil {
			return fmt.Errorf("read key %q: %w", r.Key, err)
		}
		pre, seen := l.pre[string(r.Key)]
		if !seen {
			if old != nil {
				pre = old.ModRevision
			}
			if l.pre == nil {
				l.pre = map[string]int64{}
			}
			l.pre[string(r.Key)] = pre
		}
		r.PrevRev = pre
		if r.Deleted {
			r.CreateRev, r.Version, r.Lease, r.Value = 0, 0, 0, []byte{}
		} else {
			if old == nil {
				r.PrevRev = 0 // a put that creates the key has no prev_kv
			}
			if r.Version == 0 {
				r.Version = 1
				if old != nil {
					r.Version = old.Version + 1
				}
			}
			if r.CreateRev == 0 {
				r.CreateRev = r.Rev
				if old != nil {
					r.CreateRev = old.CreateRevision
				}
			}
			if r.Value == nil {
				r.Value = []byte{}
			}
		}
		o.write(r)
	}
	if err := o.flush(ctx); err != nil {
		return fmt.Errorf("write revisions up to %d: %w", l.lastRev, err)
	}
	return nil
}

// AddLease creates lease id with a TTL in seconds; it expires ttl seconds
// after the load commits unless kept alive (as a restored etcd's new
// leader gives every lease its TTL again).
func (l *BulkLoad) AddLease(ctx context.Context, id, ttl int64) error {
	if l.done {
		return errors.New("bulk load already finished")
	}
	ok, err := l.tx.LeaseInsert(ctx, id, ttl)
	if err != nil {
		return fmt.Errorf("insert lease %d: %w", id, err)
	}
	if !ok {
		return fmt.Errorf("lease %d: %w", id, ErrLeaseExists)
	}
	return nil
}

// LastRevision returns the revision of the newest row appended so far (0
// if none).
func (l *BulkLoad) LastRevision() int64 { return l.lastRev }

// Commit stores the current revision (at least the newest row's, and at
// least 1) and the compact revision (-1: never compacted) and commits.
// It then removes the history no read at or above the compact revision
// needs, as a compaction would, in batches of their own.
func (l *BulkLoad) Commit(ctx context.Context, current, compact int64) error {
	if l.done {
		return errors.New("bulk load already finished")
	}
	l.done = true
	fail := func(err error) error {
		_ = l.tx.Rollback()
		return err
	}
	switch {
	case current < max(l.lastRev, 1):
		return fail(fmt.Errorf("current revision %d is below the newest row's revision %d", current, l.lastRev))
	case compact > current:
		return fail(fmt.Errorf("compact revision %d is above the current revision %d", compact, current))
	case compact < -1 || compact == 0:
		return fail(fmt.Errorf("compact revision %d: want -1 (never compacted) or a revision", compact))
	}
	if compact != -1 {
		if err := l.tx.SetCompact(ctx, compact); err != nil {
			return fail(fmt.Errorf("store compact revision %d: %w", compact, err))
		}
	}
	if current != 1 {
		if err := l.tx.SetRevision(ctx, current); err != nil {
			return fail(fmt.Errorf("store revision %d: %w", current, err))
		}
	}
	if err := l.tx.Commit(); err != nil {
		return fmt.Errorf("commit load at revision %d: %w", current, err)
	}
	if l.e.cfg.OnCommit != nil && current != 1 {
		l.e.cfg.OnCommit(current)
	}
	if compact > 0 {
		l.e.compactMu.Lock()
		defer l.e.compactMu.Unlock()
		if err := l.e.cleanHistory(context.WithoutCancel(ctx), 0, compact); err != nil {
			return fmt.Errorf("drop history below compact revision %d: %w", compact, err)
		}
	}
	return nil
}

// Rollback abandons the load; the database stays empty. It is safe to
// call after Commit (it then does nothing).
func (l *BulkLoad) Rollback() error {
	if l.done {
		return nil
	}
	l.done = true
	return l.tx.Rollback()
}
