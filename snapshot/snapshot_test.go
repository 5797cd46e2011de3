package snapshot

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/pkg/v3/traceutil"
	"go.etcd.io/etcd/server/v3/lease"
	"go.etcd.io/etcd/server/v3/storage/backend"
	"go.etcd.io/etcd/server/v3/storage/mvcc"
	"go.etcd.io/etcd/server/v3/storage/schema"
	"go.uber.org/zap"
	"google.golang.org/protobuf/proto"

	"github.com/kvsql/kvsql/backends"
	"github.com/kvsql/kvsql/backends/backendtest"
	"github.com/kvsql/kvsql/backends/sqlite"
)

func openSQLite(tb testing.TB) *backends.Engine {
	tb.Helper()
	be, err := sqlite.Open(context.Background(), sqlite.Config{Path: filepath.Join(tb.TempDir(), "state.db")})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = be.Close() })
	return be
}

// saved builds a snapshot of be and writes it, with its SHA-256, to a
// file, as etcdctl snapshot save stores it.
func saved(tb testing.TB, be *backends.Engine) (string, *File) {
	tb.Helper()
	f, err := Create(context.Background(), be, tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = f.Close() })
	path := filepath.Join(tb.TempDir(), "snap.db")
	var buf bytes.Buffer
	if err := f.WriteFile(&buf); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o600); err != nil {
		tb.Fatal(err)
	}
	if int64(buf.Len()) != f.Size+32 || !hasChecksum(int64(buf.Len())) {
		tb.Fatalf("saved %d bytes for a %d-byte database; want the database and a SHA-256", buf.Len(), f.Size)
	}
	return path, f
}

// TestEtcdReadsSnapshot opens a snapshot's database with etcd's own
// storage code (its backend, its mvcc store restoring the key index from
// the "key" bucket, its schema readers) and checks that etcd sees what
// kvsql serves: every key at every revision from the compact revision on,
// the current and compact revisions, the leases and the meta keys.
func TestEtcdReadsSnapshot(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	src := openSQLite(t)
	cur, compact := backendtest.WriteHistory(t, src)
	_, f := saved(t, src)
	if f.Revision != cur || f.Compact != compact || f.Leases != 2 {
		t.Fatalf("snapshot info %+v; want revision %d, compact %d, 2 leases", f.Info, cur, compact)
	}
	db := filepath.Join(t.TempDir(), "db")
	raw, err := os.ReadFile(f.f.Name())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(db, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	be := backend.NewDefaultBackend(zap.NewNop(), db)
	defer be.Close()
	if v := schema.ReadStorageVersion(be.ReadTx()); v == nil || v.String() != StorageVersion {
		t.Errorf("storage version %v, want %s", v, StorageVersion)
	}
	if idx, term := schema.ReadConsistentIndex(be.ReadTx()); idx != uint64(cur) || term != 1 {
		t.Errorf("consistent index %d, term %d; want %d, 1", idx, term, cur)
	}
	tx := be.ReadTx()
	tx.RLock()
	leases := schema.MustUnsafeGetAllLeases(tx)
	tx.RUnlock()
	if len(leases) != 2 || leases[0].ID != 7 || leases[0].TTL != 100 || leases[1].ID != 8 || leases[1].TTL != 30 {
		t.Errorf("etcd reads leases %v; want 7 (TTL 100) and 8 (TTL 30)", leases)
	}
	s := mvcc.NewStore(zap.NewNop(), be, &lease.FakeLessor{}, mvcc.StoreConfig{})
	defer s.Close()
	if s.Rev() != cur {
		t.Errorf("etcd's current revision %d, want %d", s.Rev(), cur)
	}
	r := s.Read(mvcc.ConcurrentReadTxMode, traceutil.TODO())
	defer r.End()
	if _, err := r.Range(ctx, []byte("k1"), nil, mvcc.RangeOptions{Rev: compact - 1}); !errors.Is(err, mvcc.ErrCompacted) {
		t.Errorf("etcd reads below the compact revision: %v, want ErrCompacted", err)
	}
	for rev := compact; rev <= cur; rev++ {
		want, err := src.Range(ctx, &pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}, Revision: rev})
		if err != nil {
			t.Fatal(err)
		}
		got, err := r.Range(ctx, []byte{0}, []byte{}, mvcc.RangeOptions{Rev: rev}) // end {}: every key from key on
		if err != nil {
			t.Fatalf("etcd range at %d: %v", rev, err)
		}
		if len(got.KVs) != len(want.Kvs) {
			t.Fatalf("etcd at %d: %d keys, kvsql %d", rev, len(got.KVs), len(want.Kvs))
		}
		for i := range got.KVs {
			if !proto.Equal(got.KVs[i], want.Kvs[i]) {
				t.Errorf("etcd at %d: %s, kvsql %s", rev, backendtest.KVString(got.Rev, got.KVs[i:i+1]), backendtest.KVString(want.Header.Revision, want.Kvs[i:i+1]))
			}
		}
	}
}

