package backends

import (
	"context"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// KeyRange selects keys the way etcd's (key, range_end) pair does.
type KeyRange struct {
	Key []byte
	// End is exclusive. Nil with FromKey false selects the single key Key.
	End []byte
	// FromKey selects every key >= Key (etcd's range_end "\x00").
	FromKey bool
}

// NewKeyRange interprets an etcd (key, range_end) pair.
func NewKeyRange(key, end []byte) KeyRange {
	switch {
	case len(end) == 0:
		return KeyRange{Key: key}
	case len(end) == 1 && end[0] == 0:
		return KeyRange{Key: key, FromKey: true}
	default:
		return KeyRange{Key: key, End: end}
	}
}

// Single reports whether the range names exactly one key.
func (kr KeyRange) Single() bool { return kr.End == nil && !kr.FromKey }

// LogRow is one row of kv_log: one change of one key at (Rev, Sub).
type LogRow struct {
	Rev, Sub  int64
	Key       []byte
	Deleted   bool
	CreateRev int64
	// PrevRev is the mod revision of the live version this row replaces or
	// deletes, 0 when the key did not exist.
	PrevRev int64
	Version int64
	Lease   int64
	Value   []byte
}

// Dialect is one SQL database: every role below, each implemented by every
// dialect (each dialect asserts each role at compile time), so that the
// Engine has one path for each step and what runs does not depend on which
// database it is. Implementations live in backends/<database>.
type Dialect interface {
	ReadBeginner
	BatchBeginner
	CheckedCommitter
	CompactBeginner
	LatestGetter
	ChangesReader
	ErrorClasser
	PoolReporter
	AuthStore
	Maintainer
	// Close closes the database.
	Close() error
}

// ReadBeginner opens read transactions: Range, Txn without writes,
// snapshots, Hash and historic reads.
type ReadBeginner interface {
	// BeginRead opens a read-only transaction on one consistent snapshot.
	BeginRead(ctx context.Context) (Tx, error)
}

// BatchBeginner opens write transactions: the group-commit writer's, and a
// snapshot restore's. The lock is taken by the transaction's first
// statement, so the keys BeginBatch reads are read under it. Every round
// trip spent under the lock is spent by every writer of every instance
// waiting for it, so a dialect does in one round trip what it can
// (PostgreSQL pipelines the statements, MySQL sends them as one
// multi-statement query; SQLite is in-process).
type BatchBeginner interface {
	// BeginWrite opens a read-write transaction holding the global write
	// lock (the kv_meta row) until Commit or Rollback, so that revisions
	// commit in revision order.
	BeginWrite(ctx context.Context) (Tx, error)
	// BeginBatch is BeginWrite followed by Tx.Current(keys) in the new
	// transaction. keys are distinct; with none, nothing is read.
	BeginBatch(ctx context.Context, keys [][]byte) (Tx, []*mvccpb.KeyValue, error)
}

// CheckedCommitter commits a group-commit batch that the writer prepared
// without the write lock (pipeline.go): the lock, a check that nothing
// changed since, the batch's rows, its revision and the commit, in one
// round trip where the database allows. The lock is then held for the
// server's own work only, and the writer prepares the next batch while
// this one commits.
type CheckedCommitter interface {
	// CommitChecked opens a write transaction, takes the write lock and
	// checks that the current revision is start and, if authRev is not 0,
	// that the stored auth revision is authRev. If so it writes rows,
	// stores rev if rev > 0, and commits; if not it commits nothing and
	// returns ErrStale. Any other error is as CommitBatch's.
	CommitChecked(ctx context.Context, start int64, authRev uint64, rows []LogRow, rev int64) error
}

// CompactBeginner opens the transactions of compaction's cleanup.
type CompactBeginner interface {
	// BeginCompact opens a transaction of compaction's cleanup (see
	// CompactTx); it does not take the global write lock.
	BeginCompact(ctx context.Context) (CompactTx, error)
}

// ErrorClasser reads the database's errors.
type ErrorClasser interface {
	// ErrorClass returns err's class (an SQLSTATE class, an error number),
	// or "" if the dialect cannot tell.
	ErrorClass(err error) string
	// RefusedWrite reports whether err, returned by a write transaction,
	// is the database refusing one of its statements for what it writes
	// (a value or key it cannot store, a constraint), after which the
	// transaction is known not to have committed. A lost connection is not
	// such a refusal: the outcome of its commit may be unknown.
	RefusedWrite(err error) bool
}

// Maintainer answers Maintenance.Status and Defragment.
type Maintainer interface {
	// Size returns the database size in bytes and the part in use.
	Size(ctx context.Context) (size, inUse int64, err error)
	// Defragment reclaims free space.
	Defragment(ctx context.Context) error
}

// Tx is one database transaction. Methods that write are called only on a
// transaction from BeginWrite or BeginBatch.
type Tx interface {
	CurrentGetter
	BatchCommitter
	AuthTxReader

	// Revisions reads kv_meta: the current and the compact revision.
	Revisions(ctx context.Context) (current, compact int64, err error)
	// SetRevision stores the current revision.
	SetRevision(ctx context.Context, rev int64) error
	// SetCompact stores the compact revision.
	SetCompact(ctx context.Context, rev int64) error
	// Timeline reads kv_meta's timeline: how many times the database was
	// fenced (see Engine and fence.go).
	Timeline(ctx context.Context) (int64, error)
	// Fence sets the current and the compact revision to rev, raises the
	// timeline by one and returns it; where the dialect notifies other
	// instances of commits (PostgreSQL's NOTIFY), it notifies rev.
	Fence(ctx context.Context, rev int64) (timeline int64, err error)

	// Range returns the live key-values in kr in key order, at most limit
	// of them (0: no limit). rev 0 reads the latest state (kv_current,
	// including this transaction's own writes); rev > 0 reads the state at
	// that revision from kv_log. keysOnly leaves values empty.
	Range(ctx context.Context, kr KeyRange, rev, limit int64, keysOnly bool) ([]*mvccpb.KeyValue, error)
	// Count counts the live keys in kr at rev (0: latest).
	Count(ctx context.Context, kr KeyRange, rev int64) (int64, error)
	// Write appends rows to kv_log and applies them to kv_current.
	Write(ctx context.Context, rows []LogRow) error
	// Changes returns the events of revisions in (after, upTo], in
	// (rev, sub) order, with PrevKv set from the row at PrevRev. It stops
	// after the revision whose events reach maxBytes (0: no limit; see
	// ScanEvents), so that one read never holds more than that and a
	// revision.
	Changes(ctx context.Context, after, upTo int64, maxBytes int) ([]*mvccpb.Event, error)
	// History returns up to limit kv_log rows after (afterRev, afterSub),
	// in (rev, sub) order: a page of the whole history, for snapshots.
	History(ctx context.Context, afterRev, afterSub int64, limit int) ([]LogRow, error)

	// LeaseInsert creates a lease expiring ttl seconds from now; false if
	// the id exists.
	LeaseInsert(ctx context.Context, id, ttl int64) (bool, error)
	// LeaseGet returns a lease's TTL and the milliseconds until it expires.
	LeaseGet(ctx context.Context, id int64) (ttl, remainingMillis int64, found bool, err error)
	// LeaseRenew sets a lease's expiry to now + its TTL and returns the TTL.
	LeaseRenew(ctx context.Context, id int64) (ttl int64, found bool, err error)
	// LeaseDelete removes a lease row.
	LeaseDelete(ctx context.Context, id int64) error
	// LeaseExtendAll sets every lease's expiry to now + its TTL and
	// returns how many there are.
	LeaseExtendAll(ctx context.Context) (int64, error)
	// LeaseKeys returns the live key-values attached to a lease, in key order.
	LeaseKeys(ctx context.Context, id int64) ([]*mvccpb.KeyValue, error)
	// Leases lists every lease id in ascending order.
	Leases(ctx context.Context) ([]int64, error)
	// LeaseRows returns up to limit leases with an id above afterID, in id
	// order, each with its TTL and the milliseconds until it expires (Keys
	// is not set).
	LeaseRows(ctx context.Context, afterID int64, limit int) ([]Lease, error)
	// ExpiredLeases lists up to limit leases whose expiry has passed.
	ExpiredLeases(ctx context.Context, limit int) ([]int64, error)

	// AlarmList lists kv_alarm by member then type.
	AlarmList(ctx context.Context) ([]*pb.AlarmMember, error)
	// AlarmInsert adds an alarm; false if it was there.
	AlarmInsert(ctx context.Context, member uint64, alarm int32) (bool, error)
	// AlarmDelete removes an alarm; false if it was not there.
	AlarmDelete(ctx context.Context, member uint64, alarm int32) (bool, error)

	Commit() error
	Rollback() error
}

// LatestGetter reads the current revision and the latest version of keys
// in a single statement (one snapshot, one round trip): the common Get then
// skips a transaction, and concurrent Gets share statements (see
// getBatcher).
type LatestGetter interface {
	// GetLatest returns the current revision and key's live version (nil
	// if absent); keysOnly leaves the value empty.
	GetLatest(ctx context.Context, key []byte, keysOnly bool) (cur int64, kv *mvccpb.KeyValue, err error)
	// GetLatestMany is GetLatest for up to MaxGetBatch keys, which may
	// repeat: it returns the live ones among them, in any order.
	GetLatestMany(ctx context.Context, keys [][]byte, keysOnly bool) (cur int64, kvs []*mvccpb.KeyValue, err error)
}

// ChangesReader answers Changes in one round trip where the database
// allows. The watch tailer of every instance reads changes after every
// commit of every instance, so its round trips are a direct part of watch
// latency.
type ChangesReader interface {
	// ReadChanges reads, from one snapshot, the current and compact
	// revisions and the events of revisions in (after, min(current, upTo)].
	// Like Tx.Changes, it stops after the revision whose events reach
	// maxBytes (0: no limit). If after+1 is below the compact revision the
	// caller fails the read, so the events may be left out.
	ReadChanges(ctx context.Context, after, upTo int64, maxBytes int) (cur, compact int64, evs []*mvccpb.Event, err error)
	// TailChanges is ReadChanges for the one caller that reads after every
	// commit, the watch tailer: on a connection kept for it where the
	// database has connections, so that under load it does not queue for
	// a pooled connection behind client requests. Calls must not overlap.
	TailChanges(ctx context.Context, after, upTo int64, maxBytes int) (cur, compact int64, evs []*mvccpb.Event, err error)
}

// CurrentGetter reads the latest versions of many keys at once (in one
// statement where the database allows): the writer loads every key a batch
// names up front instead of one query per key.
type CurrentGetter interface {
	// Current returns the live versions of the keys that exist, in any order.
	Current(ctx context.Context, keys [][]byte) ([]*mvccpb.KeyValue, error)
}

// BatchCommitter sends a batch's queued rows, its new revision and the
// commit together (in one round trip where the database allows).
type BatchCommitter interface {
	// CommitBatch does Write(rows) if there are rows, SetRevision(rev) if
	// rev > 0, and Commit. If it fails, nothing of the transaction is
	// committed (unless the connection broke during the commit itself, which
	// leaves the outcome as unknown as a failed Commit does); Rollback may
	// still be called and then releases what is left.
	CommitBatch(ctx context.Context, rows []LogRow, rev int64) error
}
