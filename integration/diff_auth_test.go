package integration

// Differential tests of authentication and RBAC: every Auth RPC, and the
// permission check of every RPC etcd checks, against a real etcd with the
// same users, roles and token settings. Tokens differ between the servers
// (each issues its own), so an Authenticate answer is compared with its
// token blanked, and each later request carries the token its own server
// issued.

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/pkg/v3/idutil"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"
)

// authSession is one user's tokens, one per server.
type authSession struct {
	user        string
	etcd, kvsql string
}

// rawToken is a session that sends the same token to both servers.
func rawToken(tok string) *authSession {
	return &authSession{user: "token " + tok, etcd: tok, kvsql: tok}
}

// ctx adds the session's token for tg to ctx (nil session: no token).
func (s *authSession) ctx(ctx context.Context, tg target) context.Context {
	if s == nil {
		return ctx
	}
	tok := s.etcd
	if tg.name == "kvsql" {
		tok = s.kvsql
	}
	return metadata.AppendToOutgoingContext(ctx, rpctypes.TokenFieldNameGRPC, tok)
}

func (s *authSession) name() string {
	if s == nil {
		return "anonymous"
	}
	return s.user
}

// doAs is do with the session's tokens.
func doAs[M proto.Message](d *differ, s *authSession, what string, f func(ctx context.Context, tg target) (M, error)) (M, error) {
	d.t.Helper()
	return do(d, s.name()+": "+what, func(ctx context.Context, tg target) (M, error) {
		return f(s.ctx(ctx, tg), tg)
	})
}

// errOnly compares only the errors of f: for answers that differ between
// etcd and kvsql by nature (Status, HashKV, MemberList ...).
func errOnly[M proto.Message](d *differ, s *authSession, what string, f func(ctx context.Context, tg target) (M, error)) error {
	d.t.Helper()
	_, err := doAs(d, s, what, func(ctx context.Context, tg target) (*pb.ResponseHeader, error) {
		_, err := f(ctx, tg)
		if err != nil {
			return nil, err
		}
		return &pb.ResponseHeader{}, nil
	})
	return err
}

// authenticate logs user in on both servers, compares the answers (token
// blanked) and returns the session (nil if it failed, as it must on both).
func (d *differ) authenticate(user, password string) *authSession {
	d.t.Helper()
	s, _ := d.login(user, password)
	return s
}

// login is authenticate that also returns etcd's error.
func (d *differ) login(user, password string) (*authSession, error) {
	d.t.Helper()
	ctx, cancel := context.WithTimeout(d.ctx, diffTimeout)
	defer cancel()
	req := &pb.AuthenticateRequest{Name: user, Password: password}
	want, werr := d.etcd.auth.Authenticate(ctx, req)
	got, gerr := d.kv.auth.Authenticate(ctx, req)
	blank := func(r *pb.AuthenticateResponse) proto.Message {
		if r == nil {
			return nil
		}
		c := proto.Clone(r).(*pb.AuthenticateResponse)
		if c.Token != "" {
			c.Token = "<token>"
		}
		return c
	}
	d.compare("Authenticate "+user, blank(want), werr, blank(got), gerr)
	if werr != nil || gerr != nil {
		return nil, werr
	}
	return &authSession{user: user, etcd: want.Token, kvsql: got.Token}, nil
}

// authOps are the Auth RPCs as one-liners over doAs.
type authOps struct{ d *differ }

func (o authOps) userAdd(s *authSession, name, password string, opts *authpb.UserAddOptions) error {
	o.d.t.Helper()
	_, err := doAs(o.d, s, "UserAdd "+name, func(ctx context.Context, tg target) (*pb.AuthUserAddResponse, error) {
		return tg.auth.UserAdd(ctx, &pb.AuthUserAddRequest{Name: name, Password: password, Options: opts})
	})
	return err
}

func (o authOps) userDelete(s *authSession, name string) error {
	o.d.t.Helper()
	_, err := doAs(o.d, s, "UserDelete "+name, func(ctx context.Context, tg target) (*pb.AuthUserDeleteResponse, error) {
		return tg.auth.UserDelete(ctx, &pb.AuthUserDeleteRequest{Name: name})
	})
	return err
}

func (o authOps) userGet(s *authSession, name string) error {
	o.d.t.Helper()
	_, err := doAs(o.d, s, "UserGet "+name, func(ctx context.Context, tg target) (*pb.AuthUserGetResponse, error) {
		return tg.auth.UserGet(ctx, &pb.AuthUserGetRequest{Name: name})
	})
	return err
}

func (o authOps) userList(s *authSession) error {
	o.d.t.Helper()
	_, err := doAs(o.d, s, "UserList", func(ctx context.Context, tg target) (*pb.AuthUserListResponse, error) {
		return tg.auth.UserList(ctx, &pb.AuthUserListRequest{})
	})
	return err
}

func (o authOps) passwd(s *authSession, name, password string) error {
	o.d.t.Helper()
	_, err := doAs(o.d, s, "UserChangePassword "+name, func(ctx context.Context, tg target) (*pb.AuthUserChangePasswordResponse, error) {
		return tg.auth.UserChangePassword(ctx, &pb.AuthUserChangePasswordRequest{Name: name, Password: password})
	})
	return err
}

func (o authOps) grantRole(s *authSession, user, role string) error {
	o.d.t.Helper()
	_, err := doAs(o.d, s, "UserGrantRole "+user+" "+role, func(ctx context.Context, tg target) (*pb.AuthUserGrantRoleResponse, error) {
		return tg.auth.UserGrantRole(ctx, &pb.AuthUserGrantRoleRequest{User: user, Role: role})
	})
	return err
}

func (o authOps) revokeRole(s *authSession, user, role string) error {
	o.d.t.Helper()
	_, err := doAs(o.d, s, "UserRevokeRole "+user+" "+role, func(ctx context.Context, tg target) (*pb.AuthUserRevokeRoleResponse, error) {
		return tg.auth.UserRevokeRole(ctx, &pb.AuthUserRevokeRoleRequest{Name: user, Role: role})
	})
	return err
}

