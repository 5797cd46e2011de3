package kvserver

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/server/v3/auth"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	grpcpeer "google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/kvsql/kvsql/backends"
)

// Authentication and RBAC: etcd's own auth store (go.etcd.io/etcd/server/v3/auth)
// decides every question (users, roles, permissions, root rules, token
// formats, JWT signing, etcd's errors), working on an in-memory mirror of
// the state stored in the database (authMirror). An instance holds one
// generation at a time (authGen: a mirror and an etcd store on it) and
// replaces it whenever the stored state changes:
//
//   - a change through this instance (UserAdd, RoleGrantPermission, ...)
//     runs under the database's auth lock on a new generation built from
//     the stored state; what it wrote is stored, and once committed the new
//     generation becomes current (authGate.change);
//   - every AuthRefreshInterval each instance reads the stored enabled flag
//     and auth revision (one small row) and loads a new generation when they
//     differ from its own. This is the bound within which a change made
//     through one instance binds the others' reads. Writes are bound at
//     once: each applies only at the auth revision it was checked at
//     (checkWriteAuth), and one that fails for it reloads the generation.
//     Auth RPCs that read auth state (AuthStatus, UserGet, ...) and
//     Authenticate read the stored flag and revision first, so they are
//     never stale.
//
// Simple tokens live in the database as well (backends.AuthStore), so that a
// token from one instance works on every instance: an instance that does
// not know a token looks it up and adds it to its generation's token
// provider the way etcd's members apply an Authenticate request (adopt). A
// token expires AuthTokenTTL after its last use on any instance: each
// instance pushes the expiry of the tokens it saw in use to the database
// every tenth of the TTL.

// Defaults for Config's auth fields, as etcd's flags.
const (
	DefaultAuthToken    = "simple"
	DefaultAuthTokenTTL = 300 * time.Second
	// DefaultAuthRefreshInterval bounds how long a change of users, roles
	// or permissions through another instance takes to bind this one.
	DefaultAuthRefreshInterval = 100 * time.Millisecond
)

const (
	// forwardMACKey is the gRPC metadata key of a forwarded request's
	// signature (see authGate.sign).
	forwardMACKey = "kvsql-forward-mac"
	// forwardAuthRevKey carries the auth revision a forwarded write was
	// checked at (the signature covers it): the leader applies the write
	// only if that is still the stored revision (backends.WithAuthRevision).
	forwardAuthRevKey = "kvsql-forward-auth-revision"
	// minTokenFlush and maxTokenFlush bound how often token expiries are
	// pushed to the database (a tenth of the TTL).
	minTokenFlush = 100 * time.Millisecond
	maxTokenFlush = 30 * time.Second
)

// errNoAuthStore: the backend keeps no auth state.
var errNoAuthStore = status.Error(codes.Unimplemented, "kvsql: this database backend does not store auth state")

// readyIndex is the token provider's index waiter: a simple token names a
// raft index in etcd; here every index is ready.
var readyIndex = func() func(uint64) <-chan struct{} {
	c := make(chan struct{})
	close(c)
	return func(uint64) <-chan struct{} { return c }
}()

// authGen is one generation of auth state: a mirror and etcd's store on it.
type authGen struct {
	enabled bool
	rev     uint64
	m       *authMirror
	as      auth.AuthStore
}

// close stops the generation's simple token keeper.
func (g *authGen) close() { _ = g.as.Close() }

// tokenUse records when this instance last saw a simple token in use.
type tokenUse struct{ last atomic.Int64 } // Unix nanoseconds

// authGate is a Server's authentication and permission checking.
type authGate struct {
	st       backends.AuthStore // nil: the backend keeps no auth state
	log      *slog.Logger
	zl       *zap.Logger
	cost     int
	ttl      time.Duration
	certAuth bool
	refresh  time.Duration
	shared   bool // other instances may change the stored state
	// jwt is the JWT provider every generation shares (it keeps no
	// state); nil when tokens are simple.
	jwt auth.TokenProvider

	cur atomic.Pointer[authGen]
	// mu serialises loading, changing and installing generations. Lock
	// order: mu, then the database's auth lock (change) or adoptMu
	// (install); adoptMu is never held while waiting for the database.
	mu sync.Mutex
	// adoptMu serialises adding simple tokens to the current generation's
	// provider with installing a new generation: etcd's provider refuses
	// (panics on) a token it already has, and one added to a generation
	// being retired would be lost.
	adoptMu sync.Mutex
	// used holds the simple tokens this instance issued or adopted:
	// token -> *tokenUse.
	used   sync.Map
	secret atomic.Pointer[[]byte]
}

