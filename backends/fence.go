package backends

import (
	"context"
	"errors"
	"fmt"
)

// Fencing a database whose history went backwards.
//
// Several instances share one database, and clients remember the
// revisions they were given (kube-apiserver's resource versions, a watch's
// resume point, a compare on a mod revision). If the database is replaced
// by a copy that is behind what clients saw — a failover to an
// asynchronous replica that had not received the last commits, a restore
// from a backup — its revision counter is lower than revisions already
// handed out, and the next writes would get those numbers again for
// different data: a client's history would silently fork.
//
// So each Engine keeps the highest revision it has read from the database
// or handed out (seen), and whenever it reads the current revision — every
// read, the watch tailer after every commit, every group commit under the
// write lock — it compares. Finding the database below seen, it fences it
// in one write transaction, under the write lock: the current and compact
// revisions jump to seen + FenceJump, and kv_meta's timeline counter goes
// up. The revisions clients saw are then all compacted (reads at them fail
// with ErrCompacted, watches from them are cancelled as compacted) and none
// is handed out again. Every instance's watch tailer notices the new
// timeline (the jump of the compact revision past its cursor) and gets
// ErrNewTimeline: kvserver drops what it cached and cancels every watch as
// compacted, so that clients list again, as after an etcd restore with a
// bumped revision.
//
// Instances may each have seen a different highest revision; the first to
// notice fences past its own by FenceJump, which leaves every other
// instance's seen below the new revision unless the failover lost more than
// FenceJump revisions. An instance that starts after the failover has seen
// nothing and cannot notice: detection needs an instance that was running
// before it (docs/operations.md).

// FenceJump is how far past the highest revision it has seen an instance
// moves the database's revision when it fences it. It must exceed the
// number of revisions a failover can lose, so that the other instances'
// highest revisions are passed too. etcd recommends the same margin when
// an etcd cluster is restored from a snapshot (etcdutl snapshot restore
// --bump-revision 1000000000 --mark-compacted).
const FenceJump = 1_000_000_000

// ErrNewTimeline means that the database's history is no longer the one this
// instance read. Its revision went below one already seen (a failover to a
// replica that was behind, a restore from a backup), and this instance or
// another fenced it: every revision handed out before is compacted.
// Whatever was read from the database before is suspect; watchers must
// start again from a new list. TailChanges returns it once per fence.
var ErrNewTimeline = errors.New("the database's history went backwards (a failover to a replica that was behind?) and was fenced onto a new timeline: every earlier revision is compacted")

// RevisionObserver is implemented by backends that remember the highest
// revision handed out through them (Engine). kvserver reports the revisions
// of writes it forwarded to another instance and answered with, which this
// backend did not read itself.
type RevisionObserver interface {
	// ObserveRevision records that a client was given revision rev.
	ObserveRevision(rev int64)
}

var _ RevisionObserver = (*Engine)(nil)

// regressedError: a read found the database's current revision below the
// highest this instance has seen. It never reaches a caller of the Engine:
// the read fences the database and runs again.
type regressedError struct{ seen, cur int64 }

func (e *regressedError) Error() string {
	return fmt.Sprintf("the database is at revision %d, below revision %d this instance has seen", e.cur, e.seen)
}

// ObserveRevision implements RevisionObserver.
func (e *Engine) ObserveRevision(rev int64) { e.observe(rev) }

// observe records that revision rev was read from the database or handed
// out.
func (e *Engine) observe(rev int64) {
	for {
		s := e.seen.Load()
		if rev <= s || e.seen.CompareAndSwap(s, rev) {
			return
		}
	}
}

// A read regressed if its snapshot's revision is below a revision seen
// before the read began. Only those count: a commit this instance saw
// while a slower read was under way may well be missing from that read's
// older snapshot. Every revision seen was committed when it was seen, so a
// snapshot taken afterwards holds it unless the database went back.

