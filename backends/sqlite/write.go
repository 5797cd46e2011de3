// The group-commit writer's transaction steps (backends.BatchBeginner,
// backends.CurrentGetter, backends.BatchCommitter) on the one writer
// connection. SQLite runs in process: a statement costs no round trip, so
// each step is the plain statements one after the other.

package sqlite

import (
	"context"
	"fmt"

	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/kvsql/kvsql/backends"
)

// BeginBatch implements backends.BatchBeginner: BEGIN IMMEDIATE (the write
// lock), then the keys' latest versions.
func (d *dialect) BeginBatch(ctx context.Context, keys [][]byte) (backends.Tx, []*mvccpb.KeyValue, error) {
	tx, err := d.BeginWrite(ctx)
	if err != nil {
		return nil, nil, err
	}
	if len(keys) == 0 {
		return tx, nil, nil
	}
	kvs, err := tx.Current(ctx, keys)
	if err != nil {
		_ = tx.Rollback()
		return nil, nil, err
	}
	return tx, kvs, nil
}

// Current implements backends.CurrentGetter: one statement per key.
func (t *txn) Current(ctx context.Context, keys [][]byte) ([]*mvccpb.KeyValue, error) {
	return t.current(ctx, keys, false)
}

// current returns the live versions of the distinct keys among keys.
func (t *txn) current(ctx context.Context, keys [][]byte, keysOnly bool) ([]*mvccpb.KeyValue, error) {
	var kvs []*mvccpb.KeyValue
	seen := make(map[string]bool, len(keys))
	for _, k := range keys {
		if seen[string(k)] {
			continue
		}
		seen[string(k)] = true
		got, err := t.Range(ctx, backends.KeyRange{Key: k}, 0, 1, keysOnly)
		if err != nil {
			return nil, err
		}
		kvs = append(kvs, got...)
	}
	return kvs, nil
}

// CommitBatch implements backends.BatchCommitter: Write, SetRevision and
// COMMIT. After an error the caller rolls the transaction back.
func (t *txn) CommitBatch(ctx context.Context, rows []backends.LogRow, rev int64) error {
	if len(rows) > 0 {
		if err := t.Write(ctx, rows); err != nil {
			return err
		}
	}
	if rev > 0 {
		if err := t.SetRevision(ctx, rev); err != nil {
			return err
		}
	}
	return t.tx.Commit()
}

// CommitChecked implements backends.CheckedCommitter: BEGIN IMMEDIATE (the
// write lock), the check of kv_meta and auth_meta, then CommitBatch.
func (d *dialect) CommitChecked(ctx context.Context, start int64, authRev uint64, rows []backends.LogRow, rev int64) error {
	tx, err := d.BeginWrite(ctx)
	if err != nil {
		return err
	}
	if err := checkAt(ctx, tx, start, authRev); err != nil {
		_ = tx.Rollback()
		return err
	}
	if err := tx.CommitBatch(ctx, rows, rev); err != nil {
		_ = tx.Rollback()
		return err
	}
	return nil
}

// checkAt returns backends.ErrStale unless tx, holding the write lock, is
// at revision start and, if authRev is not 0, at auth revision authRev.
func checkAt(ctx context.Context, tx backends.Tx, start int64, authRev uint64) error {
	cur, _, err := tx.Revisions(ctx)
	if err != nil {
		return err
	}
	if cur != start {
		return fmt.Errorf("%w: revision %d, prepared at %d", backends.ErrStale, cur, start)
	}
	if authRev == 0 {
		return nil
	}
	stored, err := tx.AuthRevision(ctx)
	if err != nil {
		return err
	}
	if stored != authRev {
		return fmt.Errorf("%w: auth revision %d, permitted at %d", backends.ErrStale, stored, authRev)
	}
	return nil
}
