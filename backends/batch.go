package backends

import (
	"context"

	"go.etcd.io/etcd/api/v3/mvccpb"
)

// CurrentGetter is implemented by transactions that can read the latest
// versions of many keys in one statement; the writer then loads every key a
// batch names up front instead of one query per key.
type CurrentGetter interface {
	// Current returns the live versions of the keys that exist, in any order.
	Current(ctx context.Context, keys [][]byte) ([]*mvccpb.KeyValue, error)
}

// BatchBeginner is implemented by dialects that can open a write
// transaction, take the global write lock and read the latest versions of a
// batch's keys in one round trip (PostgreSQL pipelines the statements). The
// lock is taken by the first statement, so the keys are read under it.
// Every round trip spent under the lock is spent by every writer of every
// instance waiting for it, so the engine uses this where it can.
type BatchBeginner interface {
	// BeginBatch is BeginWrite followed by CurrentGetter.Current(keys) in
	// the new transaction. keys are distinct; with none, nothing is read.
	BeginBatch(ctx context.Context, keys [][]byte) (Tx, []*mvccpb.KeyValue, error)
}

// BatchCommitter is implemented by write transactions that can send a
// batch's queued rows, its new revision and the commit together, in one
// round trip.
type BatchCommitter interface {
	// CommitBatch does Write(rows) if there are rows, SetRevision(rev) if
	// rev > 0, and Commit. If it fails, nothing of the transaction is
	// committed (unless the connection broke during the commit itself, which
	// leaves the outcome as unknown as a failed Commit does); Rollback may
	// still be called and then releases what is left.
	CommitBatch(ctx context.Context, rows []LogRow, rev int64) error
}

// ChangesReader is implemented by dialects that can answer Changes in one
// round trip and one statement. The watch tailer of every instance reads
// changes after every commit of every instance, so its round trips are a
// direct part of watch latency.
type ChangesReader interface {
	// ReadChanges reads, from one snapshot, the current and compact
	// revisions and the events of revisions in (after, min(current, upTo)].
	// Like Tx.Changes, it stops after the revision whose events reach
	// maxBytes (0: no limit).
	ReadChanges(ctx context.Context, after, upTo int64, maxBytes int) (cur, compact int64, evs []*mvccpb.Event, err error)
	// TailChanges is ReadChanges on a connection kept for the one caller
	// that reads after every commit, the watch tailer: under load it must
	// not queue for a pooled connection behind client requests. Calls must
	// not overlap.
	TailChanges(ctx context.Context, after, upTo int64, maxBytes int) (cur, compact int64, evs []*mvccpb.Event, err error)
}

// overlay is a database transaction plus, for single keys, an in-memory
// view of their latest versions and a queue of writes not yet sent. Point
// reads and writes of a group-commit batch then cost no round trip each:
// the keys are loaded together, the rows are written together at the end.
// Any other read (a range, a historic read, a lease's keys) first flushes
// the queue, so the database answers it with every earlier write applied.
type overlay struct {
	tx Tx
	// cur holds the latest version of each key loaded or written so far;
	// a nil value means the key does not exist. Values are never mutated.
	cur     map[string]*mvccpb.KeyValue
	pending []LogRow
}

func newOverlay(tx Tx) *overlay {
	return &overlay{tx: tx, cur: map[string]*mvccpb.KeyValue{}}
}

// prefetch loads the latest versions of keys not known yet, in one
// statement where the dialect can.
func (o *overlay) prefetch(ctx context.Context, keys [][]byte) error {
	g, ok := o.tx.(CurrentGetter)
	if !ok {
		return nil
	}
	missing := o.unknown(keys)
	if len(missing) == 0 {
		return nil
	}
	kvs, err := g.Current(ctx, missing)
	if err != nil {
		return err
	}
	o.load(missing, kvs)
	return nil
}

// unknown returns the distinct keys of keys the view does not know yet.
func (o *overlay) unknown(keys [][]byte) [][]byte {
	var missing [][]byte
	seen := map[string]bool{}
	for _, k := range keys {
		if _, known := o.cur[string(k)]; known || seen[string(k)] {
			continue
		}
		seen[string(k)] = true
		missing = append(missing, k)
	}
	return missing
}

// load records kvs, the live versions among keys, as read from the
// database: the other keys do not exist.
func (o *overlay) load(keys [][]byte, kvs []*mvccpb.KeyValue) {
	for _, k := range keys {
		o.cur[string(k)] = nil
	}
	for _, kv := range kvs {
		o.cur[string(kv.Key)] = kv
	}
}

// get returns key's latest version, nil if it does not exist.
func (o *overlay) get(ctx context.Context, key []byte) (*mvccpb.KeyValue, error) {
	if kv, ok := o.cur[string(key)]; ok {
		return kv, nil
	}
	kvs, err := o.tx.Range(ctx, KeyRange{Key: key}, 0, 1, false)
	if err != nil {
		return nil, err
	}
	var kv *mvccpb.KeyValue
	if len(kvs) == 1 {
		kv = kvs[0]
	}
	o.cur[string(key)] = kv
	return kv, nil
}

// write queues rows and updates the view.
func (o *overlay) write(rows ...LogRow) {
	for _, r := range rows {
		o.pending = append(o.pending, r)
		if r.Deleted {
			o.cur[string(r.Key)] = nil
			continue
		}
		o.cur[string(r.Key)] = &mvccpb.KeyValue{Key: r.Key, CreateRevision: r.CreateRev, ModRevision: r.Rev,
			Version: r.Version, Lease: r.Lease, Value: r.Value}
	}
}

// take returns the queued rows and empties the queue, for a transaction
// that sends them itself (BatchCommitter).
func (o *overlay) take() []LogRow {
	rows := o.pending
	o.pending = nil
	return rows
}

// flush sends the queued rows to the database.
func (o *overlay) flush(ctx context.Context) error {
	if len(o.pending) == 0 {
		return nil
	}
	err := o.tx.Write(ctx, o.pending)
	o.pending = nil
	return err
}

// db returns the transaction for a read the view cannot answer, after
// flushing the queue so that the read sees every earlier write.
func (o *overlay) db(ctx context.Context) (Tx, error) {
	if err := o.flush(ctx); err != nil {
		return nil, err
	}
	return o.tx, nil
}
