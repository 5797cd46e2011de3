package migrate_test

import (
	"context"
	"path/filepath"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/kvsql/kvsql/backends"
	"github.com/kvsql/kvsql/backends/backendtest"
	"github.com/kvsql/kvsql/backends/sqlite"
	"github.com/kvsql/kvsql/migrate"
)

// kineSchema is kine's SQLite table (k3s-io/kine pkg/drivers/sqlite).
const kineSchema = `CREATE TABLE kine (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT, created INTEGER, deleted INTEGER,
	create_revision INTEGER, prev_revision INTEGER, lease INTEGER, value BLOB, old_value BLOB)`

// TestFromKineRows migrates rows as kine leaves them, including the ones
// a real kine rarely produces in a test: gap rows filling skipped ids, a
// NULL create_revision on a created row, the old "VERSION"-only encoding
// of compact_rev_key_apiserver, a key deleted and created again, and kine's
// own compact_rev_key row holding the newest id (a current revision past
// the newest change).
func TestFromKineRows(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "state.db")
	db, err := sqlite.OpenDB(path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(kineSchema); err != nil {
		t.Fatal(err)
	}
	type row struct {
		id                        int64
		name                      string
		created, deleted          int64
		createRev, prevRev, lease any
		value                     string
	}
	rows := []row{
		{1, "compact_rev_key", 1, 0, 0, 5, 0, ""},            // kine's own, first: compacted at 5
		{2, "/a", 1, 0, nil, 0, 0, "a1"},                     // created: create revision NULL, it is the id
		{3, "/b", 1, 0, 0, 0, 60, "b1"},                      // lease 60: a TTL
		{4, "gap-4", 0, 1, 0, 0, 0, ""},                      // a gap row
		{5, "/a", 0, 0, 2, 2, 0, "a2"},                       // update
		{6, "compact_rev_key_apiserver", 1, 0, 0, 0, 0, "1"}, // old format: version only
		{7, "/a", 0, 1, 2, 5, 0, "a2"},                       // delete
		{8, "/a", 1, 0, 0, 7, 0, "a3"},                       // created again
		{9, "gap-9", 0, 1, 0, 0, 0, ""},
		{10, "/c", 1, 0, 0, 0, 0, "c1"},
		{11, "compact_rev_key_apiserver", 0, 0, 6, 6, 0, "2|9"},
		{12, "gap-12", 0, 1, 0, 0, 0, ""}, // the newest id changes no key
	}
	for _, r := range rows {
		if _, err := db.Exec(`INSERT INTO kine (id, name, created, deleted, create_revision, prev_revision, lease, value, old_value)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL)`, r.id, r.name, r.created, r.deleted, r.createRev, r.prevRev, r.lease, []byte(r.value)); err != nil {
			t.Fatal(err)
		}
	}
	dst, err := sqlite.Open(ctx, sqlite.Config{Path: filepath.Join(t.TempDir(), "kvsql.db")})
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	info, err := migrate.FromKine(ctx, db, migrate.SQLite, dst, nil)
	if err != nil {
		t.Fatal(err)
	}
	if info.Revision != 12 || info.Compact != 5 || info.Rows != 8 || info.Skipped != 4 || info.Leases != 1 {
		t.Fatalf("migration info %+v; want revision 12, compact 5, 8 rows, 4 skipped, 1 lease", info)
	}
	got, err := dst.Range(ctx, &pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}})
	if err != nil {
		t.Fatal(err)
	}
	want := `@12 ["/a"(c8 m8 v1 l0 2B) "/b"(c3 m3 v1 l60 2B) "/c"(c10 m10 v1 l0 2B) "compact_rev_key"(c6 m11 v2 l0 1B) ]`
	if s := backendtest.KVString(got.Header.Revision, got.Kvs); s != want {
		t.Errorf("migrated state\n got %s\nwant %s", s, want)
	}
	ck, err := dst.Range(ctx, &pb.RangeRequest{Key: []byte("compact_rev_key"), Revision: 6})
	if err != nil || len(ck.Kvs) != 1 || ck.Kvs[0].Version != 1 || string(ck.Kvs[0].Value) != "0" {
		t.Errorf("compact_rev_key at 6: %v, %v; want version 1, value 0 (kine's old encoding)", ck, err)
	}
	a, err := dst.Range(ctx, &pb.RangeRequest{Key: []byte("/a"), Revision: 5})
	if err != nil || backendtest.KVString(a.Header.Revision, a.Kvs) != `@12 ["/a"(c2 m5 v2 l0 2B) ]` {
		t.Errorf("/a at 5: %v, %v; want its second version, created at 2", a, err)
	}
	evs, err := dst.Changes(ctx, 6, 100)
	if err != nil || len(evs) != 4 || evs[0].Type != 1 || evs[0].PrevKv == nil || string(evs[0].PrevKv.Value) != "a2" {
		t.Errorf("changes after 6: %v, %v; want 4 events, first the delete of /a with its previous value", evs, err)
	}
	if l, err := dst.LeaseInfo(ctx, 60, true); err != nil || l.GrantedTTL != 60 || len(l.Keys) != 1 {
		t.Errorf("lease 60: %+v, %v; want TTL 60 with /b", l, err)
	}
	if resp, err := dst.Txn(ctx, &pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("/d"), Value: []byte("d")}}}}}); err != nil || resp.Header.Revision != 13 {
		t.Errorf("first write after migration: %v, %v; want revision 13", resp, err)
	}
	if _, err := migrate.FromKine(ctx, db, migrate.SQLite, dst, nil); err == nil {
		t.Error("a second migration into the same database was accepted")
	}
	var n int
	if err := db.QueryRow(`SELECT COUNT(*) FROM kine`).Scan(&n); err != nil || n != len(rows) {
		t.Errorf("kine's table after the migration: %d rows, %v; want it untouched", n, err)
	}
	var _ backends.Loader = dst
}
