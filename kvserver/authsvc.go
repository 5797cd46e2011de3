package kvserver

import (
	"context"
	"encoding/base64"
	"errors"
	"strconv"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/server/v3/auth"
	"golang.org/x/crypto/bcrypt"

	"github.com/kvsql/kvsql/backends"
)

// authService is etcd's Auth service. Changes run through authGate.change
// (the admin check and etcd's own rules on the stored state, under the
// database's auth lock); reads first bring this instance's auth state up
// to date with the database, so that they are never stale.
type authService struct {
	pb.UnimplementedAuthServer
	s *Server
}

// ok returns etcd's response header (the key-value store's revision), or
// the error converted.
func (x *authService) header(ctx context.Context) (*pb.ResponseHeader, error) {
	cur, err := x.s.currentRev(ctx)
	if err != nil {
		return nil, x.s.toGRPC(err)
	}
	return x.s.header(cur), nil
}

// change runs an admin change and returns the response header.
func (x *authService) change(ctx context.Context, op func(as auth.AuthStore) error, drop func(w *backends.AuthWrite)) (*pb.ResponseHeader, error) {
	if err := x.s.auth.change(ctx, op, drop); err != nil {
		return nil, x.s.authErr(err)
	}
	return x.header(ctx)
}

// dropTokensOf returns a drop function for one user's simple tokens (etcd
// invalidates them when the user is deleted or its password changes).
func dropTokensOf(name string) func(w *backends.AuthWrite) {
	return func(w *backends.AuthWrite) { w.DropTokensOf = append(w.DropTokensOf, name) }
}

// hashPassword is etcd's: the password is hashed before the request is
// applied, and only the hash travels on.
func (x *authService) hashPassword(password string) (string, error) {
	h, err := bcrypt.GenerateFromPassword([]byte(password), x.s.cfg.BcryptCost)
	if err != nil {
		return "", err
	}
	return base64.StdEncoding.EncodeToString(h), nil
}

func (x *authService) AuthEnable(ctx context.Context, _ *pb.AuthEnableRequest) (*pb.AuthEnableResponse, error) {
	h, err := x.change(ctx, func(as auth.AuthStore) error { return as.AuthEnable() }, nil)
	if err != nil {
		return nil, err
	}
	return &pb.AuthEnableResponse{Header: h}, nil
}

func (x *authService) AuthDisable(ctx context.Context, _ *pb.AuthDisableRequest) (*pb.AuthDisableResponse, error) {
	h, err := x.change(ctx, func(as auth.AuthStore) error {
		as.AuthDisable()
		return nil
	}, func(w *backends.AuthWrite) { w.DropAllTokens = true })
	if err != nil {
		return nil, err
	}
	return &pb.AuthDisableResponse{Header: h}, nil
}

// fresh returns the caller's identity (etcd reads it before any other
// check) and an up-to-date generation.
func (x *authService) fresh(ctx context.Context) (*auth.AuthInfo, *authGen, error) {
	ai, _, err := x.s.auth.info(ctx)
	if err != nil {
		return nil, nil, x.s.authErr(err)
	}
	g, err := x.s.auth.sync(ctx)
	if err != nil {
		return nil, nil, x.s.authErr(err)
	}
	if ai == nil {
		ai = &auth.AuthInfo{}
	}
	return ai, g, nil
}

func (x *authService) AuthStatus(ctx context.Context, _ *pb.AuthStatusRequest) (*pb.AuthStatusResponse, error) {
	_, g, err := x.fresh(ctx)
	if err != nil {
		return nil, err
	}
	h, err := x.header(ctx)
	if err != nil {
		return nil, err
	}
	return &pb.AuthStatusResponse{Header: h, Enabled: g.as.IsAuthEnabled(), AuthRevision: g.as.Revision()}, nil
}

