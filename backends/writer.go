// The group-commit writer: client writes queue for one goroutine, which
// applies as many as are waiting in one database transaction (write lock,
// keys loaded together, rows and the new revision sent with the commit),
// retries a batch the database refused request by request, and reports each
// batch to the Observer.

package backends

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// Observer receives the writer's measurements. Its methods are called from
// the writer's goroutine or a client's and must not block.
type Observer interface {
	// WriteQueued: a write entered the group-commit queue. Each is later
	// part of exactly one BatchDone's Requests.
	WriteQueued()
	// BatchDone: a group-commit transaction ended.
	BatchDone(BatchStats)
	// BatchReplayed: a batch prepared without the write lock (pipeline.go)
	// found the database changed, or had a write refused, and runs again
	// under the lock; its requests are reported by that run's BatchDone.
	BatchReplayed()
}

// BatchStats describes one group-commit transaction.
type BatchStats struct {
	// Requests is how many client writes the batch took from the queue
	// (the instance's own lease expiry passes are not counted): Applied
	// of them committed (those that failed on their own, such as a Put
	// with an unknown lease, count as applied: the transaction carried
	// them), Failed did not (the database failed the transaction, or the
	// client gave up while the write was queued).
	Requests, Applied, Failed int
	// Took is the whole transaction, from asking for the write lock (for
	// a batch prepared without it, from the start of its reads) to the
	// end of the commit.
	Took time.Duration
	// Commit is the commit step alone (Tx.CommitBatch): the batch's rows,
	// its revision and COMMIT — on PostgreSQL and MySQL the round trip
	// that carries them, which the server answers after its WAL or
	// redo-log flush; on SQLite the statements in process and COMMIT (the
	// WAL write and fsync). Zero if the batch failed before it.
	Commit time.Duration
	// Err is the database error that failed the batch, if any.
	Err error
}

// writeReq is one unit of work for the writer: apply runs inside the batch's
// database transaction. rev is the revision before it; apply returns the
// revision after it (rev+1 if it changed anything, else rev). A non-nil
// error from apply means the database failed and the whole batch is rolled
// back; a request's own (user-facing) failure goes into res.err instead.
// If the database refused the batch, apply runs again in a transaction of
// its own, so it must set its outputs afresh each time it runs.
type writeReq struct {
	ctx   context.Context
	keys  [][]byte // single keys apply will read: loaded for the whole batch at once
	apply func(ctx context.Context, o *overlay, rev int64) (int64, error)
	done  chan error
	// locked says apply reads more than the latest versions of keys (a
	// range, a lease, a historic revision): the request is evaluated under
	// the write lock, never prepared without it (pipeline.go).
	locked bool
	// internal marks the instance's own periodic work (lease expiry
	// passes, lease promotion), which the Observer is not told of: it is
	// no client's proposal.
	internal bool
	// authRev is the auth revision the write was permitted at
	// (WithAuthRevision), 0 for none: the write applies only if it is
	// still the stored one under the write lock.
	authRev uint64
}

// write queues apply for the writer and waits for the batch to commit.
func (e *Engine) write(ctx context.Context, apply func(ctx context.Context, o *overlay, rev int64) (int64, error)) error {
	return e.writeKeys(ctx, nil, true, apply)
}

// writeInternal is write for the instance's own periodic work.
func (e *Engine) writeInternal(ctx context.Context, apply func(ctx context.Context, o *overlay, rev int64) (int64, error)) error {
	return e.enqueue(ctx, &writeReq{ctx: ctx, apply: apply, locked: true, done: make(chan error, 1), internal: true})
}

// writeKeys is write with the single keys apply will read, so that the
// writer loads them for the whole batch in one statement; locked says apply
// reads more than their latest versions (see writeReq).
func (e *Engine) writeKeys(ctx context.Context, keys [][]byte, locked bool, apply func(ctx context.Context, o *overlay, rev int64) (int64, error)) error {
	return e.enqueue(ctx, &writeReq{ctx: ctx, keys: keys, locked: locked, apply: apply, done: make(chan error, 1), authRev: AuthRevisionOf(ctx)})
}

