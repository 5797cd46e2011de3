// Change reads: the events of a run of revisions from kv_log, for historic
// watches (Changes) and for the one watch tailer per instance (TailChanges).

package backends

import (
	"context"
	"fmt"

	"go.etcd.io/etcd/api/v3/mvccpb"
)

// Changes implements Backend.
func (e *Engine) Changes(ctx context.Context, afterRev, maxRevs int64) ([]*mvccpb.Event, error) {
	return e.changes(ctx, afterRev, maxRevs, false)
}

// TailChanges implements Backend.
func (e *Engine) TailChanges(ctx context.Context, afterRev, maxRevs int64) ([]*mvccpb.Event, error) {
	return e.changes(ctx, afterRev, maxRevs, true)
}

func (e *Engine) changes(ctx context.Context, afterRev, maxRevs int64, tail bool) ([]*mvccpb.Event, error) {
	if cr, ok := e.d.(ChangesReader); ok {
		select {
		case <-e.stop:
			return nil, ErrClosed
		default:
		}
		read := cr.ReadChanges
		if tail {
			// The tailer has no client deadline; a read that hangs on a
			// dead connection would stop every watch on this instance.
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, e.cfg.WriteTimeout)
			defer cancel()
			read = cr.TailChanges
		}
		for attempt := 0; ; attempt++ {
			floor := e.seen.Load()
			cur, compact, evs, err := read(ctx, afterRev, afterRev+maxRevs, e.cfg.ChangesBytes)
			if err != nil {
				return nil, e.dbErr(err)
			}
			if tail {
				if err := e.checkTail(ctx, floor, afterRev, cur, compact); err != nil {
					return nil, e.dbErr(err)
				}
				return evs, nil
			}
			if cur < floor {
				re := &regressedError{seen: floor, cur: cur}
				if attempt > 0 {
					return nil, e.dbErr(fmt.Errorf("after fencing: %w", re))
				}
				if err := e.fence(ctx); err != nil {
					return nil, err
				}
				continue
			}
			e.observe(cur)
			if afterRev+1 < compact {
				return nil, ErrCompacted
			}
			return evs, nil
		}
	}
	var evs []*mvccpb.Event
	readAt := func(tx Tx, cur, compact int64) error {
		if afterRev+1 < compact {
			return ErrCompacted
		}
		upTo := min(cur, afterRev+maxRevs)
		if upTo <= afterRev {
			return nil
		}
		var err error
		evs, err = tx.Changes(ctx, afterRev, upTo, e.cfg.ChangesBytes)
		return err
	}
	if !tail {
		err := e.read(ctx, func(tx Tx) error {
			cur, compact, err := e.revisions(ctx, tx)
			if err != nil {
				return err
			}
			return readAt(tx, cur, compact)
		})
		return evs, err
	}
	floor := e.seen.Load()
	var cur, compact int64
	err := e.readOnce(ctx, func(tx Tx) error {
		var err error
		if cur, compact, err = tx.Revisions(ctx); err != nil {
			return err
		}
		if cur < floor || afterRev+1 < compact {
			return nil // checkTail tells
		}
		return readAt(tx, cur, compact)
	})
	if err != nil {
		return nil, err
	}
	if err := e.checkTail(ctx, floor, afterRev, cur, compact); err != nil {
		return nil, e.dbErr(err)
	}
	return evs, nil
}

// eventsBytes sums EventBytes over evs.
func eventsBytes(evs []*mvccpb.Event) int {
	n := 0
	for _, ev := range evs {
		n += EventBytes(ev)
	}
	return n
}
