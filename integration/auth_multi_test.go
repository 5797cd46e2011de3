package integration

// Auth across instances: users, roles and permissions live in the
// database, so a change made through one instance binds every instance
// sharing it, and a tenant is confined to its prefix through any of them.

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
)

// newUserClient returns a clientv3 client logged in as user on endpoints.
func newUserClient(t testing.TB, user, password string, endpoints ...string) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{
		Endpoints:   endpoints,
		DialTimeout: 5 * time.Second,
		Username:    user,
		Password:    password,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		t.Fatalf("log in as %s: %v", user, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// rawConn is a plain gRPC connection to a server (no clientv3 retries).
func rawConn(t testing.TB, s server) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(strings.TrimPrefix(s.Endpoint, "http://"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// tokenCtx returns ctx carrying an auth token.
func tokenCtx(ctx context.Context, token string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, rpctypes.TokenFieldNameGRPC, token)
}

// setupTenantsVia creates root (password rootpw), roles t1 and t2 with
// read-write on /t1/ and /t2/, users u1 and u2 (passwords pw1, pw2) and
// enables auth, through c.
func setupTenantsVia(t testing.TB, ctx context.Context, c *clientv3.Client) {
	t.Helper()
	steps := []func() error{
		func() error { _, err := c.UserAdd(ctx, "root", "rootpw"); return err },
		func() error { _, err := c.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := c.RoleAdd(ctx, "t1"); return err },
		func() error { _, err := c.RoleAdd(ctx, "t2"); return err },
		func() error {
			_, err := c.RoleGrantPermission(ctx, "t1", "/t1/", clientv3.GetPrefixRangeEnd("/t1/"), clientv3.PermissionType(clientv3.PermReadWrite))
			return err
		},
		func() error {
			_, err := c.RoleGrantPermission(ctx, "t2", "/t2/", clientv3.GetPrefixRangeEnd("/t2/"), clientv3.PermissionType(clientv3.PermReadWrite))
			return err
		},
		func() error { _, err := c.UserAdd(ctx, "u1", "pw1"); return err },
		func() error { _, err := c.UserAdd(ctx, "u2", "pw2"); return err },
		func() error { _, err := c.UserGrantRole(ctx, "u1", "t1"); return err },
		func() error { _, err := c.UserGrantRole(ctx, "u2", "t2"); return err },
		func() error { _, err := c.AuthEnable(ctx); return err },
	}
	for i, step := range steps {
		if err := step(); err != nil {
			t.Fatalf("auth setup step %d: %v", i, err)
		}
	}
}

// watchRefused reports whether a watch through c on key is refused with
// permission denied (etcd's created-and-cancelled answer).
func watchRefused(ctx context.Context, c *clientv3.Client, key string) (bool, error) {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	wch := c.Watch(wctx, key, clientv3.WithPrefix(), clientv3.WithCreatedNotify())
	select {
	case wr, ok := <-wch:
		if !ok {
			return false, errors.New("watch channel closed")
		}
		if wr.Canceled {
			return strings.Contains(wr.Err().Error(), rpctypes.ErrGRPCPermissionDenied.Error()), nil
		}
		return false, nil
	case <-ctx.Done():
		return false, ctx.Err()
	}
}

// TestAuthAcrossInstances: three instances on one PostgreSQL or MariaDB
// database. Auth set up and enabled through A binds B and C: each tenant
// reads, writes and watches its own prefix through every instance and is
// refused the other's; a simple token from one instance works on the
// others; a permission revoked, a user deleted, a password changed or auth
// disabled through one instance takes effect on the others (each re-reads
// the auth state within --auth-refresh-interval).
func TestAuthAcrossInstances(t *testing.T) {
	t.Parallel()
	for _, b := range sharedDBBackends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			opts := serverOptions{BcryptCost: 4}
			srvs, _ := b.start(t, 3, opts)
			setupTenantsVia(t, ctx, newClient(t, srvs[0]))
			// Every instance enforces it at once: none of them saw the
			// setup but through the database.
			denied := rpctypes.ErrPermissionDenied
			for i, s := range srvs {
				name := string(rune('A' + i))
				u1 := newUserClient(t, "u1", "pw1", s.Endpoint)
				u2 := newUserClient(t, "u2", "pw2", s.Endpoint)
				key := "/t1/via" + name
				if _, err := u1.Put(ctx, key, name); err != nil {
					t.Fatalf("u1 put %s through %s: %v", key, name, err)
				}
				if _, err := u2.Put(ctx, "/t1/intruder", "x"); !errors.Is(err, denied) {
					t.Fatalf("u2 put into /t1/ through %s: %v, want permission denied", name, err)
				}
				if _, err := u2.Get(ctx, key); !errors.Is(err, denied) {
					t.Fatalf("u2 get of %s through %s: %v, want permission denied", key, name, err)
				}
				if _, err := u2.Get(ctx, "/t", clientv3.WithPrefix()); !errors.Is(err, denied) {
					t.Fatalf("u2 get of /t* through %s: %v, want permission denied", name, err)
				}
				if _, err := u2.Delete(ctx, "/t1/", clientv3.WithPrefix()); !errors.Is(err, denied) {
					t.Fatalf("u2 delete of /t1/ through %s: %v, want permission denied", name, err)
				}
				if refused, err := watchRefused(ctx, u2, "/t1/"); err != nil || !refused {
					t.Fatalf("u2 watch of /t1/ through %s: refused %v, %v", name, refused, err)
				}
				if refused, err := watchRefused(ctx, u1, "/t1/"); err != nil || refused {
					t.Fatalf("u1 watch of /t1/ through %s: refused %v, %v", name, refused, err)
				}
			}
			// u1's watch through C sees u1's writes through A.
			u1A := newUserClient(t, "u1", "pw1", srvs[0].Endpoint)
			u1C := newUserClient(t, "u1", "pw1", srvs[2].Endpoint)
			wch := u1C.Watch(ctx, "/t1/w", clientv3.WithCreatedNotify())
			if wr := <-wch; !wr.Created {
				t.Fatalf("u1 watch through C: %v", wr.Err())
			}
			if _, err := u1A.Put(ctx, "/t1/w", "from A"); err != nil {
				t.Fatal(err)
			}
			if wr := <-wch; len(wr.Events) != 1 || string(wr.Events[0].Kv.Value) != "from A" {
				t.Fatalf("u1 watch through C: %+v, %v", wr.Events, wr.Err())
			}

			// A simple token issued by A works on B and C.
			connA, connB, connC := rawConn(t, srvs[0]), rawConn(t, srvs[1]), rawConn(t, srvs[2])
			ar, err := pb.NewAuthClient(connA).Authenticate(ctx, &pb.AuthenticateRequest{Name: "u2", Password: "pw2"})
			if err != nil {
				t.Fatal(err)
			}
			for _, conn := range []*grpc.ClientConn{connB, connC} {
				if _, err := pb.NewKVClient(conn).Put(tokenCtx(ctx, ar.Token), &pb.PutRequest{Key: []byte("/t2/tok"), Value: []byte("x")}); err != nil {
					t.Fatalf("u2's token from A, used on another instance: %v", err)
				}
			}

			// Changes through one instance bind the others.
			root := newUserClient(t, "root", "rootpw", srvs[1].Endpoint)
			if _, err := root.RoleRevokePermission(ctx, "t1", "/t1/", clientv3.GetPrefixRangeEnd("/t1/")); err != nil {
				t.Fatal(err)
			}
			for i, c := range []*clientv3.Client{u1A, u1C} {
				pollUntil(t, 10*time.Second, "the revoked permission binds instance "+strconv.Itoa(2*i), func() bool {
					_, err := c.Get(ctx, "/t1/w")
					return errors.Is(err, denied)
				})
			}
			if _, err := root.UserDelete(ctx, "u2"); err != nil {
				t.Fatal(err)
			}
			for _, conn := range []*grpc.ClientConn{connA, connC} {
				pollUntil(t, 10*time.Second, "the deleted user's token is refused", func() bool {
					_, err := pb.NewKVClient(conn).Range(tokenCtx(ctx, ar.Token), &pb.RangeRequest{Key: []byte("/t2/tok")})
					return errors.Is(rpctypes.Error(err), rpctypes.ErrInvalidAuthToken)
				})
			}
			if _, err := pb.NewAuthClient(connC).Authenticate(ctx, &pb.AuthenticateRequest{Name: "u2", Password: "pw2"}); !errors.Is(rpctypes.Error(err), rpctypes.ErrAuthFailed) {
				t.Fatalf("deleted user logs in through C: %v", err)
			}
			// A new password through C: the old one fails on A at once
			// (Authenticate reads the stored state first).
			if _, err := newClient(t, srvs[2]).Auth.Authenticate(ctx, "root", "rootpw"); err != nil {
				t.Fatal(err)
			}
			if _, err := root.UserChangePassword(ctx, "u1", "pw1-new"); err != nil {
				t.Fatal(err)
			}
			if _, err := pb.NewAuthClient(connA).Authenticate(ctx, &pb.AuthenticateRequest{Name: "u1", Password: "pw1"}); !errors.Is(rpctypes.Error(err), rpctypes.ErrAuthFailed) {
				t.Fatalf("old password through A: %v", err)
			}
			if _, err := root.AuthDisable(ctx); err != nil {
				t.Fatal(err)
			}
			plain := newClient(t, srvs[0])
			pollUntil(t, 10*time.Second, "auth disabled through B binds A", func() bool {
				_, err := plain.Get(ctx, "/t1/w")
				return err == nil
			})
		})
	}
}