// newAuthGate checks the token options (etcd's --auth-token syntax) and
// returns a gate; the state is loaded on first use.
func newAuthGate(cfg Config, shared bool) (*authGate, error) {
	a := &authGate{
		log:      cfg.Logger.With("component", "auth"),
		zl:       zap.NewNop(),
		cost:     cfg.BcryptCost,
		ttl:      cfg.AuthTokenTTL,
		certAuth: cfg.ClientCertAuth,
		refresh:  cfg.AuthRefreshInterval,
		shared:   shared,
	}
	if st, ok := cfg.Backend.(backends.AuthStore); ok {
		a.st = st
	}
	tp, err := tokenProvider(cfg.AuthToken, a.ttl)
	if err != nil {
		return nil, err
	}
	if !strings.HasPrefix(cfg.AuthToken, "simple") {
		a.jwt = tp
	}
	return a, nil
}

// CheckAuthToken checks a value of etcd's --auth-token flag: "simple", or
// "jwt," with the JWT options (key files are read and checked).
func CheckAuthToken(spec string) error {
	_, err := tokenProvider(spec, DefaultAuthTokenTTL)
	return err
}

func tokenProvider(spec string, ttl time.Duration) (auth.TokenProvider, error) {
	kind, _, _ := strings.Cut(spec, ",")
	if kind != "simple" && kind != "jwt" {
		return nil, fmt.Errorf("--auth-token %q: want simple, or jwt,pub-key=FILE,priv-key=FILE,sign-method=ALG[,ttl=DURATION]", spec)
	}
	tp, err := auth.NewTokenProvider(zap.NewNop(), spec, readyIndex, ttl)
	if err != nil {
		return nil, fmt.Errorf("--auth-token %q: %w (want simple, or jwt,pub-key=FILE,priv-key=FILE,sign-method=ALG[,ttl=DURATION] with ALG one of RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512, EdDSA, HS256, HS384, HS512)", spec, err)
	}
	return tp, nil
}

// newGen builds a generation on state. A simple-token generation gets a
// provider of its own: the tokens of the one it replaces are adopted
// again from the database as they are used, so that a change made
// elsewhere (a deleted user, a new password) drops exactly what it
// dropped from the database.
func (a *authGate) newGen(s backends.AuthState) (*authGen, error) {
	tp := a.jwt
	if tp == nil {
		var err error
		if tp, err = auth.NewTokenProvider(a.zl, "simple", readyIndex, a.ttl); err != nil {
			return nil, err
		}
	}
	m := newAuthMirror(s)
	return &authGen{enabled: s.Enabled, rev: s.Revision, m: m, as: auth.NewAuthStore(a.zl, m, tp, a.cost)}, nil
}

// install makes g current and retires the previous generation.
func (a *authGate) install(g *authGen) {
	a.adoptMu.Lock()
	old := a.cur.Swap(g)
	a.adoptMu.Unlock()
	if old != nil {
		old.close()
	}
}

// gen returns the current generation, loading the first one.
func (a *authGate) gen(ctx context.Context) (*authGen, error) {
	if g := a.cur.Load(); g != nil {
		return g, nil
	}
	return a.sync(ctx)
}

// sync reads the stored flag and revision and, if they differ from the
// current generation's, loads and installs a new one. It returns the
// current generation.
func (a *authGate) sync(ctx context.Context) (*authGen, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.st == nil {
		if g := a.cur.Load(); g != nil {
			return g, nil
		}
		g, err := a.newGen(backends.AuthState{Revision: 1})
		if err != nil {
			return nil, err
		}
		a.install(g)
		return g, nil
	}
	if a.secret.Load() == nil {
		s, err := a.st.ClusterSecret(ctx)
		if err != nil {
			return nil, fmt.Errorf("read the cluster secret: %w", err)
		}
		a.secret.Store(&s)
	}
	cur := a.cur.Load()
	if cur != nil {
		enabled, rev, err := a.st.AuthMeta(ctx)
		if err != nil {
			return nil, fmt.Errorf("read auth state: %w", err)
		}
		if enabled == cur.enabled && rev == cur.rev {
			return cur, nil
		}
	}
	s, err := a.st.LoadAuth(ctx)
	if err != nil {
		return nil, fmt.Errorf("read auth state: %w", err)
	}
	g, err := a.newGen(s)
	if err != nil {
		return nil, err
	}
	a.install(g)
	if cur != nil {
		a.log.Debug("auth state changed", "enabled", s.Enabled, "revision", s.Revision)
	}
	return g, nil
}

