package mysql

import (
	"context"
	"database/sql"
	"errors"

	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/kvsql/kvsql/backends"
)

func (t *txn) LeaseInsert(ctx context.Context, id, ttl int64) (bool, error) {
	res, err := t.st.Exec(ctx, qLeaseInsert, id, ttl, ttl)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

func (t *txn) LeaseGet(ctx context.Context, id int64) (ttl, remaining int64, found bool, err error) {
	err = t.st.QueryRow(ctx, qLeaseGet, []any{id}, &ttl, &remaining)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, 0, false, nil
	}
	return ttl, remaining, err == nil, err
}

func (t *txn) LeaseExtendAll(ctx context.Context) (int64, error) {
	res, err := t.st.Exec(ctx, qLeaseExtend)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (t *txn) LeaseRenew(ctx context.Context, id int64) (int64, bool, error) {
	res, err := t.st.Exec(ctx, qLeaseRenew, id)
	if err != nil {
		return 0, false, err
	}
	if n, err := res.RowsAffected(); err != nil || n == 0 {
		return 0, false, err
	}
	var ttl int64
	if err := t.st.QueryRow(ctx, qLeaseTTL, []any{id}, &ttl); err != nil {
		return 0, false, err
	}
	return ttl, true, nil
}

func (t *txn) LeaseDelete(ctx context.Context, id int64) error {
	_, err := t.st.Exec(ctx, qLeaseDelete, id)
	return err
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
	rows, err := t.st.Query(ctx, qLeaseRows, afterID, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	return backends.ScanLeases(rows)
}
