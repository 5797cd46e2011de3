package mysql

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"math"
	"slices"

	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/kvsql/kvsql/backends"
)

func (d *dialect) GetLatest(ctx context.Context, key []byte, keysOnly bool) (int64, *mvccpb.KeyValue, error) {
	var cur int64
	var create, mod, version, lease sql.NullInt64
	var value []byte
	if err := d.stmts.Stmt(qGetLatest).QueryRowContext(ctx, keysOnly, key).Scan(&cur, &create, &mod, &version, &lease, &value); err != nil {
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

func (d *dialect) GetLatestMany(ctx context.Context, keys [][]byte, keysOnly bool) (int64, []*mvccpb.KeyValue, error) {
	i, _ := slices.BinarySearch(getManySizes, len(keys))
	if i == len(getManySizes) {
		return 0, nil, fmt.Errorf("get %d keys in one statement: at most %d", len(keys), backends.MaxGetBatch)
	}
	args := make([]any, 0, 1+getManySizes[i])
	args = append(args, keysOnly)
	for _, k := range keys {
		args = append(args, k)
	}
	for len(args) < cap(args) {
		args = append(args, keys[len(keys)-1])
	}
	rows, err := d.stmts.Stmt(qGetLatestMany(getManySizes[i])).QueryContext(ctx, args...)
	if err != nil {
		return 0, nil, err
	}
	defer rows.Close()
	return backends.ScanLatest(rows)
}

// ReadChanges implements backends.ChangesReader: one statement.
func (d *dialect) ReadChanges(ctx context.Context, after, upTo int64, maxBytes int) (cur, compact int64, evs []*mvccpb.Event, err error) {
	rows, err := d.stmts.Stmt(qChangesUpToCurrent).QueryContext(ctx, after, upTo)
	if err != nil {
		return 0, 0, nil, err
	}
	defer rows.Close()
	return backends.ScanChanges(rows, maxBytes)
}

// TailChanges implements backends.ChangesReader on a connection of the
// read pool kept for it, with the statement prepared on it once. After an
// error both are released and taken again on the next call.
func (d *dialect) TailChanges(ctx context.Context, after, upTo int64, maxBytes int) (cur, compact int64, evs []*mvccpb.Event, err error) {
	d.tailMu.Lock()
	defer d.tailMu.Unlock()
	if d.tail == nil {
		c, err := d.db.Conn(ctx)
		if err != nil {
			return 0, 0, nil, err
		}
		st, err := c.PrepareContext(ctx, qChangesUpToCurrent)
		if err != nil {
			_ = c.Close()
			return 0, 0, nil, err
		}
		d.tail, d.tailStmt = c, st
	}
	rows, err := d.tailStmt.QueryContext(ctx, after, upTo)
	if err == nil {
		cur, compact, evs, err = backends.ScanChanges(rows, maxBytes)
		if cerr := rows.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		d.closeTail()
		return 0, 0, nil, err
	}
	return cur, compact, evs, nil
}

// closeTail releases the tailer's connection; the caller holds tailMu.
func (d *dialect) closeTail() {
	if d.tail == nil {
		return
	}
	_ = d.tailStmt.Close()
	// Raw's error makes database/sql discard the connection instead of
	// pooling one that may be broken.
	_ = d.tail.Raw(func(any) error { return driver.ErrBadConn })
	_ = d.tail.Close()
	d.tail, d.tailStmt = nil, nil
}

func sqlLimit(limit int64) int64 {
	if limit <= 0 {
		return math.MaxInt64
	}
	return limit
}

func (t *txn) Range(ctx context.Context, kr backends.KeyRange, rev, limit int64, keysOnly bool) ([]*mvccpb.KeyValue, error) {
	q, args := rangeStatements.Range(kr, rev, sqlLimit(limit), keysOnly)
	return t.queryKVs(ctx, q, args...)
}

func (t *txn) queryKVs(ctx context.Context, q string, args ...any) ([]*mvccpb.KeyValue, error) {
	rows, err := t.st.Query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	return backends.ScanKVs(rows)
}

func (t *txn) Count(ctx context.Context, kr backends.KeyRange, rev int64) (int64, error) {
	q, args := rangeStatements.Count(kr, rev)
	var n int64
	err := t.st.QueryRow(ctx, q, args, &n)
	return n, err
}

func (t *txn) Changes(ctx context.Context, after, upTo int64, maxBytes int) ([]*mvccpb.Event, error) {
	rows, err := t.st.Query(ctx, qChanges, after, upTo)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	return backends.ScanEvents(rows, maxBytes)
}

func (t *txn) History(ctx context.Context, afterRev, afterSub int64, limit int) ([]backends.LogRow, error) {
	rows, err := t.st.Query(ctx, qHistory, afterRev, afterRev, afterSub, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	return backends.ScanLogRows(rows)
}