// change applies op as etcd applies an admin request: with the caller's
// identity (errors first), under the database's auth lock, on a new
// generation built from the stored state, it checks that the caller may
// administer auth, runs op, stores what op changed (and drops the tokens
// drop names) and makes the new generation current.
func (a *authGate) change(ctx context.Context, op func(as auth.AuthStore) error, drop func(w *backends.AuthWrite)) error {
	ai, _, err := a.info(ctx)
	if err != nil {
		return err
	}
	if ai == nil {
		ai = &auth.AuthInfo{}
	}
	if a.st == nil {
		return errNoAuthStore
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	var next *authGen
	err = a.st.UpdateAuth(ctx, func(s backends.AuthState) (*backends.AuthWrite, error) {
		g, err := a.newGen(s)
		if err != nil {
			return nil, err
		}
		if err := g.as.IsAdminPermitted(ai); err != nil {
			g.close()
			return nil, err
		}
		if err := op(g.as); err != nil {
			g.close()
			return nil, err
		}
		w := g.m.changes(s)
		if w == nil {
			g.close()
			return nil, nil
		}
		if drop != nil {
			drop(w)
		}
		g.enabled, g.rev = w.Enabled, w.Revision
		next = g
		return w, nil
	})
	if err != nil {
		if next != nil {
			next.close()
		}
		return err
	}
	if next != nil {
		a.install(next)
	}
	return nil
}

// run keeps the generation current (on databases several instances share)
// and pushes simple token expiries to the database, until ctx ends.
func (a *authGate) run(ctx context.Context, leading func() bool) error {
	if a.st == nil {
		return nil
	}
	var poll <-chan time.Time
	if a.shared {
		t := time.NewTicker(a.refresh)
		defer t.Stop()
		poll = t.C
	}
	var flush <-chan time.Time
	if a.jwt == nil {
		t := time.NewTicker(min(max(a.ttl/10, minTokenFlush), maxTokenFlush))
		defer t.Stop()
		flush = t.C
	}
	defer func() {
		if g := a.cur.Load(); g != nil {
			g.close()
		}
	}()
	failing := false
	lastFlush := time.Now()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-poll:
			_, err := a.sync(ctx)
			if err != nil && ctx.Err() == nil && !failing {
				a.log.Warn("reading auth state failed; will retry", "err", err)
			}
			failing = err != nil
		case now := <-flush:
			if err := a.flushTokens(ctx, lastFlush, now, leading()); err != nil && ctx.Err() == nil {
				a.log.Warn("storing auth token expiries failed; will retry", "err", err)
				continue
			}
			lastFlush = now
		}
	}
}

// flushTokens moves on the stored expiry of every token used here since
// the last flush, forgets tokens unused for a TTL and, on the leader,
// deletes expired tokens.
func (a *authGate) flushTokens(ctx context.Context, since, now time.Time, leading bool) error {
	var touched []string
	a.used.Range(func(k, v any) bool {
		last := v.(*tokenUse).last.Load()
		switch {
		case last >= since.UnixNano():
			touched = append(touched, k.(string))
		case now.UnixNano()-last > int64(a.ttl):
			a.used.Delete(k)
		}
		return true
	})
	if err := a.st.TouchAuthTokens(ctx, touched, a.ttl); err != nil {
		return err
	}
	if leading {
		if _, err := a.st.PurgeAuthTokens(ctx); err != nil {
			return err
		}
	}
	return nil
}

// tokenOf returns the token a request carries (etcd's metadata keys).
func tokenOf(ctx context.Context) string {
	v := metadata.ValueFromIncomingContext(ctx, rpctypes.TokenFieldNameGRPC)
	if len(v) == 0 {
		v = metadata.ValueFromIncomingContext(ctx, rpctypes.TokenFieldNameSwagger)
	}
	if len(v) == 0 {
		return ""
	}
	return strings.TrimPrefix(v[0], "Bearer ")
}

// markUsed records that a simple token was used here.
func (a *authGate) markUsed(token string) {
	now := time.Now().UnixNano()
	if v, ok := a.used.Load(token); ok {
		u := v.(*tokenUse)
		if u.last.Load() < now {
			u.last.Store(now)
		}
		return
	}
	u := &tokenUse{}
	u.last.Store(now)
	a.used.Store(token, u)
}