// TestAuthRevokeBindsWritesAtOnce: a permission revoked through one
// instance refuses the next write through every other instance, even one
// that has not re-read the auth state (--auth-refresh-interval is an hour
// here): a write applies only at the auth revision it was checked at, as
// in etcd, and fails with ErrAuthOldRevision otherwise, after which
// clientv3 logs in again and retries against the new state. Through A the
// write is applied by A itself (the first instance leads); through C it is
// forwarded to A, with C's revision.
func TestAuthRevokeBindsWritesAtOnce(t *testing.T) {
	t.Parallel()
	for _, b := range sharedDBBackends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			srvs, _ := b.start(t, 3, serverOptions{BcryptCost: 4, AuthRefreshInterval: time.Hour})
			setupTenantsVia(t, ctx, newClient(t, srvs[0]))
			u1A := newUserClient(t, "u1", "pw1", srvs[0].Endpoint)
			u1C := newUserClient(t, "u1", "pw1", srvs[2].Endpoint)
			root := newUserClient(t, "root", "rootpw", srvs[1].Endpoint)
			// u1 may write /lk (granted through A, whose copy of the auth
			// state refreshes hourly), and attaches it to a lease of its own.
			rootA := newUserClient(t, "root", "rootpw", srvs[0].Endpoint)
			if _, err := rootA.RoleGrantPermission(ctx, "t1", "/lk", "", clientv3.PermissionType(clientv3.PermReadWrite)); err != nil {
				t.Fatal(err)
			}
			lease, err := u1A.Grant(ctx, 600)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := u1A.Put(ctx, "/lk", "x", clientv3.WithLease(lease.ID)); err != nil {
				t.Fatalf("u1 put /lk with its lease through A: %v", err)
			}
			for name, c := range map[string]*clientv3.Client{"A": u1A, "C": u1C} {
				if _, err := c.Put(ctx, "/t1/before-"+name, "x"); err != nil {
					t.Fatalf("u1 put through %s: %v", name, err)
				}
			}
			if _, err := root.RoleRevokePermission(ctx, "t1", "/t1/", clientv3.GetPrefixRangeEnd("/t1/")); err != nil {
				t.Fatal(err)
			}
			for name, c := range map[string]*clientv3.Client{"A": u1A, "C": u1C} {
				key := "/t1/after-" + name
				// clientv3 answers the old-revision refusal by logging in
				// again and retrying, against the state A has just reloaded.
				_, err := c.Put(ctx, key, "x")
				if !errors.Is(err, rpctypes.ErrPermissionDenied) {
					t.Fatalf("u1 put through %s after its permission was revoked through B: %v, want permission denied", name, err)
				}
				resp, err := root.Get(ctx, key)
				if err != nil {
					t.Fatal(err)
				}
				if len(resp.Kvs) != 0 {
					t.Fatalf("%s was written after the revoke: %v", key, resp.Kvs)
				}
				// The refusal brought the instance's auth state up to date.
				if _, err := c.Put(ctx, key, "x"); !errors.Is(err, rpctypes.ErrPermissionDenied) {
					t.Fatalf("u1's second put through %s: %v, want permission denied", name, err)
				}
			}
			// A lease revoke deletes the lease's keys: as in etcd it needs
			// write permission on each, checked at the auth revision it
			// is applied at, not at A's copy (an hour old).
			if _, err := root.RoleRevokePermission(ctx, "t1", "/lk", ""); err != nil {
				t.Fatal(err)
			}
			if _, err := u1A.Revoke(ctx, lease.ID); !errors.Is(err, rpctypes.ErrPermissionDenied) {
				t.Fatalf("u1 revoked its lease through A after its permission on the lease's key was revoked through B: %v, want permission denied", err)
			}
			resp, err := root.Get(ctx, "/lk")
			if err != nil {
				t.Fatal(err)
			}
			if len(resp.Kvs) != 1 {
				t.Fatalf("/lk is gone after a refused lease revoke: %v", resp.Kvs)
			}
		})
	}
}

