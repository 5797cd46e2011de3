package kvserver

import (
	"context"
	"errors"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/server/v3/auth"
	"google.golang.org/protobuf/proto"

	"github.com/kvsql/kvsql/backends"
)

// Permission checks, made where etcd makes them and in its order: etcd
// checks reads in its API layer (doSerialize), writes when it applies them
// (with the identity the request carried), admin calls in both. kvsql has
// no apply step: a write is checked just before it is written (or
// forwarded), against the current generation, and then applies only if
// that generation's revision is still the stored one when its batch holds
// the write lock (backends.WithAuthRevision), which gives etcd's answers,
// ErrAuthOldRevision included, whichever instance changed the auth state. The functions return etcd's auth errors;
// services convert them with authErr.

// serialize is etcd's doSerialize: identity, check, read, then
// ErrAuthOldRevision if the auth state changed meanwhile (that error wins
// over the read's own).
func (a *authGate) serialize(ctx context.Context, chk func(as auth.AuthStore, ai *auth.AuthInfo) error, get func() error) error {
	ai, g, err := a.info(ctx)
	if err != nil {
		return err
	}
	if ai == nil {
		ai = &auth.AuthInfo{}
	}
	if err := chk(g.as, ai); err != nil {
		return err
	}
	gerr := get()
	if ai.Revision != 0 && ai.Revision != a.cur.Load().as.Revision() {
		return auth.ErrAuthOldRevision
	}
	return gerr
}

// writer is the identity a write carries to its check (nil: none);
// trusted marks a write another instance forwarded after checking it, at
// auth revision authRev (0: auth was disabled there).
type writer struct {
	ai      *auth.AuthInfo
	trusted bool
	authRev uint64
}

// identify returns the identity for a write request m (etcd reads it
// before proposing the request).
func (a *authGate) identify(ctx context.Context, self uint64, m proto.Message) (writer, error) {
	if rev, ok := a.trusted(ctx, self, m); ok {
		return writer{trusted: true, authRev: rev}, nil
	}
	ai, _, err := a.info(ctx)
	if err != nil {
		return writer{}, err
	}
	return writer{ai: ai}, nil
}

// current returns the current generation's store (the one a write is
// checked against, as etcd checks at apply time).
func (a *authGate) current(ctx context.Context) (auth.AuthStore, error) {
	g, err := a.gen(ctx)
	if err != nil {
		return nil, err
	}
	return g.as, nil
}

// leaseKeys lists the keys attached to a lease (nil if there is no such lease).
type leaseKeys func(ctx context.Context, id int64) ([][]byte, error)

// checkPutAuth is etcd's check of a Put.
func checkPutAuth(ctx context.Context, as auth.AuthStore, ai *auth.AuthInfo, keys leaseKeys, r *pb.PutRequest) error {
	if err := as.IsPutPermitted(ai, r.Key); err != nil {
		return err
	}
	if err := checkLeasePuts(ctx, as, ai, keys, r.Lease); err != nil {
		return err
	}
	if r.PrevKv {
		return as.IsRangePermitted(ai, r.Key, nil)
	}
	return nil
}

// checkLeasePuts: a caller that may not write every key attached to a
// lease may neither revoke it nor attach it to a key (etcd's
// checkLeasePuts). Admins (and everyone while auth is disabled) may.
func checkLeasePuts(ctx context.Context, as auth.AuthStore, ai *auth.AuthInfo, keys leaseKeys, id int64) error {
	if id == 0 || as.IsAdminPermitted(ai) == nil {
		return nil
	}
	ks, err := keys(ctx, id)
	if err != nil {
		return err
	}
	for _, k := range ks {
		if err := as.IsPutPermitted(ai, k); err != nil {
			return err
		}
	}
	return nil
}