func (o authOps) roleAdd(s *authSession, name string) error {
	o.d.t.Helper()
	_, err := doAs(o.d, s, "RoleAdd "+name, func(ctx context.Context, tg target) (*pb.AuthRoleAddResponse, error) {
		return tg.auth.RoleAdd(ctx, &pb.AuthRoleAddRequest{Name: name})
	})
	return err
}

func (o authOps) roleGet(s *authSession, name string) error {
	o.d.t.Helper()
	_, err := doAs(o.d, s, "RoleGet "+name, func(ctx context.Context, tg target) (*pb.AuthRoleGetResponse, error) {
		return tg.auth.RoleGet(ctx, &pb.AuthRoleGetRequest{Role: name})
	})
	return err
}

func (o authOps) roleList(s *authSession) error {
	o.d.t.Helper()
	_, err := doAs(o.d, s, "RoleList", func(ctx context.Context, tg target) (*pb.AuthRoleListResponse, error) {
		return tg.auth.RoleList(ctx, &pb.AuthRoleListRequest{})
	})
	return err
}

func (o authOps) roleDelete(s *authSession, name string) error {
	o.d.t.Helper()
	_, err := doAs(o.d, s, "RoleDelete "+name, func(ctx context.Context, tg target) (*pb.AuthRoleDeleteResponse, error) {
		return tg.auth.RoleDelete(ctx, &pb.AuthRoleDeleteRequest{Role: name})
	})
	return err
}

func (o authOps) grantPerm(s *authSession, role string, perm *authpb.Permission) error {
	o.d.t.Helper()
	_, err := doAs(o.d, s, "RoleGrantPermission "+role+" "+compact(perm), func(ctx context.Context, tg target) (*pb.AuthRoleGrantPermissionResponse, error) {
		return tg.auth.RoleGrantPermission(ctx, &pb.AuthRoleGrantPermissionRequest{Name: role, Perm: perm})
	})
	return err
}

func (o authOps) revokePerm(s *authSession, role, key, end string) error {
	o.d.t.Helper()
	_, err := doAs(o.d, s, "RoleRevokePermission "+role+" "+key+" "+end, func(ctx context.Context, tg target) (*pb.AuthRoleRevokePermissionResponse, error) {
		return tg.auth.RoleRevokePermission(ctx, &pb.AuthRoleRevokePermissionRequest{Role: role, Key: []byte(key), RangeEnd: []byte(end)})
	})
	return err
}

func (o authOps) enable(s *authSession) error {
	o.d.t.Helper()
	_, err := doAs(o.d, s, "AuthEnable", func(ctx context.Context, tg target) (*pb.AuthEnableResponse, error) {
		return tg.auth.AuthEnable(ctx, &pb.AuthEnableRequest{})
	})
	return err
}

func (o authOps) disable(s *authSession) error {
	o.d.t.Helper()
	_, err := doAs(o.d, s, "AuthDisable", func(ctx context.Context, tg target) (*pb.AuthDisableResponse, error) {
		return tg.auth.AuthDisable(ctx, &pb.AuthDisableRequest{})
	})
	return err
}

func (o authOps) status(s *authSession) error {
	o.d.t.Helper()
	_, err := doAs(o.d, s, "AuthStatus", func(ctx context.Context, tg target) (*pb.AuthStatusResponse, error) {
		return tg.auth.AuthStatus(ctx, &pb.AuthStatusRequest{})
	})
	return err
}

func (o authOps) get(s *authSession, key, end string) error {
	o.d.t.Helper()
	_, err := doAs(o.d, s, "Range "+key+" "+end, func(ctx context.Context, tg target) (*pb.RangeResponse, error) {
		return tg.kv.Range(ctx, &pb.RangeRequest{Key: []byte(key), RangeEnd: []byte(end)})
	})
	return err
}

func (o authOps) put(s *authSession, key, val string) error {
	o.d.t.Helper()
	return o.putReq(s, &pb.PutRequest{Key: []byte(key), Value: []byte(val)})
}

func (o authOps) putReq(s *authSession, r *pb.PutRequest) error {
	o.d.t.Helper()
	_, err := doAs(o.d, s, "Put "+compact(r), func(ctx context.Context, tg target) (*pb.PutResponse, error) {
		return tg.kv.Put(ctx, r)
	})
	return err
}

func (o authOps) del(s *authSession, r *pb.DeleteRangeRequest) error {
	o.d.t.Helper()
	_, err := doAs(o.d, s, "DeleteRange "+compact(r), func(ctx context.Context, tg target) (*pb.DeleteRangeResponse, error) {
		return tg.kv.DeleteRange(ctx, r)
	})
	return err
}

func (o authOps) txn(s *authSession, r *pb.TxnRequest) error {
	o.d.t.Helper()
	_, err := doAs(o.d, s, "Txn "+compact(r), func(ctx context.Context, tg target) (*pb.TxnResponse, error) {
		return tg.kv.Txn(ctx, r)
	})
	return err
}

// expect fails the test unless err is want (compared as etcd's clients see it).
func expect(t testing.TB, what string, err, want error) {
	t.Helper()
	if errString(err) != errString(want) {
		t.Fatalf("%s: %s, want %s", what, errString(err), errString(want))
	}
}

func prefixPerm(typ authpb.Permission_Type, prefix string) *authpb.Permission {
	end := []byte(prefix)
	end[len(end)-1]++
	return &authpb.Permission{PermType: typ, Key: []byte(prefix), RangeEnd: end}
}

// authDiffOpts are the servers' settings for auth tests: a cheap bcrypt
// cost, so that logging in does not dominate the tests, and plain gRPC
// clients, so that auth errors come back at once as they are.
var authDiffOpts = serverOptions{BcryptCost: 4, RawGRPC: true}

