// Reads outside a transaction of the Engine's: the single-key Get
// (backends.LatestGetter) and the log for watches (backends.ChangesReader),
// on the pool of WAL readers.

package sqlite

import (
	"context"
	"database/sql"

	"go.etcd.io/etcd/api/v3/mvccpb"
)

// GetLatest implements backends.LatestGetter: one statement, which SQLite
// answers from one snapshot.
func (d *dialect) GetLatest(ctx context.Context, key []byte, keysOnly bool) (int64, *mvccpb.KeyValue, error) {
	var cur int64
	var create, mod, version, lease sql.NullInt64
	var value []byte
	if err := d.rStmts.Stmt(qGetLatest).QueryRowContext(ctx, key, keysOnly).Scan(&cur, &create, &mod, &version, &lease, &value); err != nil {
		return 0, nil, err
	}
	if !mod.Valid {
		return cur, nil, nil
	}
	if value == nil {
		value = []byte{}
	}
	return cur, &mvccpb.KeyValue{Key: key, CreateRevision: create.Int64, ModRevision: mod.Int64, Version: version.Int64, Lease: lease.Int64, Value: value}, nil
}

// GetLatestMany implements backends.LatestGetter: the revision and the keys
// in one read transaction (one snapshot). The statements run in process,
// so one per key costs no round trip.
func (d *dialect) GetLatestMany(ctx context.Context, keys [][]byte, keysOnly bool) (int64, []*mvccpb.KeyValue, error) {
	tx, err := d.BeginRead(ctx)
	if err != nil {
		return 0, nil, err
	}
	defer func() { _ = tx.Rollback() }()
	cur, _, err := tx.Revisions(ctx)
	if err != nil {
		return 0, nil, err
	}
	kvs, err := tx.(*txn).current(ctx, keys, keysOnly)
	if err != nil {
		return 0, nil, err
	}
	return cur, kvs, nil
}

// ReadChanges implements backends.ChangesReader: the revisions and the
// events in one read transaction (one snapshot).
func (d *dialect) ReadChanges(ctx context.Context, after, upTo int64, maxBytes int) (cur, compact int64, evs []*mvccpb.Event, err error) {
	tx, err := d.BeginRead(ctx)
	if err != nil {
		return 0, 0, nil, err
	}
	defer func() { _ = tx.Rollback() }()
	if cur, compact, err = tx.Revisions(ctx); err != nil {
		return 0, 0, nil, err
	}
	upTo = min(cur, upTo)
	if upTo <= after || after+1 < compact {
		return cur, compact, nil, nil // nothing yet, or compacted: the caller tells
	}
	evs, err = tx.Changes(ctx, after, upTo, maxBytes)
	if err != nil {
		return 0, 0, nil, err
	}
	return cur, compact, evs, nil
}

// TailChanges implements backends.ChangesReader. It is ReadChanges: the
// readers are in-process connections of this instance's own pool, which
// no other instance shares, so the tailer needs none of its own.
func (d *dialect) TailChanges(ctx context.Context, after, upTo int64, maxBytes int) (cur, compact int64, evs []*mvccpb.Event, err error) {
	return d.ReadChanges(ctx, after, upTo, maxBytes)
}
