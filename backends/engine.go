package backends

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"math"
	"sync"
	"sync/atomic"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// Defaults for EngineConfig.
const (
	// DefaultMaxBatch is how many client writes one database transaction takes at most.
	DefaultMaxBatch = 256
	// hashBatchRevs is how many revisions of history Hash reads per query.
	hashBatchRevs = 1000
	// DefaultChangesBytes is EngineConfig.ChangesBytes' default: with 1.5
	// MiB values and prev_kv, 1000 revisions could otherwise be 3 GiB.
	DefaultChangesBytes = 8 << 20
	// DefaultWriteTimeout is EngineConfig.WriteTimeout's default: far above
	// any healthy commit (milliseconds), below clients' patience.
	DefaultWriteTimeout = 15 * time.Second
	// expireBatch is how many expired leases one pass revokes.
	expireBatch = 256
)

// EngineConfig configures an Engine.
type EngineConfig struct {
	Logger *slog.Logger
	// MaxBatch caps how many client writes share one database transaction.
	MaxBatch int
	// OnCommit, if set, is called after every commit that created new
	// revisions, with the newest revision. It must not block.
	OnCommit func(rev int64)
	// Observer, if set, receives the writer's measurements.
	Observer Observer
	// MaxKeyBytes, if set, is the longest key the database can store; a put
	// of a longer key fails with ErrKeyTooLarge before anything is written.
	MaxKeyBytes int
	// GetsInFlight caps the statements concurrent plain Gets run at once
	// (see getBatcher); 0 means DefaultGetsInFlight.
	GetsInFlight int
	// CompactStepRows caps the kv_log rows one transaction of compaction's
	// cleanup covers; 0 means DefaultCompactStepRows.
	CompactStepRows int
	// ChangesBytes caps the events (keys and values, prev_kv included) one
	// read of the log returns, beyond the revision that reaches it; 0
	// means DefaultChangesBytes.
	ChangesBytes int
	// WriteTimeout bounds one group-commit transaction and one read of the
	// watch tailer; 0 means DefaultWriteTimeout.
	WriteTimeout time.Duration
	// Database names the database in errors (dialect and address, never
	// credentials), so that a client told "database error" knows which.
	Database string
}

// Observer receives the writer's measurements. Its methods are called from
// the writer's goroutine or a client's and must not block.
type Observer interface {
	// WriteQueued: a write entered the group-commit queue. Each is later
	// part of exactly one BatchDone's Requests.
	WriteQueued()
	// BatchDone: a group-commit transaction ended.
	BatchDone(BatchStats)
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
	// Took is the whole transaction, from asking for the write lock to
	// the end of the commit.
	Took time.Duration
	// Commit is the commit step alone: SQLite's COMMIT (the WAL write and
	// fsync), or on PostgreSQL and MySQL the round trip that carries the
	// batch's rows and COMMIT, which the server answers after its WAL or
	// redo-log flush. Zero if the batch failed before it.
	Commit time.Duration
	// Err is the database error that failed the batch, if any.
	Err error
}

// Engine implements Backend on a Dialect. Writes are group-committed: one
// goroutine takes every queued write into one database transaction, so that
// many clients share one fsync while each Txn keeps its own revision.
type Engine struct {
	d   Dialect
	cfg EngineConfig
	log *slog.Logger

	writes chan *writeReq
	// sendMu guards closed. Writers queue a request holding it for
	// reading; Close sets closed holding it for writing, so that once
	// closed is set no request can enter the queue after the writer has
	// drained it for the last time.
	sendMu sync.RWMutex
	closed bool
	// stop is closed by Close; done is closed when the writer has exited.
	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
	closeErr  error

	// compactMu serialises compactions on this instance.
	compactMu sync.Mutex

	// gets serves plain Gets if the dialect is a LatestGetter (else nil).
	gets *getBatcher
	// counts carries paginated lists' counts from page to page.
	counts countCache

	// seen is the highest revision this instance has read from the
	// database or handed out (see fence.go).
	seen atomic.Int64
	// tailTimeline is the database timeline the watch tailer last
	// reported, -1 before its first read; only TailChanges (one caller,
	// never concurrent) uses it.
	tailTimeline int64
}

var _ Backend = (*Engine)(nil)

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
	// internal marks the instance's own periodic work (lease expiry
	// passes, lease promotion), which the Observer is not told of: it is
	// no client's proposal.
	internal bool
}

