package postgres

import (
	"context"

	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/kvsql/kvsql/backends"
)

// ReadChanges implements backends.ChangesReader: one statement.
func (d *dialect) ReadChanges(ctx context.Context, after, upTo int64, maxBytes int) (cur, compact int64, evs []*mvccpb.Event, err error) {
	rows, err := d.pool.Query(ctx, qChangesUpToCurrent, after, upTo)
	if err != nil {
		return 0, 0, nil, err
	}
	defer rows.Close()
	return backends.ScanChanges(rows, maxBytes)
}

// TailChanges implements backends.ChangesReader on a connection taken from
// the pool once and kept (hijacked: the pool never hands it out). After an
// error it is closed and replaced on the next call.
func (d *dialect) TailChanges(ctx context.Context, after, upTo int64, maxBytes int) (cur, compact int64, evs []*mvccpb.Event, err error) {
	d.tailMu.Lock()
	defer d.tailMu.Unlock()
	if d.tail == nil {
		c, err := d.pool.Acquire(ctx)
		if err != nil {
			return 0, 0, nil, err
		}
		d.tail = c.Hijack()
	}
	rows, err := d.tail.Query(ctx, qChangesUpToCurrent, after, upTo)
	if err == nil {
		cur, compact, evs, err = backends.ScanChanges(rows, maxBytes)
		rows.Close()
		if err == nil {
			err = rows.Err()
		}
	}
	if err != nil {
		_ = d.tail.Close(context.Background())
		d.tail = nil
		return 0, 0, nil, err
	}
	return cur, compact, evs, nil
}

func (d *dialect) GetLatest(ctx context.Context, key []byte, keysOnly bool) (int64, *mvccpb.KeyValue, error) {
	var cur int64
	var create, mod, version, lease *int64
	var value []byte
	if err := d.pool.QueryRow(ctx, qGetLatest, key, keysOnly).Scan(&cur, &create, &mod, &version, &lease, &value); err != nil {
		return 0, nil, err
	}
	if mod == nil {
		return cur, nil, nil
	}
	return cur, &mvccpb.KeyValue{Key: key, CreateRevision: *create, ModRevision: *mod, Version: *version, Lease: *lease, Value: value}, nil
}

func (d *dialect) GetLatestMany(ctx context.Context, keys [][]byte, keysOnly bool) (int64, []*mvccpb.KeyValue, error) {
	rows, err := d.pool.Query(ctx, qGetLatestMany, keys, keysOnly)
	if err != nil {
		return 0, nil, err
	}
	defer rows.Close()
	return backends.ScanLatest(rows)
}

func sqlLimit(limit int64) any {
	if limit <= 0 {
		return nil
	}
	return limit
}

func (t *txn) Range(ctx context.Context, kr backends.KeyRange, rev, limit int64, keysOnly bool) ([]*mvccpb.KeyValue, error) {
	q, args := rangeStatements.Range(kr, rev, sqlLimit(limit), keysOnly)
	return t.queryKVs(ctx, q, args...)
}

func (t *txn) queryKVs(ctx context.Context, q string, args ...any) ([]*mvccpb.KeyValue, error) {
	rows, err := t.q.Query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	return backends.ScanKVs(rows)
}

func (t *txn) Count(ctx context.Context, kr backends.KeyRange, rev int64) (int64, error) {
	q, args := rangeStatements.Count(kr, rev)
	var n int64
	err := t.q.QueryRow(ctx, q, args...).Scan(&n)
	return n, err
}

func (t *txn) Changes(ctx context.Context, after, upTo int64, maxBytes int) ([]*mvccpb.Event, error) {
	rows, err := t.q.Query(ctx, qChanges, after, upTo)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	return backends.ScanEvents(rows, maxBytes)
}

func (t *txn) History(ctx context.Context, afterRev, afterSub int64, limit int) ([]backends.LogRow, error) {
	rows, err := t.q.Query(ctx, qHistory, afterRev, afterSub, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	return backends.ScanLogRows(rows)
}
