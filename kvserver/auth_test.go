package kvserver

import (
	"context"
	"log/slog"
	"testing"

	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/server/v3/auth"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/kvsql/kvsql/backends"
)

// testGate returns a gate whose current generation is s (no database).
func testGate(t testing.TB, s backends.AuthState) *authGate {
	t.Helper()
	a, err := newAuthGate(Config{Logger: slog.New(slog.DiscardHandler), AuthToken: "simple", AuthTokenTTL: DefaultAuthTokenTTL, BcryptCost: 4}, false)
	if err != nil {
		t.Fatal(err)
	}
	g, err := a.newGen(s)
	if err != nil {
		t.Fatal(err)
	}
	a.install(g)
	t.Cleanup(func() { a.cur.Load().close() })
	return a
}

// tenantState has root and u1, whose role t1 reads and writes /t1/.
func tenantState(enabled bool) backends.AuthState {
	return backends.AuthState{
		Enabled:  enabled,
		Revision: 5,
		Users: []*authpb.User{
			{Name: []byte("root"), Roles: []string{"root"}, Options: &authpb.UserAddOptions{NoPassword: true}},
			{Name: []byte("u1"), Roles: []string{"t1"}, Password: []byte("x")},
		},
		Roles: []*authpb.Role{{Name: []byte("t1"), KeyPermission: []*authpb.Permission{{PermType: authpb.READWRITE, Key: []byte("/t1/"), RangeEnd: []byte("/t10")}}}},
	}
}

// TestAuthMirrorChanges: what etcd's store writes through the mirror
// becomes the write the database gets: puts and deletes by name, the flag
// and the revision; nothing when nothing changed.
func TestAuthMirrorChanges(t *testing.T) {
	a := testGate(t, backends.AuthState{Revision: 1})
	base := backends.AuthState{Revision: 1}
	g, err := a.newGen(base)
	if err != nil {
		t.Fatal(err)
	}
	defer g.close()
	if w := g.m.changes(base); w != nil {
		t.Fatalf("changes of an untouched mirror: %+v", w)
	}
	if _, err := g.as.UserAdd(&pb.AuthUserAddRequest{Name: "root", Options: &authpb.UserAddOptions{NoPassword: true}}); err != nil {
		t.Fatal(err)
	}
	if _, err := g.as.UserGrantRole(&pb.AuthUserGrantRoleRequest{User: "root", Role: "root"}); err != nil {
		t.Fatal(err)
	}
	if _, err := g.as.RoleAdd(&pb.AuthRoleAddRequest{Name: "gone"}); err != nil {
		t.Fatal(err)
	}
	if _, err := g.as.RoleDelete(&pb.AuthRoleDeleteRequest{Role: "gone"}); err != nil {
		t.Fatal(err)
	}
	if err := g.as.AuthEnable(); err != nil {
		t.Fatal(err)
	}
	w := g.m.changes(base)
	if w == nil || !w.Enabled || w.Revision != 5 || len(w.PutUsers) != 1 || string(w.PutUsers[0].Name) != "root" ||
		len(w.PutRoles) != 0 || len(w.DeleteRoles) != 1 || string(w.DeleteRoles[0]) != "gone" {
		t.Fatalf("changes = %+v", w)
	}
	if got := w.PutUsers[0].Roles; len(got) != 1 || got[0] != "root" {
		t.Fatalf("stored root has roles %v", got)
	}
}

// TestAuthMirrorSharesNothingWritable: etcd's store changes what BatchTx
// hands it in place; the values readers share must not change with it.
func TestAuthMirrorSharesNothingWritable(t *testing.T) {
	a := testGate(t, backends.AuthState{Revision: 1})
	s := tenantState(false)
	g, err := a.newGen(s)
	if err != nil {
		t.Fatal(err)
	}
	defer g.close()
	before := proto.Clone(g.m.GetRole("t1")).(*authpb.Role)
	if _, err := g.as.RoleGrantPermission(&pb.AuthRoleGrantPermissionRequest{Name: "t1", Perm: &authpb.Permission{PermType: authpb.READ, Key: []byte("/t1/"), RangeEnd: []byte("/t10")}}); err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(s.Roles[0], before) {
		t.Fatalf("the state the mirror was made from changed: %v", s.Roles[0])
	}
	if got := g.m.GetRole("t1").KeyPermission[0].PermType; got != authpb.READ {
		t.Fatalf("mirror role t1 has %v, want READ", got)
	}
}

