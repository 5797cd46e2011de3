package mysql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/kvsql/kvsql/backends"
)

// Auth state (backends.AuthStore). Writers lock the auth_meta row first and
// run in READ COMMITTED, so every later read of the transaction sees what
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
		return t.lockedAuthRev, nil
	}
	var rev uint64
	err := t.st.QueryRow(ctx, qAuthRevision, nil, &rev)
	return rev, err
}

func (d *dialect) AuthMeta(ctx context.Context) (bool, uint64, error) {
	var enabled bool
	var rev uint64
	err := d.stmts.Stmt(qAuthMeta).QueryRowContext(ctx).Scan(&enabled, &rev)
	return enabled, rev, err
}

func (d *dialect) LoadAuth(ctx context.Context) (backends.AuthState, error) {
	tx, err := d.db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true})
	if err != nil {
		return backends.AuthState{}, err
	}
	defer func() { _ = tx.Rollback() }()
	return loadAuth(ctx, tx, qAuthMeta)
}

// loadAuth reads the state with meta (qAuthMeta, or qAuthLock to lock it).
func loadAuth(ctx context.Context, tx *sql.Tx, meta string) (backends.AuthState, error) {
	var s backends.AuthState
	if err := tx.QueryRowContext(ctx, meta).Scan(&s.Enabled, &s.Revision); err != nil {
		return s, fmt.Errorf("read auth_meta: %w", err)
	}
	err := backends.ReadUsersAndRoles(&s, func(q string) ([][]byte, error) { return backends.QueryBlobs(ctx, tx, q) }, qAuthUsers, qAuthRoles)
	return s, err
}

// beginAuthWrite opens a transaction holding the auth lock.
func (d *dialect) beginAuthWrite(ctx context.Context) (*sql.Tx, error) {
	return d.db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
}

func (d *dialect) UpdateAuth(ctx context.Context, fn func(backends.AuthState) (*backends.AuthWrite, error)) error {
	tx, err := d.beginAuthWrite(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	s, err := loadAuth(ctx, tx, qAuthLock)
	if err != nil {
		return err
	}
	w, err := fn(s)
	if err != nil || w == nil {
		return err
	}
	err = backends.ApplyAuthWrite(w, authSQL, MaxKeyBytes, func(q string, args ...any) error {
		_, err := tx.ExecContext(ctx, q, args...)
		return err
	})
	if err != nil {
		return err
	}
	// The write lock last (see backends.AuthStore.UpdateAuth): the change
	// commits between two write batches.
	var rev, compact int64
	if err := tx.QueryRowContext(ctx, qLockMeta).Scan(&rev, &compact); err != nil {
		return fmt.Errorf("lock kv_meta: %w", err)
	}
	return tx.Commit()
}

func (d *dialect) AddAuthToken(ctx context.Context, token, user string, ttl time.Duration, revision uint64) error {
	tx, err := d.beginAuthWrite(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	var enabled bool
	var rev uint64
	if err := tx.QueryRowContext(ctx, qAuthLock).Scan(&enabled, &rev); err != nil {
		return fmt.Errorf("lock auth_meta: %w", err)
	}
	if rev != revision {
		return backends.ErrAuthChanged
	}
	if _, err := tx.ExecContext(ctx, qTokenAdd, token, user, ttl.Milliseconds()); err != nil {
		return fmt.Errorf("store auth token: %w", err)
	}
	return tx.Commit()
}

func (d *dialect) AuthTokenUser(ctx context.Context, token string) (string, error) {
	var name string
	err := d.stmts.Stmt(qTokenUser).QueryRowContext(ctx, token).Scan(&name)
	if errors.Is(err, sql.ErrNoRows) {
		return "", backends.ErrTokenNotFound
	}
	return name, err
}

func (d *dialect) TouchAuthTokens(ctx context.Context, tokens []string, ttl time.Duration) error {
	for len(tokens) > 0 {
		n := min(len(tokens), writeChunk)
		args := make([]any, 0, n+1)
		args = append(args, ttl.Milliseconds())
		for _, t := range tokens[:n] {
			args = append(args, t)
		}
		if _, err := d.db.ExecContext(ctx, qTokenTouchHead+repeatGroup("?", n)+qPlaceholderTail, args...); err != nil {
			return err
		}
		tokens = tokens[n:]
	}
	return nil
}

func (d *dialect) PurgeAuthTokens(ctx context.Context) (int64, error) {
	res, err := d.db.ExecContext(ctx, qTokenPurge)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (d *dialect) ClusterSecret(ctx context.Context) ([]byte, error) {
	return backends.ReadOrCreateClusterSecret(
		func() (secret []byte, err error) {
			err = d.db.QueryRowContext(ctx, qSecret).Scan(&secret)
			return secret, err
		},
		func(fresh []byte) error {
			_, err := d.db.ExecContext(ctx, qSecretSet, fresh)
			return err
		})
}
