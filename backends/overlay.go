// The write batch's overlay: an in-memory view of the single keys a batch
// reads and writes, so that its point reads and writes cost no round trip
// each while it holds the write lock.

package backends

import (
	"context"

	"go.etcd.io/etcd/api/v3/mvccpb"
)

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
	missing := o.unknown(keys)
	if len(missing) == 0 {
		return nil
	}
	kvs, err := o.tx.Current(ctx, missing)
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
// that sends them itself (Tx.CommitBatch).
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