// TestDiffAuthManagement: every Auth RPC, its errors and etcd's rules for
// the root user and role, enabling and disabling, and who may read users
// and roles.
func TestDiffAuthManagement(t *testing.T) {
	t.Parallel()
	runDiff(t, authDiffOpts, func(d *differ) {
		t := d.t
		o := authOps{d}
		o.status(nil)
		expect(t, "enable without root", o.enable(nil), rpctypes.ErrGRPCRootUserNotExist)
		o.userAdd(nil, "root", "rootpw", nil)
		expect(t, "enable, root without the root role", o.enable(nil), rpctypes.ErrGRPCRootRoleNotExist)
		o.grantRole(nil, "root", "root")
		o.grantRole(nil, "root", "root") // granted twice: ignored
		expect(t, "UserAdd with no name", o.userAdd(nil, "", "pw", nil), rpctypes.ErrGRPCUserEmpty)
		expect(t, "UserAdd twice", o.userAdd(nil, "root", "x", nil), rpctypes.ErrGRPCUserAlreadyExist)
		o.userAdd(nil, "alice", "alicepw", &authpb.UserAddOptions{})
		o.userAdd(nil, "carol", "", &authpb.UserAddOptions{NoPassword: true})
		o.userAdd(nil, "dave", "", nil)
		expect(t, "RoleAdd with no name", o.roleAdd(nil, ""), rpctypes.ErrGRPCRoleEmpty)
		o.roleAdd(nil, "r1")
		expect(t, "RoleAdd twice", o.roleAdd(nil, "r1"), rpctypes.ErrGRPCRoleAlreadyExist)
		o.roleAdd(nil, "r2")
		expect(t, "grant no permission", o.grantPerm(nil, "r1", nil), rpctypes.ErrGRPCPermissionNotGiven)
		expect(t, "grant an empty range", o.grantPerm(nil, "r1", &authpb.Permission{Key: []byte("b"), RangeEnd: []byte("a")}), rpctypes.ErrGRPCInvalidAuthMgmt)
		expect(t, "grant no key", o.grantPerm(nil, "r1", &authpb.Permission{RangeEnd: []byte("a")}), rpctypes.ErrGRPCInvalidAuthMgmt)
		expect(t, "grant to no role", o.grantPerm(nil, "nope", prefixPerm(authpb.READ, "/x/")), rpctypes.ErrGRPCRoleNotFound)
		o.grantPerm(nil, "r1", prefixPerm(authpb.READWRITE, "/t1/"))
		o.grantPerm(nil, "r1", &authpb.Permission{PermType: authpb.READ, Key: []byte("/a")})
		o.grantPerm(nil, "r1", &authpb.Permission{PermType: authpb.WRITE, Key: []byte("/b"), RangeEnd: []byte{0}})
		o.grantPerm(nil, "r1", &authpb.Permission{PermType: authpb.WRITE, Key: []byte("/a")}) // changes the type
		o.roleGet(nil, "r1")
		o.roleGet(nil, "root")
		expect(t, "RoleGet of no role", o.roleGet(nil, "nope"), rpctypes.ErrGRPCRoleNotFound)
		expect(t, "revoke an ungranted permission", o.revokePerm(nil, "r1", "/zz", ""), rpctypes.ErrGRPCPermissionNotGranted)
		expect(t, "revoke from no role", o.revokePerm(nil, "nope", "/a", ""), rpctypes.ErrGRPCRoleNotFound)
		o.revokePerm(nil, "r1", "/a", "")
		o.roleGet(nil, "r1")
		expect(t, "grant to no user", o.grantRole(nil, "nope", "r1"), rpctypes.ErrGRPCUserNotFound)
		expect(t, "grant no role", o.grantRole(nil, "alice", "nope"), rpctypes.ErrGRPCRoleNotFound)
		o.grantRole(nil, "alice", "r2")
		o.grantRole(nil, "alice", "r1")
		o.userGet(nil, "alice")
		expect(t, "UserGet of no user", o.userGet(nil, "nope"), rpctypes.ErrGRPCUserNotFound)
		expect(t, "revoke an ungranted role", o.revokeRole(nil, "alice", "root"), rpctypes.ErrGRPCRoleNotGranted)
		expect(t, "revoke from no user", o.revokeRole(nil, "nope", "r1"), rpctypes.ErrGRPCUserNotFound)
		o.revokeRole(nil, "alice", "r2")
		o.userList(nil)
		o.roleList(nil)
		expect(t, "passwd of no user", o.passwd(nil, "nope", "x"), rpctypes.ErrGRPCUserNotFound)
		o.passwd(nil, "alice", "alicepw2")
		o.roleDelete(nil, "r2")
		expect(t, "RoleDelete of no role", o.roleDelete(nil, "r2"), rpctypes.ErrGRPCRoleNotFound)
		o.userAdd(nil, "bob", "bobpw", nil)
		o.grantRole(nil, "bob", "r1")
		// Deleting a role removes it from its users.
		o.roleAdd(nil, "r3")
		o.grantRole(nil, "bob", "r3")
		o.roleDelete(nil, "r3")
		o.userGet(nil, "bob")
		expect(t, "Authenticate while auth is disabled", loginErr(d, "alice", "alicepw2"), rpctypes.ErrGRPCAuthNotEnabled)
		o.status(nil)

		o.enable(nil)
		o.enable(nil) // again: nothing changes
		o.status(nil)
		expect(t, "Range without a token", o.get(nil, "/t1/a", ""), rpctypes.ErrGRPCUserEmpty)
		expect(t, "UserList without a token", o.userList(nil), rpctypes.ErrGRPCUserEmpty)
		o.status(nil) // AuthStatus needs no identity
		expect(t, "wrong password", loginErr(d, "alice", "wrong"), rpctypes.ErrGRPCAuthFailed)
		expect(t, "unknown user", loginErr(d, "nobody", "x"), rpctypes.ErrGRPCAuthFailed)
		d.authenticate("carol", "") // a user without a password cannot log in
		d.authenticate("dave", "")  // an empty password is a password
		expect(t, "bogus token", o.get(rawToken("bogus"), "/t1/a", ""), rpctypes.ErrGRPCInvalidAuthToken)
		expect(t, "unknown token", o.get(rawToken("abcdefghijklmnop.3"), "/t1/a", ""), rpctypes.ErrGRPCInvalidAuthToken)
		o.status(rawToken("bogus"))

		root := d.authenticate("root", "rootpw")
		alice := d.authenticate("alice", "alicepw2")
		bob := d.authenticate("bob", "bobpw")
		if root == nil || alice == nil || bob == nil {
			t.Fatal("logging in failed")
		}
		expect(t, "delete root while enabled", o.userDelete(root, "root"), rpctypes.ErrGRPCInvalidAuthMgmt)
		expect(t, "delete the root role while enabled", o.roleDelete(root, "root"), rpctypes.ErrGRPCInvalidAuthMgmt)
		expect(t, "revoke root from root while enabled", o.revokeRole(root, "root", "root"), rpctypes.ErrGRPCInvalidAuthMgmt)
		// A user without the root role may read itself and its roles only.
		o.userGet(alice, "alice")
		expect(t, "UserGet of another user", o.userGet(alice, "bob"), rpctypes.ErrGRPCPermissionDenied)
		o.roleGet(alice, "r1")
		expect(t, "RoleGet of another role", o.roleGet(alice, "root"), rpctypes.ErrGRPCPermissionDenied)
		for what, err := range map[string]error{
			"UserList":   o.userList(alice),
			"RoleList":   o.roleList(alice),
			"UserAdd":    o.userAdd(alice, "eve", "x", nil),
			"RoleAdd":    o.roleAdd(alice, "r9"),
			"passwd":     o.passwd(alice, "alice", "x"),
			"GrantRole":  o.grantRole(alice, "alice", "root"),
			"grant perm": o.grantPerm(alice, "r1", prefixPerm(authpb.READ, "/")),
			"disable":    o.disable(alice),
		} {
			expect(t, "alice "+what, err, rpctypes.ErrGRPCPermissionDenied)
		}
		o.userList(root)
		o.status(alice)
		// A changed password or a deleted user ends the user's tokens.
		o.get(alice, "/t1/a", "")
		o.passwd(root, "alice", "alicepw3")
		expect(t, "token after a password change", o.get(alice, "/t1/a", ""), rpctypes.ErrGRPCInvalidAuthToken)
		expect(t, "old password", loginErr(d, "alice", "alicepw2"), rpctypes.ErrGRPCAuthFailed)
		o.get(bob, "/t1/a", "")
		o.userDelete(root, "bob")
		expect(t, "token of a deleted user", o.get(bob, "/t1/a", ""), rpctypes.ErrGRPCInvalidAuthToken)
		o.status(root)
		// Disabling ends every token; after enabling again they stay invalid.
		alice = d.authenticate("alice", "alicepw3")
		o.disable(root)
		o.status(nil)
		o.get(nil, "/t1/a", "")
		o.get(alice, "/t1/a", "") // tokens are not looked at while auth is disabled
		o.enable(nil)
		expect(t, "token from before disabling", o.get(alice, "/t1/a", ""), rpctypes.ErrGRPCInvalidAuthToken)
		root = d.authenticate("root", "rootpw")
		o.revokeRole(root, "root", "root")
		o.disable(root)
		o.status(nil)
	})
}