// Authenticate checks the password and hands out a token: a JWT signed by
// this instance, or a simple token stored in the database (so that every
// instance accepts it) before this instance's provider gets it. As etcd,
// it starts over if the auth state changed between the password check and
// the token.
func (x *authService) Authenticate(ctx context.Context, r *pb.AuthenticateRequest) (*pb.AuthenticateResponse, error) {
	a := x.s.auth
	defer func() { r.Password = "" }()
	for {
		g, err := a.sync(ctx)
		if err != nil {
			return nil, x.s.authErr(err)
		}
		rev, err := g.as.CheckPassword(r.Name, r.Password)
		if err != nil {
			return nil, x.s.authErr(err)
		}
		var resp *pb.AuthenticateResponse
		if a.jwt != nil {
			if resp, err = g.as.Authenticate(ctx, r.Name, r.Password); err != nil {
				return nil, x.s.authErr(err)
			}
		} else {
			if resp, err = x.issueSimpleToken(ctx, g, r.Name, rev); errors.Is(err, backends.ErrAuthChanged) {
				continue
			} else if err != nil {
				return nil, x.s.authErr(err)
			}
		}
		if rev != a.cur.Load().as.Revision() {
			continue
		}
		if resp.Header, err = x.header(ctx); err != nil {
			return nil, err
		}
		return resp, nil
	}
}

// issueSimpleToken stores a new simple token for user, as of auth
// revision rev, and adds it to the current generation's provider.
func (x *authService) issueSimpleToken(ctx context.Context, g *authGen, user string, rev uint64) (*pb.AuthenticateResponse, error) {
	a := x.s.auth
	prefix, err := g.as.GenTokenPrefix()
	if err != nil {
		return nil, err
	}
	token := prefix + "." + strconv.FormatUint(rev, 10)
	if err := a.st.AddAuthToken(ctx, token, user, a.ttl, rev); err != nil {
		return nil, err
	}
	a.adoptMu.Lock()
	err = assignToken(ctx, a.cur.Load(), prefix, rev, user, token)
	a.adoptMu.Unlock()
	if err != nil {
		return nil, err
	}
	a.markUsed(token)
	return &pb.AuthenticateResponse{Token: token}, nil
}

func (x *authService) UserAdd(ctx context.Context, r *pb.AuthUserAddRequest) (*pb.AuthUserAddResponse, error) {
	if r.Options == nil || !r.Options.NoPassword {
		hashed, err := x.hashPassword(r.Password)
		if err != nil {
			return nil, x.s.authErr(err)
		}
		r.HashedPassword, r.Password = hashed, ""
	}
	h, err := x.change(ctx, func(as auth.AuthStore) error {
		_, err := as.UserAdd(r)
		return err
	}, nil)
	if err != nil {
		return nil, err
	}
	return &pb.AuthUserAddResponse{Header: h}, nil
}

func (x *authService) UserDelete(ctx context.Context, r *pb.AuthUserDeleteRequest) (*pb.AuthUserDeleteResponse, error) {
	h, err := x.change(ctx, func(as auth.AuthStore) error {
		_, err := as.UserDelete(r)
		return err
	}, dropTokensOf(r.Name))
	if err != nil {
		return nil, err
	}
	return &pb.AuthUserDeleteResponse{Header: h}, nil
}

func (x *authService) UserChangePassword(ctx context.Context, r *pb.AuthUserChangePasswordRequest) (*pb.AuthUserChangePasswordResponse, error) {
	if r.Password != "" {
		hashed, err := x.hashPassword(r.Password)
		if err != nil {
			return nil, x.s.authErr(err)
		}
		r.HashedPassword, r.Password = hashed, ""
	}
	h, err := x.change(ctx, func(as auth.AuthStore) error {
		_, err := as.UserChangePassword(r)
		return err
	}, dropTokensOf(r.Name))
	if err != nil {
		return nil, err
	}
	return &pb.AuthUserChangePasswordResponse{Header: h}, nil
}

func (x *authService) UserGrantRole(ctx context.Context, r *pb.AuthUserGrantRoleRequest) (*pb.AuthUserGrantRoleResponse, error) {
	h, err := x.change(ctx, func(as auth.AuthStore) error {
		_, err := as.UserGrantRole(r)
		return err
	}, nil)
	if err != nil {
		return nil, err
	}
	return &pb.AuthUserGrantRoleResponse{Header: h}, nil
}

func (x *authService) UserRevokeRole(ctx context.Context, r *pb.AuthUserRevokeRoleRequest) (*pb.AuthUserRevokeRoleResponse, error) {
	h, err := x.change(ctx, func(as auth.AuthStore) error {
		_, err := as.UserRevokeRole(r)
		return err
	}, nil)
	if err != nil {
		return nil, err
	}
	return &pb.AuthUserRevokeRoleResponse{Header: h}, nil
}