// TestForwardSignature: a forwarded request is trusted only with the
// signature of this cluster's secret for this member and this request.
func TestForwardSignature(t *testing.T) {
	a := testGate(t, tenantState(true))
	secret := []byte("0123456789abcdef0123456789abcdef")
	a.secret.Store(&secret)
	put := &pb.PutRequest{Key: []byte("/t2/x"), Value: []byte("v")}
	mac, ok := a.sign(7, put, 0)
	if !ok {
		t.Fatal("no signature with a secret")
	}
	in := func(mac string, kv ...string) context.Context {
		return metadata.NewIncomingContext(context.Background(), metadata.Pairs(append([]string{forwardMACKey, mac}, kv...)...))
	}
	trusted := func(ctx context.Context, self uint64, m proto.Message) bool {
		_, ok := a.trusted(ctx, self, m)
		return ok
	}
	if !trusted(in(mac), 7, put) {
		t.Fatal("a valid signature is not trusted")
	}
	// A write checked at auth revision 5: the signature covers it.
	mac5, _ := a.sign(7, put, 5)
	if rev, ok := a.trusted(in(mac5, forwardAuthRevKey, "5"), 7, put); !ok || rev != 5 {
		t.Fatalf("a signed write checked at auth revision 5: trusted %v at %d", ok, rev)
	}
	other := &pb.PutRequest{Key: []byte("/t2/y"), Value: []byte("v")}
	for name, ok := range map[string]bool{
		"another member":               trusted(in(mac), 8, put),
		"another request":              trusted(in(mac), 7, other),
		"another type":                 trusted(in(mac), 7, &pb.DeleteRangeRequest{Key: []byte("/t2/x")}),
		"no signature":                 trusted(context.Background(), 7, put),
		"a bad signature":              trusted(in("00"+mac[2:]), 7, put),
		"another auth revision":        trusted(in(mac5, forwardAuthRevKey, "6"), 7, put),
		"its auth revision left out":   trusted(in(mac5), 7, put),
		"an auth revision added":       trusted(in(mac, forwardAuthRevKey, "5"), 7, put),
		"an auth revision not decimal": trusted(in(mac5, forwardAuthRevKey, "0x5"), 7, put),
	} {
		if ok {
			t.Errorf("%s: trusted", name)
		}
	}
	other2 := []byte("fedcba9876543210fedcba9876543210")
	a.secret.Store(&other2)
	if trusted(in(mac), 7, put) {
		t.Error("a signature made with another cluster's secret is trusted")
	}
}

// BenchmarkAuthCheck: what the permission check adds to a single-key read
// (etcd's doSerialize around a read that does nothing): auth disabled, and
// enabled with a simple token of a user confined to a prefix.
func BenchmarkAuthCheck(b *testing.B) {
	for _, enabled := range []bool{false, true} {
		name := "disabled"
		if enabled {
			name = "simple-token"
		}
		b.Run(name, func(b *testing.B) {
			a := testGate(b, tenantState(enabled))
			ctx := context.Background()
			if enabled {
				a.adoptMu.Lock()
				err := assignToken(ctx, a.cur.Load(), "abcdefghijklmnop", 5, "u1", "abcdefghijklmnop.5")
				a.adoptMu.Unlock()
				if err != nil {
					b.Fatal(err)
				}
				ctx = metadata.NewIncomingContext(ctx, metadata.Pairs(rpctypes.TokenFieldNameGRPC, "abcdefghijklmnop.5"))
			}
			key := []byte("/t1/key")
			chk := func(as auth.AuthStore, ai *auth.AuthInfo) error { return as.IsRangePermitted(ai, key, nil) }
			get := func() error { return nil }
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if err := a.serialize(ctx, chk, get); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
