// The pipelined writer: while one batch commits, the writer prepares the
// next without the write lock, on the state the committing batch will
// leave, and commits it with one checked round trip (Dialect.CommitChecked)
// as soon as the first is done. The write lock is then held for the
// database's own work (its statements and its log flush), not for round
// trips to kvsql and kvsql's evaluation of the batch; and the reads and the
// evaluation of one batch overlap the commit of the one before.
//
// Correctness rests on the check, not on the preparation: a batch commits
// only if, under the lock, the database is still at the revision it was
// prepared on (and at the auth revision its requests were permitted at).
// Every write creates a revision, so an unchanged revision means unchanged
// keys. Anything a batch would have to read beyond the latest versions of
// the keys it names (a range, a lease, a historic read, the instance's own
// lease and compaction work) is not prepared this way: such a batch runs
// under the lock as before (writer.go). So does a batch whose check
// failed, or whose predecessor failed.

package backends

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// prepared is a batch evaluated without the write lock, on the state at
// revision start.
type prepared struct {
	batch   []*writeReq
	results []error
	// o holds the batch's view and its rows; once the batch is handed to
	// commitPrepared, o.cur is the latest version, after the batch, of
	// every key it read or wrote (nil: the key does not exist), and the
	// next batch reads those keys from it rather than from the database,
	// which may not have the batch's writes yet.
	o          *overlay
	rows       []LogRow
	start, end int64 // start is -1 until the first read
	authRev    uint64
	skipped    int
	began      time.Time
	// committed is set before done is closed: the batch committed at
	// start..end, and a batch prepared on its view may follow.
	committed bool
	done      chan struct{}
}

// commitNext commits batch after prev (the batch still committing, or
// nil). As much of batch as can be prepared without the lock is, on the
// view prev leaves, and the requests queued while prev commits join it; it
// is then committed in the background with one checked round trip and
// returned. If none of batch can be prepared so, batch is committed under
// the lock, after prev, before commitNext returns. The requests taken from
// the queue but left out are returned, in order, to be the next batch.
func (e *Engine) commitNext(batch []*writeReq, prev *prepared) (committing *prepared, next []*writeReq) {
	if e.cfg.SerialWrites {
		e.commitBatch(batch)
		return nil, nil
	}
	if prev != nil {
		select {
		case <-prev.done:
			// Committed before this batch came: its view may be old by
			// now, so read afresh, as after any pause.
			if prev.committed {
				prev = nil
			}
		default:
		}
	}
	p := &prepared{o: newOverlay(needsLock{}), start: -1, began: time.Now(), done: make(chan struct{})}
	if prev != nil {
		p.start, p.end = prev.end, prev.end
	}
	all := batch
	switch n := e.extend(p, batch, prev); {
	case n == 0:
		p = nil
	case n < len(batch):
		next, all = slices.Clone(batch[n:]), p.batch
	case prev != nil:
		next, all = e.extendWhile(p, prev), p.batch
	}
	if prev != nil {
		<-prev.done
		if !prev.committed {
			p = nil // prepared on a view that did not come true
		}
	}
	// Below a revision already seen, the database went back (fence.go):
	// the locked path fences it.
	if p != nil && p.start < e.seen.Load() {
		p = nil
	}
	if p == nil {
		e.commitBatch(all)
		return nil, next
	}
	p.rows = p.o.take()
	go e.commitPrepared(p)
	return p, next
}

// extendGroup is how many requests queued while the batch before commits
// extendWhile gathers before it reads their keys and adds them: each read
// is a statement, and a few larger reads cost the database less CPU than
// one per arriving request.
const extendGroup = 16

// extendWhile adds the requests queued while prev commits to p, in groups
// of extendGroup, until prev is done or p is full. It returns the requests
// it took but did not add (a group not yet complete when prev was done, or
// the rest of one it could not add whole), to be the next batch.
func (e *Engine) extendWhile(p, prev *prepared) []*writeReq {
	var group []*writeReq
	for len(p.batch)+len(group) < e.cfg.MaxBatch {
		select {
		case <-prev.done:
			return group
		case req := <-e.writes:
			group = append(group, req)
		fill:
			for len(p.batch)+len(group) < e.cfg.MaxBatch {
				select {
				case req := <-e.writes:
					group = append(group, req)
				default:
					break fill
				}
			}
			if len(group) < extendGroup && len(p.batch)+len(group) < e.cfg.MaxBatch {
				continue
			}
			if n := e.extend(p, group, prev); n < len(group) {
				return group[n:]
			}
			group = nil
		}
	}
	return group
}