// loginErr logs in on both servers and returns etcd's error.
func loginErr(d *differ, user, password string) error {
	d.t.Helper()
	_, err := d.login(user, password)
	return err
}

// setupTenants creates root and two tenants and enables auth:
// u1 may read and write /t1/, read /ro/ and the keys from /z on, and
// write (only) the key /wo/k and the range [/wo/, /wo0); u2 may read and
// write /t2/. It returns the sessions of root, u1 and u2.
func setupTenants(d *differ) (root, u1, u2 *authSession) {
	d.t.Helper()
	o := authOps{d}
	o.put(nil, "/t1/a", "1")
	o.put(nil, "/t2/a", "2")
	o.put(nil, "/ro/a", "r")
	o.put(nil, "/wo/k", "w")
	o.put(nil, "/z", "z")
	o.userAdd(nil, "root", "rootpw", nil)
	o.grantRole(nil, "root", "root")
	for _, r := range []string{"t1", "t2", "ro", "wo"} {
		o.roleAdd(nil, r)
	}
	o.grantPerm(nil, "t1", prefixPerm(authpb.READWRITE, "/t1/"))
	o.grantPerm(nil, "t2", prefixPerm(authpb.READWRITE, "/t2/"))
	o.grantPerm(nil, "ro", prefixPerm(authpb.READ, "/ro/"))
	o.grantPerm(nil, "ro", &authpb.Permission{PermType: authpb.READ, Key: []byte("/z"), RangeEnd: []byte{0}})
	o.grantPerm(nil, "wo", &authpb.Permission{PermType: authpb.WRITE, Key: []byte("/wo/k")})
	o.grantPerm(nil, "wo", prefixPerm(authpb.WRITE, "/wo/"))
	o.userAdd(nil, "u1", "pw1", nil)
	o.userAdd(nil, "u2", "pw2", nil)
	for _, r := range []string{"t1", "ro", "wo"} {
		o.grantRole(nil, "u1", r)
	}
	o.grantRole(nil, "u2", "t2")
	if err := o.enable(nil); err != nil {
		d.t.Fatal(err)
	}
	root, u1, u2 = d.authenticate("root", "rootpw"), d.authenticate("u1", "pw1"), d.authenticate("u2", "pw2")
	if root == nil || u1 == nil || u2 == nil {
		d.t.Fatal("logging in failed")
	}
	d.admin = root
	return root, u1, u2
}

func putOp(key string) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte(key), Value: []byte("v")}}}
}

func getOp(key, end string) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: []byte(key), RangeEnd: []byte(end)}}}
}

func delOp(key, end string, prev bool) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: &pb.DeleteRangeRequest{Key: []byte(key), RangeEnd: []byte(end), PrevKv: prev}}}
}

func txnOp(t *pb.TxnRequest) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestTxn{RequestTxn: t}}
}

func cmpVersion(key string, v int64) *pb.Compare {
	return &pb.Compare{Key: []byte(key), Target: pb.Compare_VERSION, Result: pb.Compare_GREATER, TargetUnion: &pb.Compare_Version{Version: v}}
}