// revisions reads the current and compact revisions in read transaction
// tx, and fails with a regressedError if the current revision is below one
// seen before (Engine.read then fences and runs again). Call it first in
// the transaction: PostgreSQL, MySQL and SQLite take a read transaction's
// snapshot at its first statement, after the revisions seen are read here.
func (e *Engine) revisions(ctx context.Context, tx Tx) (cur, compact int64, err error) {
	floor := e.seen.Load()
	cur, compact, err = tx.Revisions(ctx)
	if err != nil {
		return 0, 0, err
	}
	if cur < floor {
		return 0, 0, &regressedError{seen: floor, cur: cur}
	}
	e.observe(cur)
	return cur, compact, nil
}

// fence makes sure the database is not below the highest revision this
// instance has seen: it runs an empty group commit, whose batch fences the
// database under the write lock if it still needs it (see fenceIn).
func (e *Engine) fence(ctx context.Context) error {
	return e.writeInternal(ctx, func(_ context.Context, _ *overlay, rev int64) (int64, error) { return rev, nil })
}

// fenceEvent describes a fence a batch made, for the log once it commits.
type fenceEvent struct {
	seen, dbRev, to, timeline int64
}

// fenceIn fences the database in write transaction tx, whose current
// revision is start: it sets the current and compact revisions to
// seen + FenceJump and raises the timeline. It returns the new current
// revision.
func (e *Engine) fenceIn(ctx context.Context, tx Tx, start int64) (int64, *fenceEvent, error) {
	seen := e.seen.Load()
	to := max(seen, start) + FenceJump
	tl, err := tx.Fence(ctx, to)
	if err != nil {
		return start, nil, fmt.Errorf("fence the database from revision %d to %d (it is below revision %d this instance has seen): %w", start, to, seen, err)
	}
	return to, &fenceEvent{seen: seen, dbRev: start, to: to, timeline: tl}, nil
}

// logFence reports a committed fence.
func (e *Engine) logFence(f *fenceEvent) {
	e.log.Error("the database's revision went backwards: it is below a revision this instance had already seen and served "+
		"(a failover to a replica that was behind, or a restore from a backup?); the writes after it are lost. "+
		"Fenced: the current and compact revisions now jump past every revision served before, so none is reused; "+
		"reads at older revisions fail as compacted and every watch is cancelled as compacted, so clients list again",
		"seen_rev", f.seen, "database_rev", f.dbRev, "lost_revisions_at_least", f.seen-f.dbRev,
		"new_rev", f.to, "timeline", f.timeline, "database", e.cfg.Database)
}

// tailNewTimeline reads the timeline and reports whether it differs from
// the one the watch tailer last reported (then it records it): the
// database was fenced since, by this instance or another.
func (e *Engine) tailNewTimeline(ctx context.Context) (bool, error) {
	tx, err := e.d.BeginRead(ctx)
	if err != nil {
		return false, err
	}
	defer func() { _ = tx.Rollback() }()
	tl, err := tx.Timeline(ctx)
	if err != nil {
		return false, fmt.Errorf("read the database's timeline: %w", err)
	}
	prev := e.tailTimeline
	e.tailTimeline = tl
	return prev >= 0 && tl != prev, nil
}

// checkTail checks a read of the watch tailer that found the database at
// revision cur with compact revision compact, after revision after, where
// floor is the highest revision seen before the read began: it fences the
// database if cur is below floor, and returns ErrNewTimeline when the
// database was fenced since the tailer's last read (by this instance or
// another), ErrCompacted when the history after after was compacted.
func (e *Engine) checkTail(ctx context.Context, floor, after, cur, compact int64) error {
	if e.tailTimeline < 0 {
		// The first read: learn the timeline the tailer starts on.
		if _, err := e.tailNewTimeline(ctx); err != nil {
			return err
		}
	}
	if cur < floor {
		if err := e.fence(ctx); err != nil {
			return err
		}
		if _, err := e.tailNewTimeline(ctx); err != nil {
			return err
		}
		return ErrNewTimeline
	}
	e.observe(cur)
	if after+1 < compact {
		// A fence moves the compact revision past every tailer's cursor;
		// so does a compaction the tailer fell behind.
		changed, err := e.tailNewTimeline(ctx)
		if err != nil {
			return err
		}
		if changed {
			return ErrNewTimeline
		}
		return ErrCompacted
	}
	return nil
}