// checkDeleteAuth is etcd's check of a DeleteRange.
func checkDeleteAuth(as auth.AuthStore, ai *auth.AuthInfo, r *pb.DeleteRangeRequest) error {
	if err := as.IsDeleteRangePermitted(ai, r.Key, r.RangeEnd); err != nil {
		return err
	}
	if r.PrevKv {
		return as.IsRangePermitted(ai, r.Key, r.RangeEnd)
	}
	return nil
}

// checkTxnAuth is etcd's CheckTxnAuth: every compare, then every op of
// both branches, nested txns included.
func checkTxnAuth(ctx context.Context, as auth.AuthStore, ai *auth.AuthInfo, keys leaseKeys, r *pb.TxnRequest) error {
	for _, c := range r.Compare {
		if err := as.IsRangePermitted(ai, c.Key, c.RangeEnd); err != nil {
			return err
		}
	}
	for _, ops := range [][]*pb.RequestOp{r.Success, r.Failure} {
		for _, op := range ops {
			var err error
			switch v := op.Request.(type) {
			case *pb.RequestOp_RequestRange:
				if v.RequestRange != nil {
					err = as.IsRangePermitted(ai, v.RequestRange.Key, v.RequestRange.RangeEnd)
				}
			case *pb.RequestOp_RequestPut:
				if v.RequestPut != nil {
					err = checkPutAuth(ctx, as, ai, keys, v.RequestPut)
				}
			case *pb.RequestOp_RequestDeleteRange:
				if d := v.RequestDeleteRange; d != nil {
					if d.PrevKv {
						err = as.IsRangePermitted(ai, d.Key, d.RangeEnd)
					}
					if err == nil {
						err = as.IsDeleteRangePermitted(ai, d.Key, d.RangeEnd)
					}
				}
			case *pb.RequestOp_RequestTxn:
				if v.RequestTxn != nil {
					err = checkTxnAuth(ctx, as, ai, keys, v.RequestTxn)
				}
			}
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// requireAuthInfo is etcd's: with auth enabled the caller must be someone.
func (a *authGate) requireAuthInfo(ctx context.Context) error {
	g, err := a.gen(ctx)
	if err != nil {
		return err
	}
	if !g.as.IsAuthEnabled() {
		return nil
	}
	ai, _, err := a.info(ctx)
	if err != nil {
		return err
	}
	if ai == nil {
		return auth.ErrUserEmpty
	}
	return nil
}

// isAdmin is etcd's AuthAdmin.isPermitted: the caller has the root role
// (anyone may while auth is disabled).
func (a *authGate) isAdmin(ctx context.Context) error {
	ai, g, err := a.info(ctx)
	if err != nil {
		return err
	}
	return g.as.IsAdminPermitted(ai)
}

// leaseKeysOf returns a leaseKeys reading the backend.
func (s *Server) leaseKeysOf() leaseKeys {
	return func(ctx context.Context, id int64) ([][]byte, error) {
		info, err := s.be.LeaseInfo(ctx, id, true)
		if errors.Is(err, backends.ErrLeaseNotFound) {
			return nil, nil
		}
		return info.Keys, err
	}
}

// checkLeaseKeys checks the keys attached to a lease as etcd does for a
// keep-alive (write: every key writable, checkLeaseRenew) and for
// LeaseTimeToLive with keys (read: every key readable,
// checkLeaseTimeToLive). Admins pass. It returns the auth revision the
// check started at; a keep-alive check fails with ErrAuthOldRevision if
// the state changed during it.
func (a *authGate) checkLeaseKeys(ctx context.Context, keys leaseKeys, id int64, write bool) (uint64, error) {
	g, err := a.gen(ctx)
	if err != nil {
		return 0, err
	}
	rev := g.as.Revision()
	if !g.as.IsAuthEnabled() {
		return rev, nil
	}
	ai, g, err := a.info(ctx)
	if err != nil {
		return rev, err
	}
	if ai == nil {
		return rev, auth.ErrUserEmpty
	}
	if g.as.IsAdminPermitted(ai) == nil {
		return rev, nil
	}
	ks, err := keys(ctx, id)
	if err != nil {
		return rev, err
	}
	for _, k := range ks {
		if write {
			err = g.as.IsPutPermitted(ai, k)
		} else {
			err = g.as.IsRangePermitted(ai, k, []byte{})
		}
		if err != nil {
			return 0, err
		}
	}
	if write && rev != a.cur.Load().as.Revision() {
		return rev, auth.ErrAuthOldRevision
	}
	return rev, nil
}

// enabledAndChangedSince reports whether auth is enabled and its revision
// is no longer rev (etcd's last check of LeaseTimeToLive with keys).
func (a *authGate) enabledAndChangedSince(rev uint64) bool {
	as := a.cur.Load().as
	return as.IsAuthEnabled() && as.Revision() != rev
}

// checkLeases is etcd's checkLeaseLeases: listing leases needs read
// permission on every key attached to any of them (admins pass).
func (a *authGate) checkLeases(ctx context.Context, keys leaseKeys, ids []int64) error {
	g, err := a.gen(ctx)
	if err != nil {
		return err
	}
	rev := g.as.Revision()
	if !g.as.IsAuthEnabled() {
		return nil
	}
	ai, g, err := a.info(ctx)
	if err != nil {
		return err
	}
	if ai == nil {
		return auth.ErrUserEmpty
	}
	if g.as.IsAdminPermitted(ai) == nil {
		return nil
	}
	for _, id := range ids {
		ks, err := keys(ctx, id)
		if err != nil {
			return err
		}
		for _, k := range ks {
			if err := g.as.IsRangePermitted(ai, k, []byte{}); err != nil {
				return err
			}
		}
	}
	if rev != a.cur.Load().as.Revision() {
		return auth.ErrAuthOldRevision
	}
	return nil
}

// authorizeApply checks a request as etcd does when it applies it: with
// the identity the request carries, against the current auth state. With
// auth enabled, the returned context binds the write to the auth revision
// it was checked at (backends.WithAuthRevision): if the auth state changed
// meanwhile, through any instance, the write fails unapplied with
// ErrAuthOldRevision.
func (s *Server) authorizeApply(ctx context.Context, chk func(as auth.AuthStore, ai *auth.AuthInfo) error) (context.Context, error) {
	ai, _, err := s.auth.info(ctx)
	if err != nil {
		return ctx, s.authErr(err)
	}
	if ai == nil {
		ai = &auth.AuthInfo{}
	}
	as, err := s.auth.current(ctx)
	if err != nil {
		return ctx, s.authErr(err)
	}
	if err := chk(as, ai); err != nil {
		return ctx, s.authErr(err)
	}
	if !as.IsAuthEnabled() {
		return ctx, nil
	}
	return backends.WithAuthRevision(ctx, as.Revision()), nil
}

// watchRefusal returns the cancel reason etcd gives a watch the caller
// may not create; false if err is not an auth error (the database failed).
func watchRefusal(err error) (string, bool) {
	switch {
	case errors.Is(err, auth.ErrInvalidAuthToken):
		return rpctypes.ErrGRPCInvalidAuthToken.Error(), true
	case errors.Is(err, auth.ErrAuthOldRevision):
		return rpctypes.ErrGRPCAuthOldRevision.Error(), true
	case errors.Is(err, auth.ErrUserEmpty):
		return rpctypes.ErrGRPCUserEmpty.Error(), true
	case isAuthError(err):
		return rpctypes.ErrGRPCPermissionDenied.Error(), true
	}
	return "", false
}

// watchPermitted is etcd's isWatchPermitted.
func (a *authGate) watchPermitted(ctx context.Context, key, end []byte) error {
	ai, g, err := a.info(ctx)
	if err != nil {
		return err
	}
	if ai == nil {
		ai = &auth.AuthInfo{}
	}
	return g.as.IsRangePermitted(ai, key, end)
}