// NewEngine starts an Engine on d. Close stops it and closes d.
func NewEngine(d Dialect, cfg EngineConfig) *Engine {
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = DefaultMaxBatch
	}
	if cfg.ChangesBytes <= 0 {
		cfg.ChangesBytes = DefaultChangesBytes
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = DefaultWriteTimeout
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	e := &Engine{
		d:      d,
		cfg:    cfg,
		log:    log,
		writes: make(chan *writeReq, cfg.MaxBatch),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),

		tailTimeline: -1,
	}
	if g, ok := d.(LatestGetter); ok {
		e.gets = &getBatcher{g: g, slots: cmp.Or(cfg.GetsInFlight, DefaultGetsInFlight)}
	}
	go e.writeLoop()
	return e
}

// Close stops the writer after the queued writes and closes the database.
func (e *Engine) Close() error {
	e.closeOnce.Do(func() {
		e.sendMu.Lock()
		e.closed = true
		e.sendMu.Unlock()
		close(e.stop)
		<-e.done
		e.closeErr = e.d.Close()
	})
	return e.closeErr
}

// write queues apply for the writer and waits for the batch to commit.
func (e *Engine) write(ctx context.Context, apply func(ctx context.Context, o *overlay, rev int64) (int64, error)) error {
	return e.writeKeys(ctx, nil, apply)
}

// writeInternal is write for the instance's own periodic work.
func (e *Engine) writeInternal(ctx context.Context, apply func(ctx context.Context, o *overlay, rev int64) (int64, error)) error {
	return e.enqueue(ctx, &writeReq{ctx: ctx, apply: apply, done: make(chan error, 1), internal: true})
}

