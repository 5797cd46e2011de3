package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/kvsql/kvsql/backends"
)

// BeginCompact implements backends.Dialect: a READ COMMITTED transaction
// that does not touch kv_meta.
func (d *dialect) BeginCompact(ctx context.Context) (backends.CompactTx, error) {
	tx, err := d.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.ReadCommitted})
	if err != nil {
		return nil, err
	}
	return &compactTx{tx: tx}, nil
}

// compactTx implements backends.CompactTx.
type compactTx struct{ tx pgx.Tx }

func (c *compactTx) CleanedTo(ctx context.Context) (int64, error) {
	var rev int64
	err := c.tx.QueryRow(ctx, qCleanedTo).Scan(&rev)
	return rev, err
}

func (c *compactTx) SetCleanedTo(ctx context.Context, rev int64) error {
	_, err := c.tx.Exec(ctx, qSetCleanedTo, rev)
	return err
}

func (c *compactTx) StepEnd(ctx context.Context, from, upTo int64, limit int) (int64, error) {
	var rev int64
	err := c.tx.QueryRow(ctx, qStepEnd, from, upTo, limit).Scan(&rev)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	return rev, err
}

func (c *compactTx) DeleteSuperseded(ctx context.Context, compact, from, to int64) (int64, error) {
	older, err := c.tx.Exec(ctx, qDeleteSuperseded, compact, from, to)
	if err != nil {
		return 0, err
	}
	tombs, err := c.tx.Exec(ctx, qDeleteTombstones, compact, from, to)
	if err != nil {
		return 0, err
	}
	return older.RowsAffected() + tombs.RowsAffected(), nil
}

func (c *compactTx) Commit() error { return c.tx.Commit(context.Background()) }

func (c *compactTx) Rollback() error { return c.tx.Rollback(context.Background()) }

// Size implements backends.Dialect (see qSize).
func (d *dialect) Size(ctx context.Context) (int64, int64, error) {
	var total, inUse int64
	if err := d.pool.QueryRow(ctx, qSize).Scan(&total, &inUse); err != nil {
		return 0, 0, err
	}
	return total, inUse, nil
}

// Defragment runs VACUUM (ANALYZE) on kvsql's tables (see qVacuum; VACUUM
// FULL would lock them).
func (d *dialect) Defragment(ctx context.Context) error {
	if _, err := d.pool.Exec(ctx, qVacuum); err != nil {
		return fmt.Errorf("vacuum: %w", err)
	}
	return nil
}

func (t *txn) AlarmList(ctx context.Context) ([]*pb.AlarmMember, error) {
	rows, err := t.q.Query(ctx, qAlarms)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	return backends.ScanAlarms(rows)
}

func (t *txn) AlarmInsert(ctx context.Context, member uint64, alarm int32) (bool, error) {
	tag, err := t.q.Exec(ctx, qAlarmInsert, int64(member), alarm)
	return tag.RowsAffected() > 0, err
}

func (t *txn) AlarmDelete(ctx context.Context, member uint64, alarm int32) (bool, error) {
	tag, err := t.q.Exec(ctx, qAlarmDelete, int64(member), alarm)
	return tag.RowsAffected() > 0, err
}
