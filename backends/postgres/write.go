package postgres

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/kvsql/kvsql/backends"
)

// BeginBatch implements backends.BatchBeginner: BEGIN, the kv_meta lock
// and the read of keys go to the server as one pipeline, so the lock is held
// from the server's point of view for the round trip that answers them,
// not for three. In READ COMMITTED each statement takes its own snapshot
// when it starts, after the lock statement has finished, so the keys are
// read under the lock.
func (d *dialect) BeginBatch(ctx context.Context, keys [][]byte) (backends.Tx, []*mvccpb.KeyValue, error) {
	c, err := d.pool.Acquire(ctx)
	if err != nil {
		return nil, nil, err
	}
	t := &txn{q: c, conn: c, locked: true, sessionMillis: d.sessionMillis, plans: d.plans}
	b := &pgx.Batch{}
	b.Queue(qBeginWrite)
	// A transaction holding the write lock whose instance goes silent is
	// ended by the server after the session timeout (before the lock, so
	// that a wait for it counts as well).
	b.Queue(qIdleTxTimeout, d.sessionTimeout)
	b.Queue(qLockMeta).QueryRow(func(r pgx.Row) error { return r.Scan(&t.lockedRev, &t.lockedCompact) })
	// A statement of its own, so that its snapshot is taken after the lock
	// was granted: every auth change that committed before is seen, and no
	// other can commit until this transaction ends (UpdateAuth takes the
	// lock too).
	b.Queue(qAuthRevision).QueryRow(func(r pgx.Row) error { return r.Scan(&t.lockedAuthRev) })
	var kvs []*mvccpb.KeyValue
	if len(keys) > 0 {
		b.Queue(qCurrentMany, keys).Query(func(rows pgx.Rows) error {
			var err error
			kvs, err = backends.ScanKVs(rows)
			return err
		})
	}
	if err := c.SendBatch(ctx, b).Close(); err != nil {
		_ = t.Rollback()
		return nil, nil, fmt.Errorf("lock kv_meta: %w", err)
	}
	return t, kvs, nil
}

// CommitBatch implements backends.BatchCommitter: the kv_log and
// kv_current writes, the kv_meta update with its NOTIFY, and COMMIT go to
// the server as one pipeline. If a statement fails the server skips the
// rest, COMMIT included, and the transaction stays aborted until Rollback.
func (t *txn) CommitBatch(ctx context.Context, rows []backends.LogRow, rev int64) error {
	if t.conn == nil {
		return pgx.ErrTxClosed
	}
	if err := t.allowLargeCommit(ctx, rows); err != nil {
		return err
	}
	b := &pgx.Batch{}
	if len(rows) > 0 {
		queueWrite(b, rows)
	}
	if rev > 0 {
		b.Queue(qSetRevision, rev)
	}
	b.Queue("COMMIT").Exec(checkCommit)
	if err := t.conn.SendBatch(ctx, b).Close(); err != nil {
		return err
	}
	t.release()
	if rev > 0 {
		t.lockedRev = rev
		if t.plans != nil {
			t.plans.committed(rev)
		}
	}
	return nil
}

// CommitChecked implements backends.CheckedCommitter: BEGIN, the kv_meta
// lock, the check, the kv_log and kv_current writes, the kv_meta update
// with its NOTIFY, and COMMIT are one pipeline, one round trip. The check
// is a statement of its own after the lock, so that its snapshot is taken
// once the lock is granted; it divides by zero if the revision or the auth
// revision is not the expected one, and the server then skips the rest.
func (d *dialect) CommitChecked(ctx context.Context, start int64, authRev uint64, rows []backends.LogRow, rev int64) error {
	c, err := d.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	t := &txn{q: c, conn: c, locked: true, sessionMillis: d.sessionMillis}
	b := &pgx.Batch{}
	b.Queue(qBeginWrite)
	b.Queue(qIdleTxTimeout, t.idleTimeout(rows))
	b.Queue(qLockMeta)
	b.Queue(qCheckAt, start, int64(authRev))
	if len(rows) > 0 {
		queueWrite(b, rows)
	}
	if rev > 0 {
		b.Queue(qSetRevision, rev)
	}
	b.Queue("COMMIT").Exec(checkCommit)
	if err := c.SendBatch(ctx, b).Close(); err != nil {
		_ = t.Rollback()
		var pe *pgconn.PgError
		if errors.As(err, &pe) && pe.Code == codeCheckFailed {
			return fmt.Errorf("%w: not at revision %d and auth revision %d", backends.ErrStale, start, authRev)
		}
		return err
	}
	t.release()
	if rev > 0 {
		d.plans.committed(rev)
	}
	return nil
}

// codeCheckFailed is division_by_zero, qCheckAt's failure; no other
// statement of a write transaction divides.
const codeCheckFailed = "22012"