// info returns the caller's identity as etcd's server finds it: from the
// request's token, else (with --client-cert-auth) from the common name of
// its verified client certificate; nil if neither (or auth is disabled and
// there is no certificate). It also returns the generation it used.
func (a *authGate) info(ctx context.Context) (*auth.AuthInfo, *authGen, error) {
	g, err := a.gen(ctx)
	if err != nil {
		return nil, nil, err
	}
	ai, err := g.as.AuthInfoFromCtx(ctx)
	if err != nil {
		if !errors.Is(err, auth.ErrInvalidAuthToken) || a.jwt != nil {
			return nil, g, err
		}
		if ai, g, err = a.adopt(ctx, g); err != nil {
			return nil, g, err
		}
	}
	if ai != nil {
		if a.jwt == nil {
			a.markUsed(tokenOf(ctx))
		}
		return ai, g, nil
	}
	if a.certAuth {
		ai = commonName(ctx, g.as)
	}
	return ai, g, nil
}

// commonName is etcd's AuthInfoFromTLS for connections that are TLS
// (etcd's asserts that they are; kvsql may serve plain listeners too).
func commonName(ctx context.Context, as auth.AuthStore) *auth.AuthInfo {
	p, ok := grpcpeer.FromContext(ctx)
	if !ok || p == nil {
		return nil
	}
	if _, isTLS := p.AuthInfo.(credentials.TLSInfo); !isTLS {
		return nil
	}
	return as.AuthInfoFromTLS(ctx)
}

// adopt looks up a simple token this generation does not know in the
// database and, if it is stored and unexpired, adds it to the current
// generation's provider as etcd's members apply an Authenticate request.
func (a *authGate) adopt(ctx context.Context, g *authGen) (*auth.AuthInfo, *authGen, error) {
	token := tokenOf(ctx)
	prefix, index, ok := splitSimpleToken(token)
	if !ok || a.st == nil {
		return nil, g, auth.ErrInvalidAuthToken
	}
	user, err := a.st.AuthTokenUser(ctx, token)
	if errors.Is(err, backends.ErrTokenNotFound) {
		return nil, g, auth.ErrInvalidAuthToken
	}
	if err != nil {
		return nil, g, fmt.Errorf("look up auth token: %w", err)
	}
	a.adoptMu.Lock()
	defer a.adoptMu.Unlock()
	g = a.cur.Load()
	if ai, err := g.as.AuthInfoFromCtx(ctx); err == nil && ai != nil {
		return ai, g, nil // adopted meanwhile
	}
	if err := assignToken(ctx, g, prefix, index, user, token); err != nil {
		return nil, g, auth.ErrInvalidAuthToken
	}
	ai, err := g.as.AuthInfoFromCtx(ctx)
	if err != nil || ai == nil {
		return nil, g, auth.ErrInvalidAuthToken
	}
	return ai, g, nil
}

// assignToken adds simple token prefix.index for user to g's provider
// through etcd's Authenticate (which checks that auth is enabled and the
// user exists and has a password). Call with adoptMu held.
func assignToken(ctx context.Context, g *authGen, prefix string, index uint64, user, token string) error {
	actx := context.WithValue(context.WithValue(ctx, auth.AuthenticateParamIndex{}, index), auth.AuthenticateParamSimpleTokenPrefix{}, prefix)
	resp, err := g.as.Authenticate(actx, user, "")
	if err != nil {
		return err
	}
	if resp.Token != token {
		return fmt.Errorf("token provider made %q of %q", resp.Token, token)
	}
	return nil
}

// splitSimpleToken splits a simple token, PREFIX.INDEX, as etcd reads it.
func splitSimpleToken(token string) (string, uint64, bool) {
	prefix, idx, ok := strings.Cut(token, ".")
	if !ok || strings.Contains(idx, ".") {
		return "", 0, false
	}
	index, err := strconv.ParseUint(idx, 10, 64)
	if err != nil || strconv.FormatUint(index, 10) != idx {
		return "", 0, false
	}
	return prefix, index, true
}

// sign returns the signature of a request this instance forwards to member
// target, or false if the cluster secret is not known yet. It binds the
// target, the request's type, its content and the auth revision its
// permission check was made at (0: none, auth disabled; then the signature
// is the one instances made before revisions were forwarded).
func (a *authGate) sign(target uint64, m proto.Message, authRev uint64) (string, bool) {
	sp := a.secret.Load()
	if sp == nil {
		return "", false
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return "", false
	}
	h := hmac.New(sha256.New, *sp)
	h.Write([]byte("kvsql-forward/1\x00"))
	var id [8]byte
	binary.BigEndian.PutUint64(id[:], target)
	h.Write(id[:])
	h.Write([]byte(proto.MessageName(m)))
	h.Write([]byte{0})
	h.Write(b)
	if authRev != 0 {
		var rev [8]byte
		binary.BigEndian.PutUint64(rev[:], authRev)
		h.Write([]byte("\x00auth-revision\x00"))
		h.Write(rev[:])
	}
	return hex.EncodeToString(h.Sum(nil)), true
}

