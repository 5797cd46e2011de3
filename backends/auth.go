package backends

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"time"

	"go.etcd.io/etcd/api/v3/authpb"
	"google.golang.org/protobuf/proto"
)

// Auth storage: etcd's users, roles, enabled flag and auth revision (what
// etcd keeps in the auth, authUsers and authRoles buckets of its bolt file),
// and the simple tokens Authenticate hands out. They live in the database
// (the auth_* tables, migration 004) so that every instance sharing it
// enforces the same users and permissions and a restart keeps them.

// Errors of AuthStore.
var (
	// ErrAuthChanged: the stored auth revision is no longer the one the
	// caller read (AddAuthToken); read the state again and retry.
	ErrAuthChanged = errors.New("auth state changed")
	// ErrTokenNotFound: no such simple token, or it has expired.
	ErrTokenNotFound = errors.New("auth token not found")
	// ErrAuthOldRevision: a write was checked against an auth revision
	// that is no longer the stored one when its batch took the write lock
	// (a user, role or permission changed in between, through any
	// instance). Nothing of the write was applied; etcd fails the request
	// the same way (its ErrAuthOldRevision), and its clients check again
	// and retry.
	ErrAuthOldRevision = errors.New("the auth state changed after the write was checked")
)

// authRevisionKey is the context key of WithAuthRevision.
type authRevisionKey struct{}

// WithAuthRevision returns ctx for a write that was permitted by the auth
// state at revision rev: the Engine applies it only if rev is still the
// stored auth revision when its batch holds the write lock, and fails it
// with ErrAuthOldRevision otherwise. Auth changes take the same lock
// before they commit (every dialect's UpdateAuth), so a write never
// commits after a change that would have refused it: the change binds
// every instance at once, as etcd's apply-time check does. rev 0 (auth
// disabled at the check) adds no condition.
func WithAuthRevision(ctx context.Context, rev uint64) context.Context {
	if rev == 0 {
		return ctx
	}
	return context.WithValue(ctx, authRevisionKey{}, rev)
}

// AuthRevisionOf returns the auth revision ctx's write was checked
// against (WithAuthRevision), 0 if none.
func AuthRevisionOf(ctx context.Context) uint64 {
	rev, _ := ctx.Value(authRevisionKey{}).(uint64)
	return rev
}

// AuthState is the stored auth state, as etcd's auth buckets hold it.
type AuthState struct {
	Enabled bool
	// Revision is etcd's auth revision: 1 in a new database, incremented
	// by every change of users, roles or permissions and by disabling auth.
	Revision uint64
	// Users and Roles are in name order (bytewise), as etcd's buckets.
	Users []*authpb.User
	Roles []*authpb.Role
}

// AuthWrite is one change of the stored auth state, applied atomically.
type AuthWrite struct {
	Enabled  bool
	Revision uint64
	// PutUsers and PutRoles are stored under their names (replacing any
	// stored one); DeleteUsers and DeleteRoles are removed.
	PutUsers    []*authpb.User
	DeleteUsers [][]byte
	PutRoles    []*authpb.Role
	DeleteRoles [][]byte
	// DropTokensOf removes the simple tokens of these users (a deleted
	// user, a changed password); DropAllTokens removes every token (auth
	// disabled), as etcd invalidates them.
	DropTokensOf  []string
	DropAllTokens bool
}

// AuthStore is implemented by backends that keep etcd's auth state. Every
// method is safe for concurrent use, also by several instances sharing the
// database.
type AuthStore interface {
	// AuthMeta reads the stored enabled flag and auth revision: one small
	// row, cheap enough to poll.
	AuthMeta(ctx context.Context) (enabled bool, revision uint64, err error)
	// LoadAuth reads the whole state from one snapshot.
	LoadAuth(ctx context.Context) (AuthState, error)
	// UpdateAuth takes the database's auth lock, reads the current state
	// and calls fn with it; the write fn returns (nil: none) is applied and
	// committed before the lock is released. Before the commit it also
	// takes the global write lock (briefly: fn has run by then), so that
	// it commits between two write batches, never during one (see
	// WithAuthRevision). An error from fn is returned as it is and nothing
	// changes.
	UpdateAuth(ctx context.Context, fn func(AuthState) (*AuthWrite, error)) error

	// AddAuthToken stores a simple token for user, expiring ttl from now
	// on the database clock, if the stored auth revision is still
	// revision (the one the password was checked against); else it
	// returns ErrAuthChanged and stores nothing.
	AddAuthToken(ctx context.Context, token, user string, ttl time.Duration, revision uint64) error
	// AuthTokenUser returns the user of an unexpired simple token, or
	// ErrTokenNotFound.
	AuthTokenUser(ctx context.Context, token string) (string, error)
	// TouchAuthTokens sets the expiry of these tokens (those that still
	// exist) to ttl from now.
	TouchAuthTokens(ctx context.Context, tokens []string, ttl time.Duration) error
	// PurgeAuthTokens deletes expired tokens and returns how many.
	PurgeAuthTokens(ctx context.Context) (int64, error)

	// ClusterSecret returns the random secret every instance of this
	// database shares (created by the first caller); instances sign the
	// requests they forward to each other with it.
	ClusterSecret(ctx context.Context) ([]byte, error)
}