// Large commits get more of idle_in_transaction_session_timeout: from
// largeCommitBytes on, largeCommitAllowance per MiB, at most
// maxCommitAllowance more.
const (
	largeCommitBytes     = 1 << 20
	largeCommitAllowance = 250 * time.Millisecond
	maxCommitAllowance   = 30 * time.Second
)

// allowLargeCommit raises the write transaction's idle timeout before a
// commit of rows of largeCommitBytes or more. PostgreSQL runs that timer
// from its last answer until the next message has arrived whole, so a
// commit of tens of MiB that a client short of CPU encodes and sends for
// longer than the session timeout had its session ended under it (the
// client saw a broken pipe, TestLargeValuesInOneBatch under load). The
// setting goes in a round trip of its own, which arrives at once; only
// large commits pay it. The timeout stays bounded, so that an instance
// frozen in the middle of a large commit still loses the write lock.
func (t *txn) allowLargeCommit(ctx context.Context, rows []backends.LogRow) error {
	n := rowBytes(rows)
	if n < largeCommitBytes {
		return nil
	}
	if _, err := t.conn.Exec(ctx, qIdleTxTimeout, t.idleTimeout(rows)); err != nil {
		return fmt.Errorf("raise the idle timeout for a commit of %d bytes: %w", n, err)
	}
	return nil
}

// idleTimeout returns the idle timeout, as a setting's text, for a write
// transaction that commits rows: the session timeout, raised for large
// commits as allowLargeCommit describes.
func (t *txn) idleTimeout(rows []backends.LogRow) string {
	ms := t.sessionMillis
	if n := rowBytes(rows); n >= largeCommitBytes {
		ms += min(time.Duration(n>>20)*largeCommitAllowance, maxCommitAllowance).Milliseconds()
	}
	return strconv.FormatInt(ms, 10)
}

// rowBytes returns the bytes of rows' keys and values.
func rowBytes(rows []backends.LogRow) int {
	n := 0
	for _, r := range rows {
		n += len(r.Key) + len(r.Value)
	}
	return n
}

// Write appends rows to kv_log and applies the newest row of each key to
// kv_current: two statements however many rows there are, in one round trip.
func (t *txn) Write(ctx context.Context, rows []backends.LogRow) error {
	if len(rows) == 0 {
		return nil
	}
	b := &pgx.Batch{}
	queueWrite(b, rows)
	if err := t.q.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("write revisions %d..%d: %w", rows[0].Rev, rows[len(rows)-1].Rev, err)
	}
	return nil
}

// queueWrite queues the two statements of Write on b.
func queueWrite(b *pgx.Batch, rows []backends.LogRow) {
	n := len(rows)
	revs, subs, creates, prevs, versions, leases := make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n)
	keys, values := make([][]byte, n), make([][]byte, n)
	deleted := make([]bool, n)
	last := make(map[string]int, n)
	for i, r := range rows {
		revs[i], subs[i], keys[i], deleted[i] = r.Rev, r.Sub, r.Key, r.Deleted
		creates[i], prevs[i], versions[i], leases[i], values[i] = r.CreateRev, r.PrevRev, r.Version, r.Lease, r.Value
		if values[i] == nil {
			values[i] = []byte{}
		}
		last[string(r.Key)] = i
	}
	b.Queue(qAppendLog, revs, subs, keys, deleted, creates, prevs, versions, leases, values)
	m := len(last)
	cKeys := make([][]byte, 0, m)
	cDeleted := make([]bool, 0, m)
	cCreates, cMods, cSubs := make([]int64, 0, m), make([]int64, 0, m), make([]int64, 0, m)
	cVersions, cLeases := make([]int64, 0, m), make([]int64, 0, m)
	for i := range rows {
		if last[string(rows[i].Key)] != i {
			continue
		}
		cKeys, cDeleted = append(cKeys, keys[i]), append(cDeleted, deleted[i])
		cCreates, cMods, cSubs = append(cCreates, creates[i]), append(cMods, revs[i]), append(cSubs, subs[i])
		cVersions, cLeases = append(cVersions, versions[i]), append(cLeases, leases[i])
	}
	b.Queue(qApplyCurrent, cKeys, cDeleted, cCreates, cMods, cSubs, cVersions, cLeases)
}

// Current implements backends.CurrentGetter.
func (t *txn) Current(ctx context.Context, keys [][]byte) ([]*mvccpb.KeyValue, error) {
	return t.queryKVs(ctx, qCurrentMany, keys)
}

// RefusedWrite implements backends.Dialect: a data exception (class 22), an
// integrity constraint (23) or a program limit such as an index row too
// large (54). The server then aborts the transaction.
func (d *dialect) RefusedWrite(err error) bool {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || len(pe.Code) < 2 {
		return false
	}
	switch pe.Code[:2] {
	case "22", "23", "54":
		return true
	}
	return false
}
