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

// changes reads through the dialect's ChangesReader: ReadChanges for
// Changes, TailChanges (bounded by WriteTimeout) for the tailer. A database
// found below a revision seen before is fenced (fence.go): Changes then
// reads once more, TailChanges reports the new timeline (checkTail).
func (e *Engine) changes(ctx context.Context, afterRev, maxRevs int64, tail bool) ([]*mvccpb.Event, error) {
	select {
	case <-e.stop:
		return nil, ErrClosed
	default:
	}
	read := e.d.ReadChanges
	if tail {
		// The tailer has no client deadline; a read that hangs on a
		// dead connection would stop every watch on this instance.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, e.cfg.WriteTimeout)
		defer cancel()
		read = e.d.TailChanges
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

// eventsBytes sums EventBytes over evs.
func eventsBytes(evs []*mvccpb.Event) int {
	n := 0
	for _, ev := range evs {
		n += EventBytes(ev)
	}
	return n
}
