// Package backends defines the storage contract kvserver is written against
// (Backend), the per-database contract each dialect implements (Dialect and
// Tx), and Engine: the dialect-independent implementation of etcd's MVCC
// semantics (revisions, Txn evaluation, ranges at a revision, compaction,
// leases, group commit) on top of a Dialect.
//
// Request and response values are etcd's own protobufs (etcdserverpb, mvccpb)
// so that nothing is translated twice; this package imports nothing from the
// rest of kvsql.
package backends

import (
	"context"
	"errors"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
)

// Errors a Backend returns. kvserver maps each to etcd's gRPC error value.
var (
	// ErrCompacted: the requested revision is below the compact revision.
	ErrCompacted = errors.New("required revision has been compacted")
	// ErrFutureRev: the requested revision is above the current revision.
	ErrFutureRev = errors.New("required revision is a future revision")
	// ErrKeyNotFound: a Put with ignore_value or ignore_lease named a key that does not exist.
	ErrKeyNotFound = errors.New("key not found")
	// ErrLeaseNotFound: the lease does not exist (never granted, revoked or expired).
	ErrLeaseNotFound = errors.New("lease not found")
	// ErrLeaseExists: LeaseGrant with an ID that is already in use.
	ErrLeaseExists = errors.New("lease already exists")
	// ErrKeyTooLarge: the key is longer than the database can index
	// (wrapped with the key's length and the limit).
	ErrKeyTooLarge = errors.New("key too large")
	// ErrRefused: the database refused to store a write (a value or key it
	// cannot store, a constraint); wraps the database's error. Nothing of
	// the request was written, and no other request failed with it.
	ErrRefused = errors.New("the database refused the write")
	// ErrStale: a write transaction prepared without the write lock found,
	// once it held the lock, that the database had moved on from the state
	// it was prepared on (Dialect.CommitChecked). Nothing was written; the
	// writer prepares the batch again under the lock, so no client sees it.
	ErrStale = errors.New("the database changed since the batch was prepared")
	// ErrNotLeader: this instance does not hold the leader lock (any more).
	ErrNotLeader = errors.New("this instance does not hold the leader lock")
	// ErrClosed: the backend is shutting down.
	ErrClosed = errors.New("backend closed")
)

// Timeouts every dialect uses for the sessions several instances share.
const (
	// DefaultSessionTimeout is how long a database waits for a session
	// that holds the write lock or the leader lock and went silent (its
	// instance froze or lost its network) before ending it, so that the
	// lock passes to the other instances (DESIGN.md invariant 9).
	DefaultSessionTimeout = 5 * time.Second
	// LeaderCheckTimeout bounds one check or take-over of the leader lock.
	LeaderCheckTimeout = 2 * time.Second
)