// TestDiffAuthKV: the permission checks of Range, RangeStream, Put,
// DeleteRange, Txn (compares, both branches, nested txns) and Compact.
func TestDiffAuthKV(t *testing.T) {
	t.Parallel()
	runDiff(t, authDiffOpts, func(d *differ) {
		t := d.t
		o := authOps{d}
		root, u1, u2 := setupTenants(d)
		denied := rpctypes.ErrGRPCPermissionDenied
		for _, c := range []struct {
			key, end string
			want     error
		}{
			{"/t1/a", "", nil},
			{"/t2/a", "", denied},
			{"/t1/", "/t10", nil},
			{"/t1/a", "/t1/b", nil},
			{"/t1/", "/t2/", denied}, // crosses the prefix
			{"/t1/", "\x00", denied}, // from /t1/ on
			{"\x00", "\x00", denied}, // everything
			{"/ro/a", "", nil},
			{"/z", "\x00", nil},    // a from-key permission
			{"/za", "\x00", nil},   // inside it
			{"/y", "\x00", denied}, // starts before it
			{"/wo/k", "", denied},  // write-only
		} {
			expect(t, "u1 Range "+c.key+" "+c.end, o.get(u1, c.key, c.end), c.want)
		}
		o.get(u2, "/t2/", "/t20")
		o.get(root, "\x00", "\x00")
		// RangeStream is checked as Range.
		for _, c := range []struct {
			key, end string
			want     error
		}{{"/t1/", "/t10", nil}, {"/t2/", "/t20", denied}} {
			_, err := doAs(d, u1, "RangeStream "+c.key, func(ctx context.Context, tg target) (*pb.RangeResponse, error) {
				st, err := tg.kv.RangeStream(ctx, &pb.RangeRequest{Key: []byte(c.key), RangeEnd: []byte(c.end)})
				if err != nil {
					return nil, err
				}
				merged := &pb.RangeResponse{}
				for {
					m, err := st.Recv()
					if errors.Is(err, io.EOF) {
						return merged, nil
					}
					if err != nil {
						return nil, err
					}
					merged.Kvs = append(merged.Kvs, m.GetRangeResponse().GetKvs()...)
					if h := m.GetRangeResponse().GetHeader(); h != nil {
						merged.Header, merged.Count, merged.More = h, m.GetRangeResponse().Count, m.GetRangeResponse().More
					}
				}
			})
			expect(t, "u1 RangeStream "+c.key, err, c.want)
		}

		expect(t, "u1 Put /t1/b", o.put(u1, "/t1/b", "x"), nil)
		expect(t, "u1 Put /t2/b", o.put(u1, "/t2/b", "x"), denied)
		expect(t, "u1 Put /ro/b", o.put(u1, "/ro/b", "x"), denied)
		expect(t, "u1 Put /wo/k", o.put(u1, "/wo/k", "x"), nil)
		expect(t, "u1 Put /wo/k prev_kv", o.putReq(u1, &pb.PutRequest{Key: []byte("/wo/k"), Value: []byte("y"), PrevKv: true}), denied)
		expect(t, "u1 Put /t1/b prev_kv", o.putReq(u1, &pb.PutRequest{Key: []byte("/t1/b"), Value: []byte("y"), PrevKv: true}), nil)
		expect(t, "anonymous Put", o.put(nil, "/t1/b", "x"), rpctypes.ErrGRPCUserEmpty)
		expect(t, "bogus token Put", o.put(rawToken("bogus"), "/t1/b", "x"), rpctypes.ErrGRPCInvalidAuthToken)

		expect(t, "u1 delete /t1/b", o.del(u1, &pb.DeleteRangeRequest{Key: []byte("/t1/b")}), nil)
		expect(t, "u1 delete /t2/", o.del(u1, &pb.DeleteRangeRequest{Key: []byte("/t2/"), RangeEnd: []byte("/t20")}), denied)
		expect(t, "u1 delete /wo/ prev_kv", o.del(u1, &pb.DeleteRangeRequest{Key: []byte("/wo/"), RangeEnd: []byte("/wo0"), PrevKv: true}), denied)
		expect(t, "u1 delete /wo/", o.del(u1, &pb.DeleteRangeRequest{Key: []byte("/wo/"), RangeEnd: []byte("/wo0")}), nil)
		expect(t, "u1 delete /t1/ prev_kv", o.del(u1, &pb.DeleteRangeRequest{Key: []byte("/t1/"), RangeEnd: []byte("/t10"), PrevKv: true}), nil)
		expect(t, "anonymous delete", o.del(nil, &pb.DeleteRangeRequest{Key: []byte("/t1/a")}), rpctypes.ErrGRPCUserEmpty)

		o.put(root, "/t1/a", "again")
		for _, c := range []struct {
			name string
			r    *pb.TxnRequest
			want error
		}{
			{"all in /t1/", &pb.TxnRequest{Compare: []*pb.Compare{cmpVersion("/t1/a", 0)}, Success: []*pb.RequestOp{putOp("/t1/c")}, Failure: []*pb.RequestOp{getOp("/t1/", "/t10")}}, nil},
			{"compare outside", &pb.TxnRequest{Compare: []*pb.Compare{cmpVersion("/t2/a", 0)}, Success: []*pb.RequestOp{putOp("/t1/c")}}, denied},
			{"then-put outside", &pb.TxnRequest{Compare: []*pb.Compare{cmpVersion("/t1/a", 0)}, Success: []*pb.RequestOp{putOp("/t2/c")}}, denied},
			{"else-delete outside (not taken)", &pb.TxnRequest{Compare: []*pb.Compare{cmpVersion("/t1/a", 0)}, Success: []*pb.RequestOp{putOp("/t1/c")}, Failure: []*pb.RequestOp{delOp("/t2/", "/t20", false)}}, denied},
			{"delete prev_kv write-only", &pb.TxnRequest{Success: []*pb.RequestOp{delOp("/wo/k", "", true)}}, denied},
			{"nested put outside", &pb.TxnRequest{Success: []*pb.RequestOp{putOp("/t1/d"), txnOp(&pb.TxnRequest{Success: []*pb.RequestOp{putOp("/t2/d")}})}}, denied},
			{"nested compare outside", &pb.TxnRequest{Success: []*pb.RequestOp{txnOp(&pb.TxnRequest{Compare: []*pb.Compare{cmpVersion("/t2/a", 0)}})}}, denied},
			{"nested all inside", &pb.TxnRequest{Success: []*pb.RequestOp{putOp("/t1/d"), txnOp(&pb.TxnRequest{Compare: []*pb.Compare{cmpVersion("/t1/d", 0)}, Success: []*pb.RequestOp{getOp("/t1/d", "")}})}}, nil},
			{"read-only inside", &pb.TxnRequest{Success: []*pb.RequestOp{getOp("/t1/", "/t10"), getOp("/ro/a", "")}}, nil},
			{"read-only outside", &pb.TxnRequest{Success: []*pb.RequestOp{getOp("/t1/a", ""), getOp("/t2/a", "")}}, denied},
		} {
			expect(t, "u1 Txn "+c.name, o.txn(u1, c.r), c.want)
		}
		expect(t, "anonymous Txn", o.txn(nil, &pb.TxnRequest{Success: []*pb.RequestOp{getOp("/t1/a", "")}}), rpctypes.ErrGRPCUserEmpty)
		o.txn(u2, &pb.TxnRequest{Compare: []*pb.Compare{cmpVersion("/t2/a", 0)}, Success: []*pb.RequestOp{putOp("/t2/x")}})

		rev := d.currentRev()
		for _, s := range []*authSession{nil, u1} {
			_, err := doAs(d, s, "Compact", func(ctx context.Context, tg target) (*pb.CompactionResponse, error) {
				return tg.kv.Compact(ctx, &pb.CompactionRequest{Revision: rev})
			})
			want := error(denied)
			if s == nil {
				want = rpctypes.ErrGRPCUserEmpty
			}
			expect(t, s.name()+" Compact", err, want)
		}
		doAs(d, root, "Compact", func(ctx context.Context, tg target) (*pb.CompactionResponse, error) {
			return tg.kv.Compact(ctx, &pb.CompactionRequest{Revision: rev, Physical: true})
		})
		o.get(root, "\x00", "\x00")
	})
}

