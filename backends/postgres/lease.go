package postgres

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"
	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/kvsql/kvsql/backends"
)

func (t *txn) LeaseInsert(ctx context.Context, id, ttl int64) (bool, error) {
	tag, err := t.q.Exec(ctx, qLeaseInsert, id, ttl)
	if err != nil {
		return false, err
	}
	return tag.RowsAffected() == 1, nil
}

func (t *txn) LeaseGet(ctx context.Context, id int64) (ttl, remaining int64, found bool, err error) {
	err = t.q.QueryRow(ctx, qLeaseGet, id).Scan(&ttl, &remaining)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, 0, false, nil
	}
	return ttl, remaining, err == nil, err
}

func (t *txn) LeaseRenew(ctx context.Context, id int64) (int64, bool, error) {
	var ttl int64
	err := t.q.QueryRow(ctx, qLeaseRenew, id).Scan(&ttl)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, false, nil
	}
	return ttl, err == nil, err
}

func (t *txn) LeaseDelete(ctx context.Context, id int64) error {
	_, err := t.q.Exec(ctx, qLeaseDelete, id)
	return err
}

func (t *txn) LeaseExtendAll(ctx context.Context) (int64, error) {
	ct, err := t.q.Exec(ctx, qLeaseExtend)
	return ct.RowsAffected(), err
}

func (t *txn) LeaseKeys(ctx context.Context, id int64) ([]*mvccpb.KeyValue, error) {
	return t.queryKVs(ctx, qLeaseKeys, id)
}

func (t *txn) Leases(ctx context.Context) ([]int64, error) {
	return t.queryIDs(ctx, qLeases)
}

func (t *txn) ExpiredLeases(ctx context.Context, limit int) ([]int64, error) {
	return t.queryIDs(ctx, qLeaseExpired, limit)
}

func (t *txn) LeaseRows(ctx context.Context, afterID int64, limit int) ([]backends.Lease, error) {
	rows, err := t.q.Query(ctx, qLeaseRows, afterID, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	return backends.ScanLeases(rows)
}