// TestAuthJWTAcrossInstances: with JWT tokens (the same keys on every
// instance), a token issued by one instance is accepted by the others, and
// after a change of roles through any instance every instance refuses it
// as old.
func TestAuthJWTAcrossInstances(t *testing.T) {
	t.Parallel()
	spec := writeJWTKeys(t, "10m")
	for _, b := range sharedDBBackends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			srvs, _ := b.start(t, 2, serverOptions{BcryptCost: 4, AuthToken: spec})
			setupTenantsVia(t, ctx, newClient(t, srvs[0]))
			connA, connB := rawConn(t, srvs[0]), rawConn(t, srvs[1])
			// B enforces auth within --auth-refresh-interval of its enabling
			// through A (docs/auth.md).
			pollUntil(t, 10*time.Second, "B enforces the auth enabled through A", func() bool {
				_, err := pb.NewKVClient(connB).Range(ctx, &pb.RangeRequest{Key: []byte("/t1/jwt")})
				return errors.Is(rpctypes.Error(err), rpctypes.ErrUserEmpty)
			})
			ar, err := pb.NewAuthClient(connA).Authenticate(ctx, &pb.AuthenticateRequest{Name: "u1", Password: "pw1"})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := pb.NewKVClient(connB).Put(tokenCtx(ctx, ar.Token), &pb.PutRequest{Key: []byte("/t1/jwt"), Value: []byte("x")}); err != nil {
				t.Fatalf("A's JWT used on B: %v", err)
			}
			if _, err := pb.NewKVClient(connB).Put(tokenCtx(ctx, ar.Token), &pb.PutRequest{Key: []byte("/t2/jwt"), Value: []byte("x")}); !errors.Is(rpctypes.Error(err), rpctypes.ErrPermissionDenied) {
				t.Fatalf("A's JWT on B outside the prefix: %v", err)
			}
			root := newUserClient(t, "root", "rootpw", srvs[1].Endpoint)
			if _, err := root.RoleAdd(ctx, "t3"); err != nil {
				t.Fatal(err)
			}
			pollUntil(t, 10*time.Second, "the token is old on A after a change through B", func() bool {
				_, err := pb.NewKVClient(connA).Range(tokenCtx(ctx, ar.Token), &pb.RangeRequest{Key: []byte("/t1/jwt")})
				return errors.Is(rpctypes.Error(err), rpctypes.ErrAuthOldRevision)
			})
		})
	}
}