// writeKeys is write with the single keys apply will read, so that the
// writer loads them for the whole batch in one statement.
func (e *Engine) writeKeys(ctx context.Context, keys [][]byte, apply func(ctx context.Context, o *overlay, rev int64) (int64, error)) error {
	return e.enqueue(ctx, &writeReq{ctx: ctx, keys: keys, apply: apply, done: make(chan error, 1)})
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
	for {
		select {
		case req := <-e.writes:
			batch = append(batch[:0], req)
		case <-e.stop:
			// Fail what is still queued: nobody will serve it.
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
	fill:
		for len(batch) < e.cfg.MaxBatch {
			select {
			case req := <-e.writes:
				batch = append(batch, req)
			default:
				break fill
			}
		}
		e.commitBatch(batch)
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
	for i, req := range batch {
		if err := req.ctx.Err(); err != nil {
			results[i] = err
			if !req.internal {
				skipped++
			}
			continue
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
// loads the latest versions of keys into a new overlay: in one round trip
// where the dialect is a BatchBeginner.
func (e *Engine) beginBatch(ctx context.Context, keys [][]byte) (Tx, *overlay, error) {
	if bb, ok := e.d.(BatchBeginner); ok {
		missing := newOverlay(nil).unknown(keys)
		tx, kvs, err := bb.BeginBatch(ctx, missing)
		if err != nil {
			return nil, nil, fmt.Errorf("begin write transaction: %w", err)
		}
		o := newOverlay(tx)
		o.load(missing, kvs)
		return tx, o, nil
	}
	tx, err := e.d.BeginWrite(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("begin write transaction: %w", err)
	}
	o := newOverlay(tx)
	if err := o.prefetch(ctx, keys); err != nil {
		_ = tx.Rollback()
		return nil, nil, fmt.Errorf("load keys: %w", err)
	}
	return tx, o, nil
}

// finishBatch writes the batch's queued rows, stores its newest revision
// rev (if it is past start) and commits: in one round trip where the
// transaction is a BatchCommitter. On error the transaction is over.
// commitTook receives the duration of the commit step (see
// BatchStats.Commit).
func (e *Engine) finishBatch(ctx context.Context, tx Tx, o *overlay, start, rev int64, commitTook *time.Duration) error {
	if bc, ok := tx.(BatchCommitter); ok {
		newRev := int64(0)
		if rev != start {
			newRev = rev
		}
		t := time.Now()
		err := bc.CommitBatch(ctx, o.take(), newRev)
		*commitTook = time.Since(t)
		if err != nil {
			_ = tx.Rollback()
			return fmt.Errorf("commit revisions %d..%d: %w", start+1, rev, err)
		}
		return nil
	}
	if err := o.flush(ctx); err != nil {
		_ = tx.Rollback()
		return fmt.Errorf("write revisions %d..%d: %w", start+1, rev, err)
	}
	if rev != start {
		if err := tx.SetRevision(ctx, rev); err != nil {
			_ = tx.Rollback()
			return fmt.Errorf("store revision %d: %w", rev, err)
		}
	}
	t := time.Now()
	err := tx.Commit()
	*commitTook = time.Since(t)
	if err != nil {
		return fmt.Errorf("commit revision %d: %w", rev, err)
	}
	return nil
}

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
	if e.gets != nil && isPlainGet(r) {
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
// filter, so that a LatestGetter can answer it in one statement.
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

// Hash implements Backend: a CRC-32C over every stored version at or below
// rev, in (rev, sub) order.
func (e *Engine) Hash(ctx context.Context, rev int64) (uint32, int64, error) {
	var sum uint32
	var compact int64
	err := e.read(ctx, func(tx Tx) error {
		cur, c, err := e.revisions(ctx, tx)
		if err != nil {
			return err
		}
		compact = c
		if rev == 0 {
			rev = cur
		}
		if err := checkRev(rev, cur, compact); err != nil {
			return err
		}
		h := crc32.New(crc32.MakeTable(crc32.Castagnoli))
		var buf [8]byte
		putInt := func(v int64) {
			for i := range 8 {
				buf[i] = byte(v >> (8 * i))
			}
			h.Write(buf[:])
		}
		for lo := int64(0); lo < rev; {
			hi := min(lo+hashBatchRevs, rev)
			evs, err := tx.Changes(ctx, lo, hi, e.cfg.ChangesBytes)
			if err != nil {
				return err
			}
			lo = hi
			if n := len(evs); n > 0 && eventsBytes(evs) >= e.cfg.ChangesBytes {
				lo = evs[n-1].Kv.ModRevision // cut short by size: go on after it
			}
			if len(evs) == 0 && lo < rev {
				// A gap in the log (compacted away, or the revisions a
				// fence skipped): go on before the next row there is.
				next, err := tx.History(ctx, lo, math.MaxInt64, 1)
				if err != nil {
					return err
				}
				if len(next) == 0 {
					break
				}
				lo = max(lo, next[0].Rev-1)
			}
			for _, ev := range evs {
				putInt(ev.Kv.ModRevision)
				putInt(int64(ev.Type))
				putInt(int64(len(ev.Kv.Key)))
				h.Write(ev.Kv.Key)
				putInt(ev.Kv.CreateRevision)
				putInt(ev.Kv.Version)
				putInt(ev.Kv.Lease)
				putInt(int64(len(ev.Kv.Value)))
				h.Write(ev.Kv.Value)
			}
		}
		sum = h.Sum32()
		return nil
	})
	return sum, compact, err
}

// eventsBytes sums EventBytes over evs.
func eventsBytes(evs []*mvccpb.Event) int {
	n := 0
	for _, ev := range evs {
		n += EventBytes(ev)
	}
	return n
}

var _ PoolReporter = (*Engine)(nil)

// PoolStats implements PoolReporter for dialects that report their pools
// (nil otherwise).
func (e *Engine) PoolStats() []PoolStats {
	if pr, ok := e.d.(PoolReporter); ok {
		return pr.PoolStats()
	}
	return nil
}

// Size implements Backend.
func (e *Engine) Size(ctx context.Context) (int64, int64, error) {
	size, inUse, err := e.d.Size(ctx)
	return size, inUse, e.dbErr(err)
}

// Defragment implements Backend.
func (e *Engine) Defragment(ctx context.Context) error { return e.dbErr(e.d.Defragment(ctx)) }

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

// dbErr names the database in err, unless err is a request's own failure
// or its context's, or the backend is closing.
func (e *Engine) dbErr(err error) error {
	switch {
	case err == nil, e.cfg.Database == "", isUserErr(err), errors.Is(err, ErrClosed), errors.Is(err, ErrRefused),
		errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded), errors.As(err, new(callerError)):
		return err
	}
	return fmt.Errorf("%s: %w", e.cfg.Database, err)
}

// isUserErr reports whether err is a request's own failure (reported to that
// client) rather than a database failure (which fails the batch).
func isUserErr(err error) bool {
	return errors.Is(err, ErrCompacted) || errors.Is(err, ErrFutureRev) ||
		errors.Is(err, ErrKeyNotFound) || errors.Is(err, ErrLeaseNotFound) ||
		errors.Is(err, ErrLeaseExists) || errors.Is(err, ErrKeyTooLarge)
}
