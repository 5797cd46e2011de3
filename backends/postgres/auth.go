package postgres

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/kvsql/kvsql/backends"
)

// Auth state (backends.AuthStore). Writers lock the auth_meta row first; in
// READ COMMITTED every later statement of the transaction then sees what
// the previous holder of the lock committed.

// authSQL is this dialect's auth write (backends.ApplyAuthWrite).
var authSQL = backends.AuthSQL{
	SetMeta: qAuthSetMeta,
	PutUser: qAuthPutUser, PutRole: qAuthPutRole,
	DelUser: qAuthDelUser, DelRole: qAuthDelRole,
	DropTokensOf: qTokenDropFor, DropAllTokens: qTokenDropAll,
}

// ReadAuth reads the auth state in a read transaction's snapshot.
func (t *txn) ReadAuth(ctx context.Context) (backends.AuthState, error) {
	if t.tx == nil {
		return backends.AuthState{}, errors.New("auth state read outside a read transaction")
	}
	return loadAuth(ctx, t.tx, qAuthMeta)
}

// AuthRevision implements backends.AuthTxReader: in a write transaction,
// the revision BeginBatch read right after the lock.
func (t *txn) AuthRevision(ctx context.Context) (uint64, error) {
	if t.locked {
		return uint64(t.lockedAuthRev), nil
	}
	var rev int64
	err := t.q.QueryRow(ctx, qAuthRevision).Scan(&rev)
	return uint64(rev), err
}

func (d *dialect) AuthMeta(ctx context.Context) (bool, uint64, error) {
	var enabled bool
	var rev int64
	err := d.pool.QueryRow(ctx, qAuthMeta).Scan(&enabled, &rev)
	return enabled, uint64(rev), err
}

func (d *dialect) LoadAuth(ctx context.Context) (backends.AuthState, error) {
	tx, err := d.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return backends.AuthState{}, err
	}
	defer func() { _ = tx.Rollback(context.Background()) }()
	return loadAuth(ctx, tx, qAuthMeta)
}

// loadAuth reads the state with meta (qAuthMeta, or qAuthLock to lock it).
func loadAuth(ctx context.Context, tx pgx.Tx, meta string) (backends.AuthState, error) {
	var s backends.AuthState
	var rev int64
	if err := tx.QueryRow(ctx, meta).Scan(&s.Enabled, &rev); err != nil {
		return s, fmt.Errorf("read auth_meta: %w", err)
	}
	s.Revision = uint64(rev)
	err := backends.ReadUsersAndRoles(&s, func(q string) ([][]byte, error) { return queryBlobs(ctx, tx, q) }, qAuthUsers, qAuthRoles)
	return s, err
}

func queryBlobs(ctx context.Context, tx pgx.Tx, q string) ([][]byte, error) {
	rows, err := tx.Query(ctx, q)
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, pgx.RowTo[[]byte])
}

func (d *dialect) UpdateAuth(ctx context.Context, fn func(backends.AuthState) (*backends.AuthWrite, error)) error {
	tx, err := d.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.ReadCommitted})
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback(context.Background()) }()
	s, err := loadAuth(ctx, tx, qAuthLock)
	if err != nil {
		return err
	}
	w, err := fn(s)
	if err != nil || w == nil {
		return err
	}
	b := &pgx.Batch{}
	err = backends.ApplyAuthWrite(w, authSQL, 0, func(q string, args ...any) error {
		b.Queue(q, args...)
		return nil
	})
	if err != nil {
		return err
	}
	// The write lock last (see backends.AuthStore.UpdateAuth): the change
	// commits between two write batches.
	b.Queue(qLockMeta)
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("write auth state: %w", err)
	}
	return tx.Commit(ctx)
}

func (d *dialect) AddAuthToken(ctx context.Context, token, user string, ttl time.Duration, revision uint64) error {
	tx, err := d.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.ReadCommitted})
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback(context.Background()) }()
	var enabled bool
	var rev int64
	if err := tx.QueryRow(ctx, qAuthLock).Scan(&enabled, &rev); err != nil {
		return fmt.Errorf("lock auth_meta: %w", err)
	}
	if uint64(rev) != revision {
		return backends.ErrAuthChanged
	}
	if _, err := tx.Exec(ctx, qTokenAdd, token, user, ttl.Milliseconds()); err != nil {
		return fmt.Errorf("store auth token: %w", err)
	}
	return tx.Commit(ctx)
}

func (d *dialect) AuthTokenUser(ctx context.Context, token string) (string, error) {
	var name string
	err := d.pool.QueryRow(ctx, qTokenUser, token).Scan(&name)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", backends.ErrTokenNotFound
	}
	return name, err
}

func (d *dialect) TouchAuthTokens(ctx context.Context, tokens []string, ttl time.Duration) error {
	_, err := d.pool.Exec(ctx, qTokenTouch, tokens, ttl.Milliseconds())
	return err
}

func (d *dialect) PurgeAuthTokens(ctx context.Context) (int64, error) {
	ct, err := d.pool.Exec(ctx, qTokenPurge)
	return ct.RowsAffected(), err
}

func (d *dialect) ClusterSecret(ctx context.Context) ([]byte, error) {
	return backends.ReadOrCreateClusterSecret(
		func() (secret []byte, err error) {
			err = d.pool.QueryRow(ctx, qSecret).Scan(&secret)
			return secret, err
		},
		func(fresh []byte) error {
			_, err := d.pool.Exec(ctx, qSecretSet, fresh)
			return err
		})
}