// TestDiffAuthWatch: a watch on keys the caller may not read is refused in
// its created response, with etcd's reason; permitted watches get events.
func TestDiffAuthWatch(t *testing.T) {
	t.Parallel()
	runDiff(t, authDiffOpts, func(d *differ) {
		root, u1, _ := setupTenants(d)
		o := authOps{d}
		open := func(s *authSession) *watchPair {
			return &watchPair{d: d, etcd: openWatchSide(d.t, s.ctx(d.ctx, d.etcd), d.etcd), kv: openWatchSide(d.t, s.ctx(d.ctx, d.kv), d.kv), active: map[int64]bool{}}
		}
		wp := open(u1)
		wp.create(&pb.WatchCreateRequest{Key: []byte("/t1/"), RangeEnd: []byte("/t10"), PrevKv: true})
		wp.create(&pb.WatchCreateRequest{Key: []byte("/t2/"), RangeEnd: []byte("/t20")})
		wp.create(&pb.WatchCreateRequest{Key: []byte("/t1/a")})
		wp.create(&pb.WatchCreateRequest{Key: []byte("/t1/"), RangeEnd: []byte{0}})
		wp.create(&pb.WatchCreateRequest{}) // the key "\x00" alone
		wp.create(&pb.WatchCreateRequest{Key: []byte("/t2/a"), StartRevision: -1})
		wp.create(&pb.WatchCreateRequest{Key: []byte("/z"), RangeEnd: []byte{0}})
		o.put(root, "/t1/a", "new")
		o.put(root, "/t2/a", "new")
		o.put(root, "/zz", "new")
		wp.compareEvents("u1's watches after puts")

		anon := open(nil)
		anon.create(&pb.WatchCreateRequest{Key: []byte("/t1/a")})
		bogus := open(rawToken("bogus"))
		bogus.create(&pb.WatchCreateRequest{Key: []byte("/t1/a")})
		rw := open(root)
		rw.create(&pb.WatchCreateRequest{Key: []byte{0}, RangeEnd: []byte{0}})
		o.put(root, "/t2/b", "x")
		rw.compareEvents("root's watch")
	})
}