// AuthTxReader reads the auth state in a transaction's own snapshot
// (SnapshotView.Auth); every dialect's transactions implement it.
type AuthTxReader interface {
	ReadAuth(ctx context.Context) (AuthState, error)
	// AuthRevision reads the stored auth revision. In a write transaction
	// it is the one read right after the write lock was taken (in the same
	// round trip), which no auth change can move until the transaction
	// ends: UpdateAuth takes the write lock before it commits.
	AuthRevision(ctx context.Context) (uint64, error)
}

// SortAuthState puts users and roles in name order, as etcd's buckets
// list them.
func SortAuthState(s *AuthState) {
	slices.SortFunc(s.Users, func(a, b *authpb.User) int { return bytes.Compare(a.Name, b.Name) })
	slices.SortFunc(s.Roles, func(a, b *authpb.Role) int { return bytes.Compare(a.Name, b.Name) })
}

// ReplaceAuth stores s as the whole auth state, as restoring a snapshot
// does: users and roles not in s are deleted and every simple token is
// dropped. (LoadAuth is the other direction: the state as etcd's auth
// buckets hold it, for writing a snapshot.)
func ReplaceAuth(ctx context.Context, st AuthStore, s AuthState) error {
	return st.UpdateAuth(ctx, func(cur AuthState) (*AuthWrite, error) {
		w := &AuthWrite{Enabled: s.Enabled, Revision: s.Revision, PutUsers: s.Users, PutRoles: s.Roles, DropAllTokens: true}
		users := map[string]bool{}
		for _, u := range s.Users {
			users[string(u.Name)] = true
		}
		for _, u := range cur.Users {
			if !users[string(u.Name)] {
				w.DeleteUsers = append(w.DeleteUsers, u.Name)
			}
		}
		roles := map[string]bool{}
		for _, r := range s.Roles {
			roles[string(r.Name)] = true
		}
		for _, r := range cur.Roles {
			if !roles[string(r.Name)] {
				w.DeleteRoles = append(w.DeleteRoles, r.Name)
			}
		}
		return w, nil
	})
}

var _ AuthStore = (*Engine)(nil)

func (e *Engine) authDialect() (AuthStore, error) {
	select {
	case <-e.stop:
		return nil, ErrClosed
	default:
	}
	return e.d, nil
}

// AuthMeta implements AuthStore.
func (e *Engine) AuthMeta(ctx context.Context) (bool, uint64, error) {
	a, err := e.authDialect()
	if err != nil {
		return false, 0, err
	}
	return a.AuthMeta(ctx)
}

// LoadAuth implements AuthStore.
func (e *Engine) LoadAuth(ctx context.Context) (AuthState, error) {
	a, err := e.authDialect()
	if err != nil {
		return AuthState{}, err
	}
	s, err := a.LoadAuth(ctx)
	SortAuthState(&s)
	return s, err
}

// UpdateAuth implements AuthStore.
func (e *Engine) UpdateAuth(ctx context.Context, fn func(AuthState) (*AuthWrite, error)) error {
	a, err := e.authDialect()
	if err != nil {
		return err
	}
	return a.UpdateAuth(ctx, func(s AuthState) (*AuthWrite, error) {
		SortAuthState(&s)
		return fn(s)
	})
}

// AddAuthToken implements AuthStore.
func (e *Engine) AddAuthToken(ctx context.Context, token, user string, ttl time.Duration, revision uint64) error {
	a, err := e.authDialect()
	if err != nil {
		return err
	}
	return a.AddAuthToken(ctx, token, user, ttl, revision)
}

// AuthTokenUser implements AuthStore.
func (e *Engine) AuthTokenUser(ctx context.Context, token string) (string, error) {
	a, err := e.authDialect()
	if err != nil {
		return "", err
	}
	return a.AuthTokenUser(ctx, token)
}

// TouchAuthTokens implements AuthStore.
func (e *Engine) TouchAuthTokens(ctx context.Context, tokens []string, ttl time.Duration) error {
	if len(tokens) == 0 {
		return nil
	}
	a, err := e.authDialect()
	if err != nil {
		return err
	}
	return a.TouchAuthTokens(ctx, tokens, ttl)
}

// PurgeAuthTokens implements AuthStore.
func (e *Engine) PurgeAuthTokens(ctx context.Context) (int64, error) {
	a, err := e.authDialect()
	if err != nil {
		return 0, err
	}
	return a.PurgeAuthTokens(ctx)
}

// ClusterSecret implements AuthStore.
func (e *Engine) ClusterSecret(ctx context.Context) ([]byte, error) {
	a, err := e.authDialect()
	if err != nil {
		return nil, err
	}
	return a.ClusterSecret(ctx)
}