// Backend is what kvserver needs from storage. Every method is safe for
// concurrent use. Revisions are gapless and commit in order: a reader that
// sees revision N sees every revision below N. (The one gap is a fence's:
// a database found below a revision already served jumps past it, see
// fence.go.) No method answers from a database whose revision is below one
// it has already served: it fences the database first.
type Backend interface {
	// Range answers r from one snapshot. The header revision is the current
	// revision of that snapshot (as etcd does, also for reads at an older
	// r.Revision). Errors: ErrCompacted, ErrFutureRev.
	Range(ctx context.Context, r *pb.RangeRequest) (*pb.RangeResponse, error)

	// Txn evaluates r atomically with etcd's semantics (all compares, nested
	// ones included, see the state before the txn; ops see earlier ops of the
	// same txn). A txn that changes anything gets exactly one new revision.
	// r must already be validated (see kvserver). Errors: ErrCompacted,
	// ErrFutureRev (range ops), ErrLeaseNotFound, ErrKeyNotFound (puts).
	Txn(ctx context.Context, r *pb.TxnRequest) (*pb.TxnResponse, error)

	// Changes returns the events of revisions afterRev+1 .. afterRev+maxRevs
	// that are committed, in (revision, sub-revision) order, each with PrevKv
	// set when the key had a live previous version. Because revisions commit
	// in order the result is always a prefix of the history after afterRev.
	// A result is whole revisions; it stops early after the revision whose
	// events (keys, values, prev_kv values; see EventBytes) reach the
	// engine's ChangesBytes, so one read never holds much more memory.
	// ErrCompacted if afterRev+1 is below the compact revision.
	Changes(ctx context.Context, afterRev int64, maxRevs int64) ([]*mvccpb.Event, error)
	// TailChanges is Changes for the instance's watch tailer (one caller,
	// never concurrent): where the database allows, it reads on a
	// connection of its own so that it never waits behind client requests.
	// It returns ErrNewTimeline, once, when the database was fenced since
	// its previous call (its history went backwards; see fence.go): every
	// revision read before is compacted, and watchers must start again.
	TailChanges(ctx context.Context, afterRev int64, maxRevs int64) ([]*mvccpb.Event, error)

	// Revisions returns the current and the compact revision.
	Revisions(ctx context.Context) (current, compact int64, err error)

	// Compact discards history below rev and returns the current revision
	// when the compaction was recorded (etcd's response header revision).
	// ErrCompacted if rev is not above the compact revision, ErrFutureRev if
	// rev is above the current revision.
	Compact(ctx context.Context, rev int64) (int64, error)

	// LeaseGrant creates lease id with the given TTL in seconds and returns
	// the revision it was granted at (the current revision then).
	LeaseGrant(ctx context.Context, id, ttl int64) (int64, error)
	// LeaseRevoke deletes the lease and, in one revision, every key attached
	// to it. It returns that revision, or the current revision when no key
	// was attached: what etcd reports in the response header. A revision read
	// after the call returns could include other clients' writes.
	LeaseRevoke(ctx context.Context, id int64) (int64, error)
	// LeaseRenew restarts the lease's TTL and returns it.
	LeaseRenew(ctx context.Context, id int64) (ttl int64, err error)
	// LeaseInfo describes one lease; keys are listed only when withKeys.
	LeaseInfo(ctx context.Context, id int64, withKeys bool) (Lease, error)
	// Leases lists every lease.
	Leases(ctx context.Context) ([]int64, error)
	// ExpireLeases revokes every lease whose expiry has passed and returns how many.
	ExpireLeases(ctx context.Context) (int, error)
	// LeasePromote gives every lease its full TTL again (now + TTL) and
	// returns how many there are: what an instance does when it takes over
	// lease expiry, as a new etcd leader does.
	LeasePromote(ctx context.Context) (int64, error)

	// Hash returns a hash of every key-value version in (compact, rev], equal
	// for equal histories on any instance.
	Hash(ctx context.Context, rev int64) (hash uint32, compact int64, err error)

	// HashKeys returns a hash of the live key space at the current
	// revision — every live key with its create and mod revisions,
	// version, lease and value, in key order — read from one snapshot,
	// and that revision. Equal on every instance at the same revision.
	HashKeys(ctx context.Context) (hash uint32, rev int64, err error)

	// Size returns the size of kvsql's tables in bytes, as allocated in
	// the database, and the part of it in use (see each dialect).
	Size(ctx context.Context) (size, inUse int64, err error)
	// Defragment reclaims unused space where the database can.
	Defragment(ctx context.Context) error

	// Alarms lists the raised alarms (etcd's NOSPACE and CORRUPT), by
	// member then type. They live in the database: every instance sees them.
	Alarms(ctx context.Context) ([]*pb.AlarmMember, error)
	// SetAlarm raises (active) or clears alarm a; changed is false when
	// it already was raised or clear.
	SetAlarm(ctx context.Context, a *pb.AlarmMember, active bool) (changed bool, err error)

	// ErrorClass names the class of a database error for logs: "timeout",
	// "connection", or the database's own class (see each dialect).
	ErrorClass(err error) string

	// Close stops accepting requests, finishes the ones in flight and closes
	// the database. It is safe to call more than once.
	Close() error
}

// Lease is the stored state of one lease.
type Lease struct {
	ID         int64
	GrantedTTL int64
	// Remaining is the time left until expiry, in milliseconds (negative once expired).
	RemainingMillis int64
	Keys            [][]byte
}

// RangeStreamer is implemented by backends that can stream a large range
// from one snapshot in chunks (etcd 3.7's KV.RangeStream).
type RangeStreamer interface {
	// RangeStream answers r (default key order, no revision filters) from
	// one snapshot. send receives consecutive chunks of the result, each of
	// roughly chunkBytes, except the last; the returned response carries
	// the last chunk (as etcd's final message does, so it has kvs unless the
	// result is empty) with the header revision, count and more. If send
	// fails, RangeStream returns its error and a response whose header
	// holds the revision of the snapshot it read (the caller may read the
	// rest at that revision).
	RangeStream(ctx context.Context, r *pb.RangeRequest, chunkBytes int, send func([]*mvccpb.KeyValue) error) (*pb.RangeResponse, error)
}

// Member is one kvsql instance, as Cluster.MemberList reports it.
type Member struct {
	ID         uint64
	Name       string
	ClientURLs []string
	// Leader marks the instance that holds the leader lock; the others
	// forward their writes to it.
	Leader bool
}

// PoolStats describes one database connection pool of a backend.
type PoolStats struct {
	Name                 string
	MaxOpen, Open, InUse int
	Idle                 int
	WaitCount            int64
	WaitDuration         time.Duration
}

// PoolReporter is implemented by backends whose connection pools can be
// observed (kvserver exports them as kvsql_db_pool_* metrics).
type PoolReporter interface {
	PoolStats() []PoolStats
}