// TestRestoreRoundTrip: kvsql -> snapshot file -> kvsql answers every read
// as the source does and continues at the next revision.
func TestRestoreRoundTrip(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	src := openSQLite(t)
	cur, compact := backendtest.WriteHistory(t, src)
	path, _ := saved(t, src)
	dst := openSQLite(t)
	var progress []Progress
	// a window of 1 KiB: every few rows through a new mapping of the file
	info, err := Restore(ctx, path, dst, RestoreOptions{Progress: func(p Progress) { progress = append(progress, p) }, WindowBytes: 1 << 10})
	if err != nil {
		t.Fatal(err)
	}
	if info.Revision != cur || info.Compact != compact || info.Leases != 2 || info.Users != 0 || info.Roles != 0 {
		t.Fatalf("restore info %+v; want revision %d, compact %d, 2 leases", info, cur, compact)
	}
	if len(progress) == 0 || progress[len(progress)-1].Revision != cur || progress[len(progress)-1].LastRevision != cur {
		t.Errorf("progress %+v; want it to end at revision %d", progress, cur)
	}
	for rev := compact; rev <= cur; rev++ {
		r := &pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}, Revision: rev}
		want, err := src.Range(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		got, err := dst.Range(ctx, r)
		if err != nil {
			t.Fatal(err)
		}
		if !proto.Equal(got, want) {
			t.Errorf("range at %d: got %s, want %s", rev, backendtest.KVString(got.Header.Revision, got.Kvs), backendtest.KVString(want.Header.Revision, want.Kvs))
		}
	}
	wantEvs, err := src.Changes(ctx, compact-1, 100)
	if err != nil {
		t.Fatal(err)
	}
	gotEvs, err := dst.Changes(ctx, compact-1, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(gotEvs) != len(wantEvs) {
		t.Fatalf("%d events after restore, want %d", len(gotEvs), len(wantEvs))
	}
	for i := range wantEvs {
		if !proto.Equal(gotEvs[i], wantEvs[i]) {
			t.Errorf("event %d: got %s, want %s", i, backendtest.EventString(gotEvs[i]), backendtest.EventString(wantEvs[i]))
		}
	}
	if _, err := Restore(ctx, path, dst, RestoreOptions{}); !errors.Is(err, backends.ErrNotEmpty) {
		t.Errorf("restore into the restored database: %v, want ErrNotEmpty", err)
	}
}