// clusterSecretBytes is the length of a new ClusterSecret.
const clusterSecretBytes = 32

// ReadOrCreateClusterSecret returns the stored cluster secret (read
// reads it; empty while none is stored), storing a new random one first
// if there is none. set must store its argument only where no secret is
// stored yet: if another instance stored one first, that one is returned.
func ReadOrCreateClusterSecret(read func() ([]byte, error), set func([]byte) error) ([]byte, error) {
	secret, err := read()
	if err != nil || len(secret) > 0 {
		return secret, err
	}
	fresh := make([]byte, clusterSecretBytes)
	if _, err := rand.Read(fresh); err != nil {
		return nil, err
	}
	if err := set(fresh); err != nil {
		return nil, err
	}
	return read()
}

// UnmarshalUser decodes a stored user.
func UnmarshalUser(data []byte) (*authpb.User, error) {
	u := &authpb.User{}
	if err := proto.Unmarshal(data, u); err != nil {
		return nil, fmt.Errorf("decode stored auth user: %w", err)
	}
	return u, nil
}

// UnmarshalRole decodes a stored role.
func UnmarshalRole(data []byte) (*authpb.Role, error) {
	r := &authpb.Role{}
	if err := proto.Unmarshal(data, r); err != nil {
		return nil, fmt.Errorf("decode stored auth role: %w", err)
	}
	return r, nil
}

// MarshalAuth encodes a user or role for storage.
func MarshalAuth(m proto.Message) ([]byte, error) {
	return proto.MarshalOptions{Deterministic: true}.Marshal(m)
}

// AuthSQL names a dialect's statements for the parts of an auth write, in
// the argument order ApplyAuthWrite passes.
type AuthSQL struct {
	SetMeta          string // (enabled, revision)
	PutUser, PutRole string // (name, stored data): insert or replace
	DelUser, DelRole string // (name)
	DropTokensOf     string // (user name)
	DropAllTokens    string
}

// ApplyAuthWrite runs w through exec, one statement at a time: the meta
// row, users, roles, then tokens. A name longer than maxName bytes (0: no
// limit) is refused before anything runs, naming the limit; an error from
// exec is returned naming the table it was writing.
func ApplyAuthWrite(w *AuthWrite, q AuthSQL, maxName int, exec func(query string, args ...any) error) error {
	if maxName > 0 {
		for _, u := range w.PutUsers {
			if len(u.Name) > maxName {
				return fmt.Errorf("user name of %d bytes: this database stores names up to %d bytes", len(u.Name), maxName)
			}
		}
		for _, r := range w.PutRoles {
			if len(r.Name) > maxName {
				return fmt.Errorf("role name of %d bytes: this database stores names up to %d bytes", len(r.Name), maxName)
			}
		}
	}
	run := func(what, query string, args ...any) error {
		if err := exec(query, args...); err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		return nil
	}
	if err := run("write auth_meta", q.SetMeta, w.Enabled, int64(w.Revision)); err != nil {
		return err
	}
	for _, u := range w.PutUsers {
		data, err := MarshalAuth(u)
		if err != nil {
			return err
		}
		if err := run("write auth_user", q.PutUser, u.Name, data); err != nil {
			return err
		}
	}
	for _, name := range w.DeleteUsers {
		if err := run("delete from auth_user", q.DelUser, name); err != nil {
			return err
		}
	}
	for _, r := range w.PutRoles {
		data, err := MarshalAuth(r)
		if err != nil {
			return err
		}
		if err := run("write auth_role", q.PutRole, r.Name, data); err != nil {
			return err
		}
	}
	for _, name := range w.DeleteRoles {
		if err := run("delete from auth_role", q.DelRole, name); err != nil {
			return err
		}
	}
	if w.DropAllTokens {
		if err := run("delete from auth_token", q.DropAllTokens); err != nil {
			return err
		}
	}
	for _, name := range w.DropTokensOf {
		if err := run("delete from auth_token", q.DropTokensOf, name); err != nil {
			return err
		}
	}
	return nil
}

// ReadUsersAndRoles fills s's users and roles from their stored forms;
// query runs usersQ or rolesQ and returns the one column of its rows.
func ReadUsersAndRoles(s *AuthState, query func(q string) ([][]byte, error), usersQ, rolesQ string) error {
	users, err := query(usersQ)
	if err != nil {
		return fmt.Errorf("read auth_user: %w", err)
	}
	for _, b := range users {
		u, err := UnmarshalUser(b)
		if err != nil {
			return err
		}
		s.Users = append(s.Users, u)
	}
	roles, err := query(rolesQ)
	if err != nil {
		return fmt.Errorf("read auth_role: %w", err)
	}
	for _, b := range roles {
		r, err := UnmarshalRole(b)
		if err != nil {
			return err
		}
		s.Roles = append(s.Roles, r)
	}
	return nil
}