// TestDiffAuthLease: granting needs an identity; revoking, attaching and
// keeping alive a lease needs write permission on its keys, reading its
// keys and listing leases read permission.
func TestDiffAuthLease(t *testing.T) {
	t.Parallel()
	runDiff(t, authDiffOpts, func(d *differ) {
		t := d.t
		root, u1, u2 := setupTenants(d)
		o := authOps{d}
		denied := rpctypes.ErrGRPCPermissionDenied
		grant := func(s *authSession, id int64) error {
			_, err := doAs(d, s, "LeaseGrant", func(ctx context.Context, tg target) (*pb.LeaseGrantResponse, error) {
				return tg.lease.LeaseGrant(ctx, &pb.LeaseGrantRequest{ID: id, TTL: 600})
			})
			return err
		}
		ttl := func(s *authSession, id int64, keys bool) error {
			_, err := doAs(d, s, "LeaseTimeToLive", func(ctx context.Context, tg target) (*pb.LeaseTimeToLiveResponse, error) {
				resp, err := tg.lease.LeaseTimeToLive(ctx, &pb.LeaseTimeToLiveRequest{ID: id, Keys: keys})
				if resp != nil && resp.TTL > 0 {
					resp.TTL = 1
				}
				return resp, err
			})
			return err
		}
		revoke := func(s *authSession, id int64) error {
			_, err := doAs(d, s, "LeaseRevoke", func(ctx context.Context, tg target) (*pb.LeaseRevokeResponse, error) {
				return tg.lease.LeaseRevoke(ctx, &pb.LeaseRevokeRequest{ID: id})
			})
			return err
		}
		leases := func(s *authSession) error {
			_, err := doAs(d, s, "LeaseLeases", func(ctx context.Context, tg target) (*pb.LeaseLeasesResponse, error) {
				resp, err := tg.lease.LeaseLeases(ctx, &pb.LeaseLeasesRequest{})
				if resp != nil {
					resp.Header = nil // etcd's header here is the KV revision of another moment
				}
				return resp, err
			})
			return err
		}
		keepAlive := func(s *authSession, id int64) error {
			_, err := doAs(d, s, "LeaseKeepAlive", func(ctx context.Context, tg target) (*pb.LeaseKeepAliveResponse, error) {
				ctx, cancel := context.WithCancel(ctx)
				defer cancel()
				st, err := tg.lease.LeaseKeepAlive(ctx)
				if err != nil {
					return nil, err
				}
				if err := st.Send(&pb.LeaseKeepAliveRequest{ID: id}); err != nil {
					return nil, err
				}
				resp, err := st.Recv()
				if resp != nil && resp.TTL > 0 {
					resp.TTL = 1
				}
				return resp, err
			})
			return err
		}
		expect(t, "anonymous LeaseGrant", grant(nil, 100), rpctypes.ErrGRPCUserEmpty)
		expect(t, "u1 LeaseGrant", grant(u1, 100), nil)
		expect(t, "u1 put with the lease", o.putReq(u1, &pb.PutRequest{Key: []byte("/t1/l"), Value: []byte("l"), Lease: 100}), nil)
		expect(t, "u2 LeaseTimeToLive", ttl(u2, 100, false), nil)
		expect(t, "u2 LeaseTimeToLive with keys", ttl(u2, 100, true), denied)
		expect(t, "u1 LeaseTimeToLive with keys", ttl(u1, 100, true), nil)
		expect(t, "anonymous LeaseTimeToLive", ttl(nil, 100, false), rpctypes.ErrGRPCUserEmpty)
		expect(t, "u2 attaches u1's lease", o.putReq(u2, &pb.PutRequest{Key: []byte("/t2/l"), Value: []byte("l"), Lease: 100}), denied)
		expect(t, "u2 revokes u1's lease", revoke(u2, 100), denied)
		expect(t, "u2 keeps u1's lease alive", keepAlive(u2, 100), denied)
		expect(t, "anonymous keep-alive", keepAlive(nil, 100), rpctypes.ErrGRPCUserEmpty)
		expect(t, "u1 keeps its lease alive", keepAlive(u1, 100), nil)
		expect(t, "u2 LeaseLeases", leases(u2), denied)
		expect(t, "u1 LeaseLeases", leases(u1), nil)
		expect(t, "root LeaseLeases", leases(root), nil)
		expect(t, "anonymous LeaseLeases", leases(nil), rpctypes.ErrGRPCUserEmpty)
		expect(t, "u2 revokes an unknown lease", revoke(u2, 999), rpctypes.ErrGRPCLeaseNotFound)
		expect(t, "u2 LeaseGrant", grant(u2, 200), nil)
		expect(t, "u2 keeps its empty lease alive", keepAlive(u2, 200), nil)
		expect(t, "u1 revokes u2's empty lease", revoke(u1, 200), nil)
		expect(t, "anonymous LeaseRevoke", revoke(nil, 100), rpctypes.ErrGRPCUserEmpty)
		expect(t, "u1 revokes its lease", revoke(u1, 100), nil)
		o.get(root, "\x00", "\x00")
	})
}

// TestDiffAuthMaintenance: Status, alarm listing and MemberList need an
// identity; compaction, defragmentation, hashes, snapshots, raising
// alarms, moving the leader and downgrades need the root role.
func TestDiffAuthMaintenance(t *testing.T) {
	t.Parallel()
	runDiff(t, authDiffOpts, func(d *differ) {
		t := d.t
		root, u1, _ := setupTenants(d)
		denied := rpctypes.ErrGRPCPermissionDenied
		for _, s := range []*authSession{nil, u1, root} {
			want := func(admin bool) error {
				switch {
				case s == nil:
					return rpctypes.ErrGRPCUserEmpty
				case admin && s != root:
					return denied
				}
				return nil
			}
			expect(t, s.name()+" Status", errOnly(d, s, "Status", func(ctx context.Context, tg target) (*pb.StatusResponse, error) {
				return tg.maint.Status(ctx, &pb.StatusRequest{})
			}), want(false))
			expect(t, s.name()+" Alarm GET", errOnly(d, s, "Alarm GET", func(ctx context.Context, tg target) (*pb.AlarmResponse, error) {
				return tg.maint.Alarm(ctx, &pb.AlarmRequest{Action: pb.AlarmRequest_GET})
			}), want(false))
			expect(t, s.name()+" MemberList", errOnly(d, s, "MemberList", func(ctx context.Context, tg target) (*pb.MemberListResponse, error) {
				return tg.cluster.MemberList(ctx, &pb.MemberListRequest{})
			}), want(false))
			expect(t, s.name()+" HashKV", errOnly(d, s, "HashKV", func(ctx context.Context, tg target) (*pb.HashKVResponse, error) {
				return tg.maint.HashKV(ctx, &pb.HashKVRequest{})
			}), want(true))
			expect(t, s.name()+" Defragment", errOnly(d, s, "Defragment", func(ctx context.Context, tg target) (*pb.DefragmentResponse, error) {
				return tg.maint.Defragment(ctx, &pb.DefragmentRequest{})
			}), want(true))
			expect(t, s.name()+" Alarm DEACTIVATE", errOnly(d, s, "Alarm DEACTIVATE", func(ctx context.Context, tg target) (*pb.AlarmResponse, error) {
				return tg.maint.Alarm(ctx, &pb.AlarmRequest{Action: pb.AlarmRequest_DEACTIVATE, Alarm: pb.AlarmType_NOSPACE})
			}), want(true))
			if s == root {
				continue // what root gets from these differs: kvsql does not implement them
			}
			errOnly(d, s, "Hash", func(ctx context.Context, tg target) (*pb.HashResponse, error) {
				return tg.maint.Hash(ctx, &pb.HashRequest{})
			})
			errOnly(d, s, "MoveLeader", func(ctx context.Context, tg target) (*pb.MoveLeaderResponse, error) {
				return tg.maint.MoveLeader(ctx, &pb.MoveLeaderRequest{TargetID: 1})
			})
			errOnly(d, s, "Downgrade", func(ctx context.Context, tg target) (*pb.DowngradeResponse, error) {
				return tg.maint.Downgrade(ctx, &pb.DowngradeRequest{Action: pb.DowngradeRequest_VALIDATE, Version: "3.5.0"})
			})
			errOnly(d, s, "Alarm ACTIVATE", func(ctx context.Context, tg target) (*pb.AlarmResponse, error) {
				return tg.maint.Alarm(ctx, &pb.AlarmRequest{Action: pb.AlarmRequest_ACTIVATE, Alarm: pb.AlarmType_NOSPACE})
			})
			errOnly(d, s, "Snapshot", func(ctx context.Context, tg target) (*pb.SnapshotResponse, error) {
				st, err := tg.maint.Snapshot(ctx, &pb.SnapshotRequest{})
				if err != nil {
					return nil, err
				}
				return st.Recv()
			})
		}
	})
}