// TestRestoreChecksum: a damaged file is refused before anything is
// written; a file without a SHA-256 needs SkipHashCheck, as etcdutl's.
func TestRestoreChecksum(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	src := openSQLite(t)
	backendtest.WriteHistory(t, src)
	path, f := saved(t, src)
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	damaged := filepath.Join(t.TempDir(), "damaged.db")
	bad := append([]byte(nil), raw...)
	bad[len(bad)-100] ^= 1
	if err := os.WriteFile(damaged, bad, 0o600); err != nil {
		t.Fatal(err)
	}
	dst := openSQLite(t)
	if _, err := Restore(ctx, damaged, dst, RestoreOptions{}); err == nil || !bytes.Contains([]byte(err.Error()), []byte("SHA-256 mismatch")) {
		t.Errorf("restore of a damaged file: %v, want a SHA-256 mismatch", err)
	}
	plain := filepath.Join(t.TempDir(), "plain.db")
	if err := os.WriteFile(plain, raw[:f.Size], 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Restore(ctx, plain, dst, RestoreOptions{}); !errors.Is(err, ErrNoChecksum) {
		t.Errorf("restore of a file without checksum: %v, want ErrNoChecksum", err)
	}
	if cur, _, err := dst.Revisions(ctx); err != nil || cur != 1 {
		t.Fatalf("refused restores wrote to the database: revision %d, %v", cur, err)
	}
	if _, err := Restore(ctx, plain, dst, RestoreOptions{SkipHashCheck: true}); err != nil {
		t.Errorf("restore without checksum, SkipHashCheck: %v", err)
	}
}

// TestCurrentRevisionPastNewestChange: a database whose current revision
// is past its newest change (migrated from kine, whose newest ids may
// change no key) snapshots with a revision marker, so that etcd and a
// restored kvsql continue from the same revision without seeing a key.
func TestCurrentRevisionPastNewestChange(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	src := openSQLite(t)
	load, err := src.BeginLoad(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := load.Append(ctx, []backends.LogRow{
		{Rev: 2, Key: []byte("a"), Value: []byte("1")},
		{Rev: 3, Key: []byte("b"), Value: []byte("2")},
	}); err != nil {
		t.Fatal(err)
	}
	if err := load.Commit(ctx, 9, -1); err != nil {
		t.Fatal(err)
	}
	path, f := saved(t, src)
	db := filepath.Join(t.TempDir(), "db")
	raw, err := os.ReadFile(f.f.Name())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(db, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	be := backend.NewDefaultBackend(zap.NewNop(), db)
	defer be.Close()
	s := mvcc.NewStore(zap.NewNop(), be, &lease.FakeLessor{}, mvcc.StoreConfig{})
	defer s.Close()
	r := s.Read(mvcc.ConcurrentReadTxMode, traceutil.TODO())
	got, err := r.Range(ctx, []byte{0}, []byte{}, mvcc.RangeOptions{})
	r.End()
	if err != nil || s.Rev() != 9 || got.Rev != 9 || len(got.KVs) != 2 {
		t.Errorf("etcd on the snapshot: revision %d, range %+v, %v; want revision 9 and keys a, b", s.Rev(), got, err)
	}
	dst := openSQLite(t)
	info, err := Restore(ctx, path, dst, RestoreOptions{})
	if err != nil || info.Revision != 9 || info.Versions != 2 {
		t.Fatalf("restore: %+v, %v; want revision 9, 2 versions", info, err)
	}
	resp, err := dst.Range(ctx, &pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}})
	if err != nil || resp.Header.Revision != 9 || len(resp.Kvs) != 2 {
		t.Errorf("restored: %v, %v; want revision 9 and keys a, b", resp, err)
	}
}

// TestRestoreAuth: users, roles, the auth flag and the auth revision go
// into a snapshot and come back from it, replacing the target's.
func TestRestoreAuth(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	src := openSQLite(t)
	backendtest.WriteHistory(t, src)
	want := backends.AuthState{
		Enabled:  true,
		Revision: 9,
		Users: []*authpb.User{
			{Name: []byte("root"), Password: []byte("hash"), Roles: []string{"root"}},
			{Name: []byte("u1"), Roles: []string{"t1"}, Options: &authpb.UserAddOptions{NoPassword: true}},
		},
		Roles: []*authpb.Role{{Name: []byte("t1"), KeyPermission: []*authpb.Permission{{PermType: authpb.READWRITE, Key: []byte("/t1/"), RangeEnd: []byte("/t10")}}}},
	}
	if err := backends.ReplaceAuth(ctx, src, want); err != nil {
		t.Fatal(err)
	}
	path, f := saved(t, src)
	if f.Users != 2 || f.Roles != 1 {
		t.Fatalf("Create wrote %d users and %d roles, want 2 and 1", f.Users, f.Roles)
	}
	// etcd's own auth storage reads the file's auth buckets as kvsql wrote them.
	db := filepath.Join(t.TempDir(), "db")
	raw, err := os.ReadFile(f.f.Name())
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(db, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	be := backend.NewDefaultBackend(zap.NewNop(), db)
	abe := schema.NewAuthBackend(zap.NewNop(), be)
	rtx := abe.ReadTx()
	rtx.RLock()
	enabled, rev := rtx.UnsafeReadAuthEnabled(), rtx.UnsafeReadAuthRevision()
	rtx.RUnlock()
	users, roles := abe.GetAllUsers(), abe.GetAllRoles()
	_ = be.Close()
	if !enabled || rev != 9 || len(users) != 2 || !proto.Equal(users[1], want.Users[1]) || len(roles) != 1 || !proto.Equal(roles[0], want.Roles[0]) {
		t.Fatalf("etcd reads the snapshot's auth as enabled %v, revision %d, users %v, roles %v", enabled, rev, users, roles)
	}
	dst := openSQLite(t)
	info, err := Restore(ctx, path, dst, RestoreOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if info.Users != 2 || info.Roles != 1 {
		t.Fatalf("Restore: %d users and %d roles, want 2 and 1", info.Users, info.Roles)
	}
	got, err := dst.LoadAuth(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got.Enabled != want.Enabled || got.Revision != want.Revision || len(got.Users) != 2 || len(got.Roles) != 1 {
		t.Fatalf("restored auth state %+v, want %+v", got, want)
	}
	for i := range want.Users {
		if !proto.Equal(got.Users[i], want.Users[i]) {
			t.Errorf("user %d: %v, want %v", i, got.Users[i], want.Users[i])
		}
	}
	if !proto.Equal(got.Roles[0], want.Roles[0]) {
		t.Errorf("role: %v, want %v", got.Roles[0], want.Roles[0])
	}
}
