package integration

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/metadata"
)

const forwarded = `kvsql_write_forwards_total{outcome="forwarded"}`

// TestAuthForwardedWrites: two kvsql processes on one database, B
// forwarding its writes to the leader A. With auth on, B checks the
// client's permissions itself and forwards a permitted write, signed, to
// A, which has no token of the client's and applies it; a refused write is
// refused by B and never forwarded. A client that talks to A directly and
// claims to be a forwarding instance gets no further than any client:
// without the cluster's signature its write is checked as its own.
func TestAuthForwardedWrites(t *testing.T) {
	t.Parallel()
	for _, se := range sharedEndpoints {
		t.Run(se.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			p := startForwardingPair(t, ctx, se, "probe")
			setupTenantsVia(t, ctx, p.cb)

			aEP, bEP := "http://"+p.a.Addr, "http://"+p.b.Addr
			u1B := newUserClient(t, "u1", "pw1", bEP)
			before := metricValue(t, p.mb, forwarded)
			put, err := u1B.Put(ctx, "/t1/fwd", "v")
			if err != nil {
				t.Fatalf("u1 put through the follower: %v", err)
			}
			if n := metricValue(t, p.mb, forwarded); n != before+1 {
				t.Fatalf("forwarded writes %v -> %v: the follower did not forward the permitted write", before, n)
			}
			if put.Header.MemberId == 0 {
				t.Fatal("no header")
			}
			// A refused write is refused at B and not forwarded.
			if _, err := u1B.Put(ctx, "/t2/fwd", "v"); !errors.Is(err, rpctypes.ErrPermissionDenied) {
				t.Fatalf("u1 put into /t2/ through the follower: %v, want permission denied", err)
			}
			if _, err := u1B.Txn(ctx).Then(clientv3.OpPut("/t1/ok", "v"), clientv3.OpPut("/t2/no", "v")).Commit(); !errors.Is(err, rpctypes.ErrPermissionDenied) {
				t.Fatalf("u1 txn touching /t2/ through the follower: %v, want permission denied", err)
			}
			if n := metricValue(t, p.mb, forwarded); n != before+1 {
				t.Fatalf("forwarded writes %v -> %v: refused writes were forwarded", before, n)
			}

			// A client pretending to be a forwarding instance.
			root := newUserClient(t, "root", "rootpw", aEP)
			st, err := root.Status(ctx, p.a.Addr)
			if err != nil {
				t.Fatal(err)
			}
			memberA := strconv.FormatUint(st.Header.MemberId, 16)
			kvA := pb.NewKVClient(rawConn(t, server{Endpoint: aEP}))
			spoof := metadata.AppendToOutgoingContext(ctx, "kvsql-forwarded", memberA, "kvsql-forward-mac", "00112233")
			if _, err := kvA.Put(spoof, &pb.PutRequest{Key: []byte("/t1/spoof"), Value: []byte("x")}); !errors.Is(rpctypes.Error(err), rpctypes.ErrUserEmpty) {
				t.Fatalf("spoofed forwarded put without a token: %v, want user name is empty", err)
			}
			u2 := newUserClient(t, "u2", "pw2", aEP)
			tok, err := u2.Auth.Authenticate(ctx, "u2", "pw2")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := kvA.Put(tokenCtx(spoof, tok.Token), &pb.PutRequest{Key: []byte("/t1/spoof"), Value: []byte("x")}); !errors.Is(rpctypes.Error(err), rpctypes.ErrPermissionDenied) {
				t.Fatalf("spoofed forwarded put by u2 into /t1/: %v, want permission denied", err)
			}
			if got, err := root.Get(ctx, "/t1/spoof"); err != nil || len(got.Kvs) != 0 {
				t.Fatalf("the spoofed write landed: %v, %v", got, err)
			}
			if got, err := root.Get(ctx, "/t1/fwd"); err != nil || len(got.Kvs) != 1 {
				t.Fatalf("the forwarded write: %v, %v", got, err)
			}

			// An instance started while auth is on checks the leader
			// (Status, signed: it has no user) and forwards as well.
			mc := procFreeAddr(t)
			c := startKVSQLProc(t, "--endpoint="+p.ep, "--name=c", "--listen-metrics-urls=http://"+mc, "--bcrypt-cost=4")
			u1C := newUserClient(t, "u1", "pw1", "http://"+c.Addr)
			pollUntil(t, 20*time.Second, "C forwards u1's write to A", func() bool {
				if _, err := u1C.Put(ctx, "/t1/fromC", "v"); err != nil {
					t.Fatal(err)
				}
				return metricValue(t, mc, forwarded) > 0
			})
		})
	}
}

