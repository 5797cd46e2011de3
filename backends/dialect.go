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

// Dialect is one SQL database. Implementations live in backends/<database>.
type Dialect interface {
	// BeginRead opens a read-only transaction on one consistent snapshot.
	BeginRead(ctx context.Context) (Tx, error)
	// BeginWrite opens a read-write transaction holding the global write
	// lock (the kv_meta row) until Commit or Rollback, so that revisions
	// commit in revision order.
	BeginWrite(ctx context.Context) (Tx, error)
	// BeginCompact opens a transaction of compaction's cleanup (see
	// CompactTx); it does not take the global write lock.
	BeginCompact(ctx context.Context) (CompactTx, error)
	// RefusedWrite reports whether err, returned by a write transaction,
	// is the database refusing one of its statements for what it writes
	// (a value or key it cannot store, a constraint), after which the
	// transaction is known not to have committed. A lost connection is not
	// such a refusal: the outcome of its commit may be unknown.
	RefusedWrite(err error) bool
	// Size returns the database size in bytes and the part in use.
	Size(ctx context.Context) (size, inUse int64, err error)
	// Defragment reclaims free space.
	Defragment(ctx context.Context) error
	// Close closes the database.
	Close() error
}

// Tx is one database transaction. Methods that write are called only on a
// transaction from BeginWrite.
type Tx interface {
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

// LatestGetter is implemented by dialects that can read the current
// revision and the latest version of keys in a single statement (one
// snapshot, one round trip): the common Get then skips a transaction, and
// concurrent Gets share statements (see getBatcher).
type LatestGetter interface {
	// GetLatest returns the current revision and key's live version (nil
	// if absent); keysOnly leaves the value empty.
	GetLatest(ctx context.Context, key []byte, keysOnly bool) (cur int64, kv *mvccpb.KeyValue, err error)
	// GetLatestMany is GetLatest for up to MaxGetBatch keys, which may
	// repeat: it returns the live ones among them, in any order.
	GetLatestMany(ctx context.Context, keys [][]byte, keysOnly bool) (cur int64, kvs []*mvccpb.KeyValue, err error)
}