// writeJWTKeys writes an ECDSA P-256 key pair as PEM files and returns
// etcd's --auth-token value for them.
func writeJWTKeys(t testing.TB, ttl string) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	priv, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	privFile, pubFile := filepath.Join(dir, "jwt.key"), filepath.Join(dir, "jwt.pub")
	if err := os.WriteFile(privFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: priv}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pubFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o600); err != nil {
		t.Fatal(err)
	}
	return "jwt,pub-key=" + pubFile + ",priv-key=" + privFile + ",sign-method=ES256,ttl=" + ttl
}

// TestDiffAuthJWT: with JWT tokens, a token carries the auth revision it
// was issued at: after any change of users or roles it is refused as old
// (on reads, writes, watches and leases alike) until the client logs in
// again.
func TestDiffAuthJWT(t *testing.T) {
	t.Parallel()
	opts := authDiffOpts
	opts.AuthToken = writeJWTKeys(t, "10m")
	runDiff(t, opts, func(d *differ) {
		t := d.t
		root, u1, _ := setupTenants(d)
		o := authOps{d}
		o.get(u1, "/t1/a", "")
		o.put(u1, "/t1/a", "jwt")
		o.roleAdd(root, "unrelated")
		old := rpctypes.ErrGRPCAuthOldRevision
		expect(t, "Range with an old token", o.get(u1, "/t1/a", ""), old)
		expect(t, "Put with an old token", o.put(u1, "/t1/a", "x"), old)
		expect(t, "Txn with an old token", o.txn(u1, &pb.TxnRequest{Success: []*pb.RequestOp{putOp("/t1/b")}}), old)
		expect(t, "admin call with an old token", o.userList(root), nil) // etcd checks no revision here
		wp := &watchPair{d: d, etcd: openWatchSide(d.t, u1.ctx(d.ctx, d.etcd), d.etcd), kv: openWatchSide(d.t, u1.ctx(d.ctx, d.kv), d.kv), active: map[int64]bool{}}
		wp.create(&pb.WatchCreateRequest{Key: []byte("/t1/a")})
		u1 = d.authenticate("u1", "pw1")
		o.get(u1, "/t1/a", "")
		o.put(u1, "/t1/a", "fresh")
		expect(t, "bogus JWT", o.get(rawToken("a.b.c"), "/t1/a", ""), rpctypes.ErrGRPCInvalidAuthToken)
	})
}

// TestDiffAuthSimpleTokenExpiry: a simple token unused for
// --auth-token-ttl is refused as invalid.
func TestDiffAuthSimpleTokenExpiry(t *testing.T) {
	t.Parallel()
	opts := authDiffOpts
	opts.AuthTokenTTL = 1
	runDiff(t, opts, func(d *differ) {
		t := d.t
		_, u1, _ := setupTenants(d)
		o := authOps{d}
		o.get(u1, "/t1/a", "")
		// etcd checks expiry every second; kvsql pushes a token's last use
		// to the database every tenth of the TTL: three TTLs unused is
		// past both.
		select {
		case <-time.After(3500 * time.Millisecond):
		case <-d.ctx.Done():
			t.Fatal(d.ctx.Err())
		}
		expect(t, "Range with an expired token", o.get(u1, "/t1/a", ""), rpctypes.ErrGRPCInvalidAuthToken)
		u1 = d.authenticate("u1", "pw1")
		o.get(u1, "/t1/a", "")
	})
}

// TestDiffAuthRequestSize: with auth, etcd measures a write with the
// caller's user name and auth revision in its proposal, so a long user
// name lowers how large a value may be. Values around the limit get
// etcd's answers; sizes within the bytes by which the two members'
// request IDs differ are skipped (as in FuzzDiffKeyValue).
func TestDiffAuthRequestSize(t *testing.T) {
	t.Parallel()
	const limit = 4096
	opts := authDiffOpts
	opts.MaxRequestBytes = limit
	runDiff(t, opts, func(d *differ) {
		t := d.t
		o := authOps{d}
		e, k := d.memberIDs() // asked before auth is on
		user := strings.Repeat("u", 300)
		o.userAdd(nil, "root", "rootpw", nil)
		o.grantRole(nil, "root", "root")
		o.roleAdd(nil, "t1")
		o.grantPerm(nil, "t1", prefixPerm(authpb.READWRITE, "/t1/"))
		o.userAdd(nil, user, "pw", nil)
		o.grantRole(nil, user, "t1")
		if err := o.enable(nil); err != nil {
			t.Fatal(err)
		}
		s := d.authenticate(user, "pw")
		if s == nil {
			t.Fatal("logging in failed")
		}
		st, err := d.etcd.auth.AuthStatus(d.ctx, &pb.AuthStatusRequest{})
		if err != nil {
			t.Fatal(err)
		}
		size := func(r *pb.PutRequest, member uint64) int {
			id := idutil.NewGenerator(uint16(member), time.Now()).Next()
			return proto.Size(&pb.InternalRaftRequest{Header: &pb.RequestHeader{ID: id, Username: user, AuthRevision: st.AuthRevision}, Put: r})
		}
		refused := 0
		for n := limit - 500; n <= limit; n += 7 {
			r := &pb.PutRequest{Key: []byte("/t1/big"), Value: bytes.Repeat([]byte("v"), n)}
			if (size(r, e) > limit) != (size(r, k) > limit) {
				continue
			}
			if err := o.putReq(s, r); err != nil {
				refused++
			}
		}
		if refused == 0 {
			t.Fatal("no put was large enough to be refused: the sweep misses the limit")
		}
	})
}