// extend evaluates reqs, or the longest prefix of them it can, after p's
// requests, without the write lock, on the state prev will leave if it
// commits (with no prev, the state the keys are read at). It stops before
// a request that reads more than its keys' latest versions or was
// permitted at another auth revision than the others, and adds nothing if
// the reads did not come from a revision that fits. It returns how many
// requests it added.
func (e *Engine) extend(p *prepared, reqs []*writeReq, prev *prepared) int {
	authRev := p.authRev
	for n, req := range reqs {
		if req.internal || req.locked || req.authRev != 0 && authRev != 0 && req.authRev != authRev {
			reqs = reqs[:n]
			break
		}
		authRev = max(authRev, req.authRev) // equal, or one of them 0
	}
	if len(reqs) == 0 {
		return 0
	}
	var keys [][]byte
	for _, req := range reqs {
		keys = append(keys, req.keys...)
	}
	o := p.o
	if prev != nil {
		for _, k := range keys {
			if _, known := o.cur[string(k)]; known {
				continue
			}
			if kv, ok := prev.o.cur[string(k)]; ok {
				o.cur[string(k)] = kv
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), e.cfg.WriteTimeout)
	defer cancel()
	if missing := o.unknown(keys); len(missing) > 0 {
		rev, kvs, err := e.readLatest(ctx, missing)
		if err != nil {
			return 0
		}
		switch {
		case prev != nil:
			// The keys prev does not touch are as prev leaves them if
			// they were read at its start or its end; a read from another
			// revision saw some other instance's writes.
			if rev != prev.start && rev != prev.end {
				return 0
			}
		case p.start < 0:
			p.start, p.end = rev, rev
		case rev != p.start:
			return 0
		}
		o.load(missing, kvs)
	}
	if p.start < 0 {
		return 0 // nothing read: no revision to check against
	}
	// Evaluate them in order; if one turns out to need the lock after all,
	// undo and evaluate the ones before it again.
	saved, pending := maps.Clone(o.cur), slices.Clone(o.pending)
	for {
		results := make([]error, len(reqs))
		skipped, rev, failed := 0, p.end, -1
		for i, req := range reqs {
			if err := req.ctx.Err(); err != nil {
				results[i] = err
				skipped++
				continue
			}
			next, err := req.apply(ctx, o, rev)
			if err != nil {
				failed = i
				break
			}
			rev = next
		}
		if failed < 0 {
			p.authRev, _ = sameAuth(p.authRev, reqs)
			p.batch, p.results = append(p.batch, reqs...), append(p.results, results...)
			p.skipped += skipped
			p.end = rev
			return len(reqs)
		}
		o.cur, o.pending = maps.Clone(saved), slices.Clone(pending)
		if failed == 0 {
			return 0
		}
		reqs = reqs[:failed]
	}
}

// sameAuth returns the auth revision reqs were permitted at, starting from
// authRev (0: none yet), and false if they were permitted at different ones.
// A request permitted at none (0) goes with any.
func sameAuth(authRev uint64, reqs []*writeReq) (uint64, bool) {
	for _, req := range reqs {
		if req.authRev == 0 {
			continue
		}
		if authRev != 0 && authRev != req.authRev {
			return 0, false
		}
		authRev = req.authRev
	}
	return authRev, true
}

// readLatest reads the latest versions of keys, MaxGetBatch per statement,
// and the revision they were read at; it fails if the statements saw
// different revisions.
func (e *Engine) readLatest(ctx context.Context, keys [][]byte) (int64, []*mvccpb.KeyValue, error) {
	var rev int64
	var all []*mvccpb.KeyValue
	for chunk := range slices.Chunk(keys, MaxGetBatch) {
		cur, kvs, err := e.d.GetLatestMany(ctx, chunk, false)
		if err != nil {
			return 0, nil, err
		}
		if rev != 0 && cur != rev {
			return 0, nil, ErrStale
		}
		rev = cur
		all = append(all, kvs...)
	}
	return rev, all, nil
}

// commitPrepared commits p with one checked round trip and answers its
// requests. If the database moved on from p's start (another instance
// wrote) or refused one of p's writes, p runs again under the lock as any
// batch does (commitBatch), so no client sees the difference.
func (e *Engine) commitPrepared(p *prepared) {
	defer close(p.done)
	ctx, cancel := context.WithTimeout(context.Background(), e.cfg.WriteTimeout)
	defer cancel()
	newRev := int64(0)
	if p.end != p.start {
		newRev = p.end
	}
	t := time.Now()
	err := e.d.CommitChecked(ctx, p.start, p.authRev, p.rows, newRev)
	st := BatchStats{Requests: len(p.batch), Took: time.Since(p.began), Commit: time.Since(t)}
	switch {
	case err == nil:
		p.committed = true
		e.observe(p.end)
		if newRev != 0 && e.cfg.OnCommit != nil {
			e.cfg.OnCommit(p.end)
		}
		st.Applied, st.Failed = st.Requests-p.skipped, p.skipped
	case errors.Is(err, ErrStale) || e.d.RefusedWrite(err):
		if e.cfg.Observer != nil {
			e.cfg.Observer.BatchReplayed()
		}
		e.commitBatch(p.batch)
		return
	default:
		err = fmt.Errorf("commit revisions %d..%d: %w", p.start+1, p.end, err)
		st.Failed, st.Err = st.Requests, err
	}
	if e.cfg.Observer != nil {
		e.cfg.Observer.BatchDone(st)
	}
	for i, req := range p.batch {
		if err != nil {
			req.done <- err
			continue
		}
		req.done <- p.results[i]
	}
}

// errNeedsLock is what a prepared batch's reads beyond its keys' latest
// versions return: the batch then runs under the write lock.
var errNeedsLock = errors.New("needs the write lock")

// needsLock is the transaction of a batch prepared without the lock: it
// answers only Revisions (for a Txn's checks of its range revisions, which
// then read the database and so need the lock anyway); every other read or
// write fails with errNeedsLock.
type needsLock struct{}

func (needsLock) Revisions(context.Context) (int64, int64, error) { return 0, -1, nil }

func (needsLock) Current(context.Context, [][]byte) ([]*mvccpb.KeyValue, error) {
	return nil, errNeedsLock
}
func (needsLock) CommitBatch(context.Context, []LogRow, int64) error    { return errNeedsLock }
func (needsLock) ReadAuth(context.Context) (AuthState, error)           { return AuthState{}, errNeedsLock }
func (needsLock) AuthRevision(context.Context) (uint64, error)          { return 0, errNeedsLock }
func (needsLock) SetRevision(context.Context, int64) error              { return errNeedsLock }
func (needsLock) SetCompact(context.Context, int64) error               { return errNeedsLock }
func (needsLock) Timeline(context.Context) (int64, error)               { return 0, errNeedsLock }
func (needsLock) Fence(context.Context, int64) (int64, error)           { return 0, errNeedsLock }
func (needsLock) Count(context.Context, KeyRange, int64) (int64, error) { return 0, errNeedsLock }
func (needsLock) Write(context.Context, []LogRow) error                 { return errNeedsLock }
func (needsLock) Range(context.Context, KeyRange, int64, int64, bool) ([]*mvccpb.KeyValue, error) {
	return nil, errNeedsLock
}
func (needsLock) Changes(context.Context, int64, int64, int) ([]*mvccpb.Event, error) {
	return nil, errNeedsLock
}
func (needsLock) History(context.Context, int64, int64, int) ([]LogRow, error) {
	return nil, errNeedsLock
}
func (needsLock) LeaseInsert(context.Context, int64, int64) (bool, error) { return false, errNeedsLock }
func (needsLock) LeaseGet(context.Context, int64) (int64, int64, bool, error) {
	return 0, 0, false, errNeedsLock
}
func (needsLock) LeaseRenew(context.Context, int64) (int64, bool, error) {
	return 0, false, errNeedsLock
}
func (needsLock) LeaseDelete(context.Context, int64) error      { return errNeedsLock }
func (needsLock) LeaseExtendAll(context.Context) (int64, error) { return 0, errNeedsLock }
func (needsLock) LeaseKeys(context.Context, int64) ([]*mvccpb.KeyValue, error) {
	return nil, errNeedsLock
}
func (needsLock) Leases(context.Context) ([]int64, error) { return nil, errNeedsLock }
func (needsLock) LeaseRows(context.Context, int64, int) ([]Lease, error) {
	return nil, errNeedsLock
}
func (needsLock) ExpiredLeases(context.Context, int) ([]int64, error)  { return nil, errNeedsLock }
func (needsLock) AlarmList(context.Context) ([]*pb.AlarmMember, error) { return nil, errNeedsLock }
func (needsLock) AlarmInsert(context.Context, uint64, int32) (bool, error) {
	return false, errNeedsLock
}
func (needsLock) AlarmDelete(context.Context, uint64, int32) (bool, error) {
	return false, errNeedsLock
}
func (needsLock) Commit() error   { return errNeedsLock }
func (needsLock) Rollback() error { return nil }

var _ Tx = needsLock{}
