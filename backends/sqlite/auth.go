package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/kvsql/kvsql/backends"
)

// Auth state (backends.AuthStore). Writes run on the writer connection
// (BEGIN IMMEDIATE: the database's write lock); one process owns the file,
// so token expiry uses this process's clock.

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
	return loadAuth(ctx, t.tx)
}

// AuthRevision implements backends.AuthTxReader. SQLite has one writer
// connection: an auth change and a write batch never overlap.
func (t *txn) AuthRevision(ctx context.Context) (uint64, error) {
	var enabled bool
	var rev uint64
	err := t.st.QueryRow(ctx, qAuthMeta, nil, &enabled, &rev)
	return rev, err
}

func (d *dialect) AuthMeta(ctx context.Context) (bool, uint64, error) {
	var enabled bool
	var rev uint64
	err := d.rStmts.Stmt(qAuthMeta).QueryRowContext(ctx).Scan(&enabled, &rev)
	return enabled, rev, err
}

func (d *dialect) LoadAuth(ctx context.Context) (backends.AuthState, error) {
	tx, err := d.r.BeginTx(ctx, nil)
	if err != nil {
		return backends.AuthState{}, err
	}
	defer func() { _ = tx.Rollback() }()
	return loadAuth(ctx, tx)
}

func loadAuth(ctx context.Context, tx *sql.Tx) (backends.AuthState, error) {
	var s backends.AuthState
	if err := tx.QueryRowContext(ctx, qAuthMeta).Scan(&s.Enabled, &s.Revision); err != nil {
		return s, fmt.Errorf("read auth_meta: %w", err)
	}
	err := backends.ReadUsersAndRoles(&s, func(q string) ([][]byte, error) { return backends.QueryBlobs(ctx, tx, q) }, qAuthUsers, qAuthRoles)
	return s, err
}

func (d *dialect) UpdateAuth(ctx context.Context, fn func(backends.AuthState) (*backends.AuthWrite, error)) error {
	tx, err := d.w.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	s, err := loadAuth(ctx, tx)
	if err != nil {
		return err
	}
	w, err := fn(s)
	if err != nil || w == nil {
		return err
	}
	err = backends.ApplyAuthWrite(w, authSQL, 0, func(q string, args ...any) error {
		_, err := tx.ExecContext(ctx, q, args...)
		return err
	})
	if err != nil {
		return err
	}
	return tx.Commit()
}

func (d *dialect) AddAuthToken(ctx context.Context, token, user string, ttl time.Duration, revision uint64) error {
	tx, err := d.w.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	var enabled bool
	var rev uint64
	if err := tx.QueryRowContext(ctx, qAuthMeta).Scan(&enabled, &rev); err != nil {
		return fmt.Errorf("read auth_meta: %w", err)
	}
	if rev != revision {
		return backends.ErrAuthChanged
	}
	if _, err := tx.ExecContext(ctx, qTokenAdd, token, user, nowMillis()+ttl.Milliseconds()); err != nil {
		return fmt.Errorf("store auth token: %w", err)
	}
	return tx.Commit()
}

func (d *dialect) AuthTokenUser(ctx context.Context, token string) (string, error) {
	var name string
	err := d.rStmts.Stmt(qTokenUser).QueryRowContext(ctx, token, nowMillis()).Scan(&name)
	if errors.Is(err, sql.ErrNoRows) {
		return "", backends.ErrTokenNotFound
	}
	return name, err
}

func (d *dialect) TouchAuthTokens(ctx context.Context, tokens []string, ttl time.Duration) error {
	tx, err := d.w.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback() }()
	expiry := nowMillis() + ttl.Milliseconds()
	for _, t := range tokens {
		if _, err := tx.ExecContext(ctx, qTokenTouch, t, expiry); err != nil {
			return err
		}
	}
	return tx.Commit()
}

func (d *dialect) PurgeAuthTokens(ctx context.Context) (int64, error) {
	res, err := d.w.ExecContext(ctx, qTokenPurge, nowMillis())
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (d *dialect) ClusterSecret(ctx context.Context) ([]byte, error) {
	return backends.ReadOrCreateClusterSecret(
		func() (secret []byte, err error) {
			err = d.w.QueryRowContext(ctx, qSecret).Scan(&secret)
			return secret, err
		},
		func(fresh []byte) error {
			_, err := d.w.ExecContext(ctx, qSecretSet, fresh)
			return err
		})
}
