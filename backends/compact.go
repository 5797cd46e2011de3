package backends

import (
	"context"
	"fmt"
	"time"
)

// DefaultCompactStepRows is how many kv_log rows one cleanup step of a
// compaction covers at most (a single revision with more rows is one step).
const DefaultCompactStepRows = 1000

// DefaultCompactSleep is EngineConfig.CompactSleep as kvsql runs it by
// default: etcd's default --compaction-sleep-interval.
const DefaultCompactSleep = 10 * time.Millisecond

// MinCompactStepRows is the fewest rows a step sized by CompactStepTime
// covers, so that a slow disk (a commit slower than the target on its
// own) still makes progress in steps of some size.
const MinCompactStepRows = 32

// CompactTx is a transaction of compaction's cleanup, from
// Dialect.BeginCompact. It removes history that no read at a revision at or
// above the compact revision needs, and records how far that has got in
// kv_compact, so that a cleanup cut short (a crash, a statement timeout, a
// lost connection) is resumed by the next compaction on any instance.
//
// It does not take the global write lock: the rows it deletes are below the
// compact revision, which no writer touches (writers only append rows above
// the current revision) and no read at a revision >= the compact revision
// reads. Reads whose snapshot predates the compaction still see the rows
// (MVCC). It holds the kv_compact row instead, so instances' cleanups take
// turns.
type CompactTx interface {
	// CleanedTo returns the revision below which every kv_log row has been
	// processed as a superseding row (compact+1 once a cleanup for compact
	// is done); locks kv_compact until Commit.
	CleanedTo(ctx context.Context) (int64, error)
	// SetCleanedTo records it.
	SetCleanedTo(ctx context.Context, rev int64) error
	// StepEnd returns where a cleanup step starting at from should end so
	// that it covers at most limit rows: the revision of the row limit rows
	// after the first one with rev >= from, or 0 when fewer than limit+1
	// rows have a revision in [from, upTo].
	StepEnd(ctx context.Context, from, upTo int64, limit int) (int64, error)
	// DeleteSuperseded removes, for the rows n with from <= n.rev < to
	// (and n.rev <= compact), every older row of n's key with a revision
	// below compact, and removes the rows among n that are tombstones with
	// a revision below compact. It returns how many rows it removed.
	DeleteSuperseded(ctx context.Context, compact, from, to int64) (int64, error)
	Commit() error
	Rollback() error
}

// Compact implements Backend. The compact revision is recorded under the
// write lock, in one short group-commit transaction; the history it frees
// is then removed by cleanHistory, outside the write lock.
func (e *Engine) Compact(ctx context.Context, rev int64) (int64, error) {
	e.compactMu.Lock()
	defer e.compactMu.Unlock()
	var header, prev int64
	var userErr error
	err := e.write(ctx, func(ctx context.Context, o *overlay, cur int64) (int64, error) {
		header, userErr = cur, nil
		tx, err := o.db(ctx)
		if err != nil {
			return cur, err
		}
		_, compact, err := tx.Revisions(ctx)
		if err != nil {
			return cur, err
		}
		switch {
		case rev <= compact:
			userErr = ErrCompacted
			return cur, nil
		case rev > cur:
			userErr = ErrFutureRev
			return cur, nil
		}
		prev = compact
		return cur, tx.SetCompact(ctx, rev)
	})
	if err != nil {
		return 0, err
	}
	if userErr != nil {
		return 0, userErr
	}
	// As etcd, the compaction is done once recorded: reads below rev fail
	// from now on. The cleanup frees space; if it is cut short, the next
	// compaction resumes it from kv_compact, so its error is logged, not
	// returned (a client retrying would only get ErrCompacted).
	if err := e.cleanHistory(context.WithoutCancel(ctx), max(prev, 0), rev); err != nil {
		e.log.Warn("removing compacted history failed; the next compaction resumes it", "compact_rev", rev, "err", err)
	}
	return header, nil
}

// cleanHistory removes the history compaction at compact has freed, in
// steps of at most CompactStepRows rows, each its own transaction, with
// CompactSleep between them. prev is
// the compact revision before it: the rows at prev are processed again,
// since a tombstone at a compact revision is kept (a watch may start
// there) and can go once the compact revision has passed it.
func (e *Engine) cleanHistory(ctx context.Context, prev, compact int64) error {
	limit := e.cfg.CompactStepRows
	if limit <= 0 {
		limit = DefaultCompactStepRows
	}
	target := e.cfg.CompactStepTime
	rows := limit
	if target > 0 {
		rows = min(MinCompactStepRows, limit)
	}
	for floor := prev; ; floor = compact + 1 {
		began := time.Now()
		done, err := e.cleanStep(ctx, floor, compact, rows)
		if err != nil || done {
			return err
		}
		if target > 0 {
			rows = nextStepRows(rows, time.Since(began), target, limit)
		}
		if e.cfg.CompactSleep > 0 {
			t := time.NewTimer(e.cfg.CompactSleep)
			select {
			case <-t.C:
			case <-e.stop:
				t.Stop()
				return nil // the next compaction resumes it
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			}
		}
	}
}

// nextStepRows sizes the next cleanup step from the last one, which
// covered rows and took took, so that a step takes about target: in
// proportion when it took longer, twice as many when it took under half,
// always between MinCompactStepRows (or limit, if lower) and limit.
func nextStepRows(rows int, took, target time.Duration, limit int) int {
	switch {
	case took > target:
		rows = int(float64(rows) * float64(target) / float64(took))
	case took < target/2:
		rows *= 2
	}
	return max(min(rows, limit), min(MinCompactStepRows, limit))
}

// cleanStep runs one cleanup step, from the recorded progress or floor if
// that is lower, and reports whether the cleanup is done.
func (e *Engine) cleanStep(ctx context.Context, floor, compact int64, limit int) (bool, error) {
	select {
	case <-e.stop:
		return true, nil // the next compaction resumes it
	default:
	}
	ctx, cancel := context.WithTimeout(ctx, e.cfg.WriteTimeout)
	defer cancel()
	tx, err := e.d.BeginCompact(ctx)
	if err != nil {
		return false, fmt.Errorf("begin cleanup: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	cleaned, err := tx.CleanedTo(ctx)
	if err != nil {
		return false, fmt.Errorf("read cleanup progress: %w", err)
	}
	from := min(cleaned, floor)
	// Another instance may have cleaned up to a later compaction already.
	if from > compact {
		return true, nil
	}
	to, err := tx.StepEnd(ctx, from, compact, limit)
	if err != nil {
		return false, fmt.Errorf("find cleanup step after revision %d: %w", from, err)
	}
	switch {
	case to == 0:
		to = compact + 1 // the rest fits in one step
	case to == from:
		to = from + 1 // one revision with more than limit rows
	}
	if _, err := tx.DeleteSuperseded(ctx, compact, from, to); err != nil {
		return false, fmt.Errorf("remove history superseded in revisions %d..%d: %w", from, to-1, err)
	}
	// Progress never goes back: another instance may have recorded more.
	if err := tx.SetCleanedTo(ctx, max(to, cleaned)); err != nil {
		return false, fmt.Errorf("record cleanup progress: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return false, fmt.Errorf("commit cleanup of revisions %d..%d: %w", from, to-1, err)
	}
	return to > compact, nil
}
