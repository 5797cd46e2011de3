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

// ReadAuth reads the auth state in a read transaction's snapshot.
func (t *txn) ReadAuth(ctx context.Context) (backends.AuthState, error) {
	if t.tx == nil {
		return backends.AuthState{}, errors.New("auth state read outside a read transaction")
	}
	return loadAuth(ctx, t.tx)
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
	users, err := queryBlobs(ctx, tx, qAuthUsers)
	if err != nil {
		return s, fmt.Errorf("read auth_user: %w", err)
	}
	for _, b := range users {
		u, err := backends.UnmarshalUser(b)
		if err != nil {
			return s, err
		}
		s.Users = append(s.Users, u)
	}
	roles, err := queryBlobs(ctx, tx, qAuthRoles)
	if err != nil {
		return s, fmt.Errorf("read auth_role: %w", err)
	}
	for _, b := range roles {
		r, err := backends.UnmarshalRole(b)
		if err != nil {
			return s, err
		}
		s.Roles = append(s.Roles, r)
	}
	return s, nil
}

func queryBlobs(ctx context.Context, tx *sql.Tx, q string) ([][]byte, error) {
	rows, err := tx.QueryContext(ctx, q)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out [][]byte
	for rows.Next() {
		var b []byte
		if err := rows.Scan(&b); err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, rows.Err()
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
	if _, err := tx.ExecContext(ctx, qAuthSetMeta, w.Enabled, w.Revision); err != nil {
		return fmt.Errorf("write auth_meta: %w", err)
	}
	for _, u := range w.PutUsers {
		data, err := backends.MarshalAuth(u)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, qAuthPutUser, u.Name, data); err != nil {
			return fmt.Errorf("write auth_user: %w", err)
		}
	}
	for _, name := range w.DeleteUsers {
		if _, err := tx.ExecContext(ctx, qAuthDelUser, name); err != nil {
			return fmt.Errorf("delete from auth_user: %w", err)
		}
	}
	for _, r := range w.PutRoles {
		data, err := backends.MarshalAuth(r)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, qAuthPutRole, r.Name, data); err != nil {
			return fmt.Errorf("write auth_role: %w", err)
		}
	}
	for _, name := range w.DeleteRoles {
		if _, err := tx.ExecContext(ctx, qAuthDelRole, name); err != nil {
			return fmt.Errorf("delete from auth_role: %w", err)
		}
	}
	if w.DropAllTokens {
		if _, err := tx.ExecContext(ctx, qTokenDropAll); err != nil {
			return fmt.Errorf("delete from auth_token: %w", err)
		}
	}
	for _, name := range w.DropTokensOf {
		if _, err := tx.ExecContext(ctx, qTokenDropFor, name); err != nil {
			return fmt.Errorf("delete from auth_token: %w", err)
		}
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
	var secret []byte
	if err := d.r.QueryRowContext(ctx, qSecret).Scan(&secret); err != nil {
		return nil, err
	}
	if len(secret) > 0 {
		return secret, nil
	}
	fresh, err := backends.NewClusterSecret()
	if err != nil {
		return nil, err
	}
	if _, err := d.w.ExecContext(ctx, qSecretSet, fresh); err != nil {
		return nil, err
	}
	if err := d.w.QueryRowContext(ctx, qSecret).Scan(&secret); err != nil {
		return nil, err
	}
	return secret, nil
}