// trusted reports whether a request was forwarded to this instance (self)
// by another instance of the cluster, which checked the client's
// permissions itself: it carries a valid signature. Anything else is
// checked as a client request. authRev is the auth revision the sender
// checked the request at (0: none), which the signature covers.
func (a *authGate) trusted(ctx context.Context, self uint64, m proto.Message) (authRev uint64, ok bool) {
	v := metadata.ValueFromIncomingContext(ctx, forwardMACKey)
	if len(v) != 1 {
		return 0, false
	}
	if r := metadata.ValueFromIncomingContext(ctx, forwardAuthRevKey); len(r) == 1 {
		var err error
		if authRev, err = strconv.ParseUint(r[0], 10, 64); err != nil || authRev == 0 {
			return 0, false
		}
	}
	want, ok := a.sign(self, m, authRev)
	if !ok || !hmac.Equal([]byte(v[0]), []byte(want)) {
		return 0, false
	}
	return authRev, true
}

// authErrors maps etcd's auth errors to the gRPC errors etcd returns.
var authErrors = map[error]error{
	auth.ErrRootUserNotExist:     rpctypes.ErrGRPCRootUserNotExist,
	auth.ErrRootRoleNotExist:     rpctypes.ErrGRPCRootRoleNotExist,
	auth.ErrUserAlreadyExist:     rpctypes.ErrGRPCUserAlreadyExist,
	auth.ErrUserEmpty:            rpctypes.ErrGRPCUserEmpty,
	auth.ErrUserNotFound:         rpctypes.ErrGRPCUserNotFound,
	auth.ErrRoleAlreadyExist:     rpctypes.ErrGRPCRoleAlreadyExist,
	auth.ErrRoleNotFound:         rpctypes.ErrGRPCRoleNotFound,
	auth.ErrRoleEmpty:            rpctypes.ErrGRPCRoleEmpty,
	auth.ErrAuthFailed:           rpctypes.ErrGRPCAuthFailed,
	auth.ErrPermissionNotGiven:   rpctypes.ErrGRPCPermissionNotGiven,
	auth.ErrPermissionDenied:     rpctypes.ErrGRPCPermissionDenied,
	auth.ErrRoleNotGranted:       rpctypes.ErrGRPCRoleNotGranted,
	auth.ErrPermissionNotGranted: rpctypes.ErrGRPCPermissionNotGranted,
	auth.ErrAuthNotEnabled:       rpctypes.ErrGRPCAuthNotEnabled,
	auth.ErrInvalidAuthToken:     rpctypes.ErrGRPCInvalidAuthToken,
	auth.ErrInvalidAuthMgmt:      rpctypes.ErrGRPCInvalidAuthMgmt,
	auth.ErrAuthOldRevision:      rpctypes.ErrGRPCAuthOldRevision,
}

// etcdAuthErrors are etcd's other auth errors, which etcd returns with code
// Unknown and their own text.
var etcdAuthErrors = []error{
	auth.ErrNoPasswordUser, auth.ErrInvalidAuthOpts, auth.ErrInvalidAuthMethod,
	auth.ErrMissingKey, auth.ErrKeyMismatch, auth.ErrVerifyOnly,
}

// isAuthError reports whether err is one of etcd's auth errors.
func isAuthError(err error) bool {
	if _, ok := authErrors[err]; ok {
		return true
	}
	for _, e := range etcdAuthErrors {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// authErr is the package-level authErr that converts (and logs) database
// errors as Server.toGRPC does.
func (s *Server) authErr(err error) error {
	if err == nil || isAuthError(err) {
		return authErr(err)
	}
	return s.toGRPC(err)
}

// authErr converts an error of the auth layer to the gRPC error etcd
// returns; database errors as toGRPC does.
func authErr(err error) error {
	if err == nil {
		return nil
	}
	if e, ok := authErrors[err]; ok {
		return e
	}
	for _, e := range etcdAuthErrors {
		if errors.Is(err, e) {
			return status.Error(codes.Unknown, err.Error())
		}
	}
	return toGRPC(err)
}