// TestAuthSurvivesRestart: users, roles, permissions, the enabled flag and
// simple tokens are in the database: after kvsql is killed and started
// again they hold as before, on SQLite and on a server database.
func TestAuthSurvivesRestart(t *testing.T) {
	t.Parallel()
	endpoints := map[string]func(testing.TB) string{
		"sqlite":   nil,
		"postgres": freshPostgresURL,
		"mysql":    freshMySQLEndpoint,
	}
	for name, ep := range endpoints {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			args := []string{"--bcrypt-cost=4"}
			if ep != nil {
				args = append(args, "--endpoint="+ep(t))
			}
			p := startKVSQLProc(t, args...)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			setupTenantsVia(t, ctx, p.client(t))
			conn := rawConn(t, server{Endpoint: "http://" + p.Addr})
			ar, err := pb.NewAuthClient(conn).Authenticate(ctx, &pb.AuthenticateRequest{Name: "u1", Password: "pw1"})
			if err != nil {
				t.Fatal(err)
			}
			p.kill()
			p.restart()
			kv := pb.NewKVClient(conn)
			if _, err := kv.Put(tokenCtx(ctx, ar.Token), &pb.PutRequest{Key: []byte("/t1/after"), Value: []byte("x")}); err != nil {
				t.Fatalf("u1's token from before the restart: %v", err)
			}
			if _, err := kv.Put(tokenCtx(ctx, ar.Token), &pb.PutRequest{Key: []byte("/t2/after"), Value: []byte("x")}); !errors.Is(rpctypes.Error(err), rpctypes.ErrPermissionDenied) {
				t.Fatalf("u1 into /t2/ after the restart: %v", err)
			}
			if _, err := kv.Range(ctx, &pb.RangeRequest{Key: []byte("/t1/after")}); !errors.Is(rpctypes.Error(err), rpctypes.ErrUserEmpty) {
				t.Fatalf("anonymous read after the restart: %v", err)
			}
			u2 := newUserClient(t, "u2", "pw2", "http://"+p.Addr)
			if _, err := u2.Get(ctx, "/t1/after"); !errors.Is(err, rpctypes.ErrPermissionDenied) {
				t.Fatalf("u2 read of /t1/ after the restart: %v", err)
			}
			st, err := pb.NewAuthClient(conn).AuthStatus(ctx, &pb.AuthStatusRequest{})
			if err != nil || !st.Enabled || st.AuthRevision != 11 {
				t.Fatalf("AuthStatus after the restart: %v, %v; want enabled at revision 11", st, err)
			}
		})
	}
}

// TestSnapshotAuth: users, roles and the enabled flag travel in etcd
// snapshots both ways. An etcd with auth on -> its snapshot -> kvsql
// snapshot restore -> kvsql enforces etcd's users and permissions; and
// kvsql -> etcdctl snapshot save (as root) -> etcdutl snapshot restore ->
// a real etcd enforces kvsql's, at the same auth revision.
func TestSnapshotAuth(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ctl, utl := etcdctlBinary(t), etcdutlBinary(t)
	// check asserts the tenant setup of setupTenantsVia on s.
	check := func(t *testing.T, what string, s server) uint64 {
		t.Helper()
		u1 := newUserClient(t, "u1", "pw1", s.Endpoint)
		if _, err := u1.Put(ctx, "/t1/restored", "x"); err != nil {
			t.Fatalf("%s: u1 put into /t1/: %v", what, err)
		}
		if _, err := u1.Get(ctx, "/t2/a"); !errors.Is(err, rpctypes.ErrPermissionDenied) {
			t.Fatalf("%s: u1 get of /t2/: %v, want permission denied", what, err)
		}
		if _, err := newClient(t, s).Get(ctx, "/t1/restored"); !errors.Is(err, rpctypes.ErrUserEmpty) {
			t.Fatalf("%s: anonymous get: %v, want user name is empty", what, err)
		}
		st, err := u1.AuthStatus(ctx)
		if err != nil || !st.Enabled {
			t.Fatalf("%s: auth status %v, %v", what, st, err)
		}
		return st.AuthRevision
	}

	// etcd -> kvsql
	e := startEtcd(t, serverOptions{BcryptCost: 4})
	setupTenantsVia(t, ctx, newClient(t, e))
	root := newUserClient(t, "root", "rootpw", e.Endpoint)
	if _, err := root.Put(ctx, "/t2/a", "etcd"); err != nil {
		t.Fatal(err)
	}
	etcdRev := check(t, "etcd", e)
	rc, err := root.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "etcd.db")
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, rc); err != nil {
		t.Fatal(err)
	}
	_ = rc.Close()
	if err := os.WriteFile(file, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	ep := "sqlite://" + filepath.Join(t.TempDir(), "state.db")
	stdout, stderr, code := runKVSQL(t, nil, "snapshot", "restore", file, "--endpoint", ep)
	if code != 0 || !strings.Contains(stdout, "3 users, 2 roles") {
		t.Fatalf("kvsql snapshot restore: exit %d\n%s%s", code, stdout, stderr)
	}
	k := startKVSQLProc(t, "--endpoint="+ep)
	if rev := check(t, "kvsql restored from etcd", server{Endpoint: "http://" + k.Addr}); rev != etcdRev {
		t.Fatalf("kvsql restored from etcd is at auth revision %d, etcd at %d", rev, etcdRev)
	}

	// kvsql -> etcd
	kfile := filepath.Join(t.TempDir(), "kvsql.db")
	if out := runTool(t, ctl, "--endpoints="+k.Addr, "--user=root:rootpw", "snapshot", "save", kfile); !strings.Contains(out, "Snapshot saved") {
		t.Fatalf("etcdctl snapshot save: %q", out)
	}
	cfg := etcdConfig(t, serverOptions{BcryptCost: 4})
	dataDir := filepath.Join(t.TempDir(), "etcd")
	peer := cfg.AdvertisePeerUrls[0].String()
	runTool(t, utl, "snapshot", "restore", kfile, "--data-dir", dataDir, "--name", cfg.Name,
		"--initial-cluster", cfg.Name+"="+peer, "--initial-advertise-peer-urls", peer)
	cfg.Dir = dataDir
	e2 := runEtcd(t, cfg)
	t.Cleanup(e2.Close)
	if rev := check(t, "etcd restored from kvsql", server{Endpoint: cfg.ListenClientUrls[0].String()}); rev != etcdRev {
		t.Fatalf("etcd restored from kvsql is at auth revision %d, want %d", rev, etcdRev)
	}
}