// enqueue hands req to the writer and waits for its batch to end.
func (e *Engine) enqueue(ctx context.Context, req *writeReq) error {
	e.sendMu.RLock()
	if e.closed {
		e.sendMu.RUnlock()
		return ErrClosed
	}
	// The writer keeps reading the queue until Close has set closed (which
	// waits for this RUnlock), so a full queue only delays this send.
	select {
	case e.writes <- req:
		if e.cfg.Observer != nil && !req.internal {
			e.cfg.Observer.WriteQueued()
		}
	case <-ctx.Done():
		e.sendMu.RUnlock()
		return ctx.Err()
	}
	e.sendMu.RUnlock()
	// Once queued the request is applied or failed by the writer. A caller
	// whose deadline passes first gets its context's error, as an etcd
	// client whose proposal timed out does: the write may still commit,
	// but it was not acknowledged. The writer may then still run apply, so
	// a caller must not read what apply sets unless this returned nil.
	select {
	case err := <-req.done:
		return e.dbErr(err)
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (e *Engine) writeLoop() {
	defer close(e.done)
	batch := make([]*writeReq, 0, e.cfg.MaxBatch)
	var committing *prepared // the batch commitPrepared is committing, if any
	var next []*writeReq     // requests taken from the queue for the next batch
	for {
		if len(next) > 0 {
			batch = append(batch[:0], next...)
		} else {
			select {
			case req := <-e.writes:
				batch = append(batch[:0], req)
			case <-e.stop:
				e.stopWriting(committing)
				return
			}
		}
	fill:
		for len(batch) < e.cfg.MaxBatch {
			select {
			case req := <-e.writes:
				batch = append(batch, req)
			default:
				break fill
			}
		}
		committing, next = e.commitNext(batch, committing)
	}
}

// stopWriting waits for the batch still committing, if any, and fails
// what is still queued: nobody will serve it.
func (e *Engine) stopWriting(committing *prepared) {
	if committing != nil {
		<-committing.done
	}
	for {
		select {
		case req := <-e.writes:
			req.done <- ErrClosed
			if e.cfg.Observer != nil && !req.internal { // Took 0: never in a transaction
				e.cfg.Observer.BatchDone(BatchStats{Requests: 1, Failed: 1, Err: ErrClosed})
			}
		default:
			return
		}
	}
}

// commitBatch applies a batch in one database transaction and answers its
// requests. If the database refuses one of the batch's writes (a value it
// cannot store, a constraint), nothing of the batch is committed; each
// request is then applied again in a transaction of its own, so that the
// refused one fails alone and the others commit (DESIGN.md, invariant 8).
func (e *Engine) commitBatch(batch []*writeReq) {
	results, st, err := e.applyBatch(batch)
	retry := errors.Is(err, ErrRefused) && len(batch) > 1
	// Every client write is reported in exactly one BatchDone: a batch
	// retried request by request is reported by the retries.
	if e.cfg.Observer != nil && st.Requests > 0 && !retry {
		e.cfg.Observer.BatchDone(st)
	}
	switch {
	case err == nil:
		for i, req := range batch {
			req.done <- results[i]
		}
	case retry:
		for _, req := range batch {
			e.commitBatch([]*writeReq{req})
		}
	default:
		for _, req := range batch {
			req.done <- err
		}
	}
}

// applyBatch applies a batch in one database transaction and returns each
// request's result, or the error that failed the whole batch (then nothing
// was committed, or, if the connection broke during the commit, the outcome
// is unknown). A refusal by the database after the write lock was taken is
// wrapped in ErrRefused. Requests whose context ended while queued are
// skipped.
func (e *Engine) applyBatch(batch []*writeReq) (results []error, st BatchStats, err error) {
	// A database that stops answering (a frozen server, a dropped network)
	// must not hold the writer, and every write queued behind this batch,
	// for long: past WriteTimeout the batch fails (its outcome unknown if
	// the commit was under way) and the next one starts on a fresh
	// connection.
	ctx, cancel := context.WithTimeout(context.Background(), e.cfg.WriteTimeout)
	defer cancel()
	began := time.Now()
	skipped := 0
	for _, req := range batch {
		if !req.internal {
			st.Requests++
		}
	}
	defer func() {
		st.Took = time.Since(began)
		if err != nil {
			st.Applied, st.Failed, st.Err = 0, st.Requests, err
		} else {
			st.Applied, st.Failed = st.Requests-skipped, skipped
		}
	}()
	var keys [][]byte
	for _, req := range batch {
		keys = append(keys, req.keys...)
	}
	// Every revision seen before the write lock is taken was committed
	// before: the locked read of kv_meta is at least the highest of them,
	// unless the database went back (fence.go).
	floor := e.seen.Load()
	tx, o, err := e.beginBatch(ctx, keys)
	if err != nil {
		return nil, st, err
	}
	refused := func(err error) error {
		if e.d.RefusedWrite(err) {
			return fmt.Errorf("%w: %w", ErrRefused, err)
		}
		return err
	}
	start, _, err := tx.Revisions(ctx)
	if err != nil {
		_ = tx.Rollback()
		return nil, st, fmt.Errorf("read revision: %w", err)
	}
	begin := start
	var fenced *fenceEvent
	if start < floor {
		if start, fenced, err = e.fenceIn(ctx, tx, start); err != nil {
			_ = tx.Rollback()
			return nil, st, err
		}
	}
	rev := start
	results = make([]error, len(batch))
	var authRev uint64 // the stored auth revision, read once when a request needs it
	for i, req := range batch {
		if err := req.ctx.Err(); err != nil {
			results[i] = err
			if !req.internal {
				skipped++
			}
			continue
		}
		if req.authRev != 0 {
			if authRev == 0 {
				if authRev, err = tx.AuthRevision(ctx); err != nil {
					_ = tx.Rollback()
					return nil, st, fmt.Errorf("read auth revision: %w", err)
				}
			}
			if req.authRev != authRev {
				// Like a request's own failure: the batch carried it.
				results[i] = ErrAuthOldRevision
				continue
			}
		}
		next, err := req.apply(ctx, o, rev)
		if err != nil {
			_ = tx.Rollback()
			return nil, st, refused(err)
		}
		rev = next
	}
	if err := e.finishBatch(ctx, tx, o, start, rev, &st.Commit); err != nil {
		return nil, st, refused(err)
	}
	e.observe(rev)
	if fenced != nil {
		e.logFence(fenced)
	}
	if rev != begin && e.cfg.OnCommit != nil {
		e.cfg.OnCommit(rev)
	}
	return results, st, nil
}

// beginBatch opens a batch's write transaction (taking the write lock) and
// loads the latest versions of keys into a new overlay (see BatchBeginner).
func (e *Engine) beginBatch(ctx context.Context, keys [][]byte) (Tx, *overlay, error) {
	missing := newOverlay(nil).unknown(keys)
	tx, kvs, err := e.d.BeginBatch(ctx, missing)
	if err != nil {
		return nil, nil, fmt.Errorf("begin write transaction: %w", err)
	}
	o := newOverlay(tx)
	o.load(missing, kvs)
	return tx, o, nil
}

// finishBatch writes the batch's queued rows, stores its newest revision
// rev (if it is past start) and commits (see BatchCommitter). On error the
// transaction is over. commitTook receives the duration of the commit step
// (see BatchStats.Commit).
func (e *Engine) finishBatch(ctx context.Context, tx Tx, o *overlay, start, rev int64, commitTook *time.Duration) error {
	newRev := int64(0)
	if rev != start {
		newRev = rev
	}
	t := time.Now()
	err := tx.CommitBatch(ctx, o.take(), newRev)
	*commitTook = time.Since(t)
	if err != nil {
		_ = tx.Rollback()
		return fmt.Errorf("commit revisions %d..%d: %w", start+1, rev, err)
	}
	return nil
}