// UserGet: etcd lets users read themselves; others need the root role.
func (x *authService) UserGet(ctx context.Context, r *pb.AuthUserGetRequest) (*pb.AuthUserGetResponse, error) {
	ai, g, err := x.fresh(ctx)
	if err != nil {
		return nil, err
	}
	if err := g.as.IsAdminPermitted(ai); err != nil && r.Name != ai.Username {
		return nil, x.s.authErr(err)
	}
	resp, err := g.as.UserGet(r)
	if err != nil {
		return nil, x.s.authErr(err)
	}
	if resp.Header, err = x.header(ctx); err != nil {
		return nil, err
	}
	return resp, nil
}

func (x *authService) UserList(ctx context.Context, r *pb.AuthUserListRequest) (*pb.AuthUserListResponse, error) {
	ai, g, err := x.fresh(ctx)
	if err != nil {
		return nil, err
	}
	if err := g.as.IsAdminPermitted(ai); err != nil {
		return nil, x.s.authErr(err)
	}
	resp, err := g.as.UserList(r)
	if err != nil {
		return nil, x.s.authErr(err)
	}
	if resp.Header, err = x.header(ctx); err != nil {
		return nil, err
	}
	return resp, nil
}

func (x *authService) RoleAdd(ctx context.Context, r *pb.AuthRoleAddRequest) (*pb.AuthRoleAddResponse, error) {
	h, err := x.change(ctx, func(as auth.AuthStore) error {
		_, err := as.RoleAdd(r)
		return err
	}, nil)
	if err != nil {
		return nil, err
	}
	return &pb.AuthRoleAddResponse{Header: h}, nil
}

// RoleGet: etcd lets users read the roles they have; others need the root
// role.
func (x *authService) RoleGet(ctx context.Context, r *pb.AuthRoleGetRequest) (*pb.AuthRoleGetResponse, error) {
	ai, g, err := x.fresh(ctx)
	if err != nil {
		return nil, err
	}
	if err := g.as.IsAdminPermitted(ai); err != nil && !g.as.HasRole(ai.Username, r.Role) {
		return nil, x.s.authErr(err)
	}
	resp, err := g.as.RoleGet(r)
	if err != nil {
		return nil, x.s.authErr(err)
	}
	if resp.Header, err = x.header(ctx); err != nil {
		return nil, err
	}
	return resp, nil
}

func (x *authService) RoleList(ctx context.Context, r *pb.AuthRoleListRequest) (*pb.AuthRoleListResponse, error) {
	ai, g, err := x.fresh(ctx)
	if err != nil {
		return nil, err
	}
	if err := g.as.IsAdminPermitted(ai); err != nil {
		return nil, x.s.authErr(err)
	}
	resp, err := g.as.RoleList(r)
	if err != nil {
		return nil, x.s.authErr(err)
	}
	if resp.Header, err = x.header(ctx); err != nil {
		return nil, err
	}
	return resp, nil
}

func (x *authService) RoleDelete(ctx context.Context, r *pb.AuthRoleDeleteRequest) (*pb.AuthRoleDeleteResponse, error) {
	h, err := x.change(ctx, func(as auth.AuthStore) error {
		_, err := as.RoleDelete(r)
		return err
	}, nil)
	if err != nil {
		return nil, err
	}
	return &pb.AuthRoleDeleteResponse{Header: h}, nil
}

func (x *authService) RoleGrantPermission(ctx context.Context, r *pb.AuthRoleGrantPermissionRequest) (*pb.AuthRoleGrantPermissionResponse, error) {
	h, err := x.change(ctx, func(as auth.AuthStore) error {
		_, err := as.RoleGrantPermission(r)
		return err
	}, nil)
	if err != nil {
		return nil, err
	}
	return &pb.AuthRoleGrantPermissionResponse{Header: h}, nil
}

func (x *authService) RoleRevokePermission(ctx context.Context, r *pb.AuthRoleRevokePermissionRequest) (*pb.AuthRoleRevokePermissionResponse, error) {
	h, err := x.change(ctx, func(as auth.AuthStore) error {
		_, err := as.RoleRevokePermission(r)
		return err
	}, nil)
	if err != nil {
		return nil, err
	}
	return &pb.AuthRoleRevokePermissionResponse{Header: h}, nil
}
