package backendtest

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/protobuf/proto"

	"github.com/kvsql/kvsql/backends"
)

// WriteHistory gives be a history with overwrites, deletes, a key changed
// twice in one revision, leases and a compaction; it returns the current
// and compact revisions.
func WriteHistory(tb testing.TB, be backends.Backend) (cur, compact int64) {
	tb.Helper()
	ctx := context.Background()
	if _, err := be.LeaseGrant(ctx, 7, 100); err != nil {
		tb.Fatal(err)
	}
	if _, err := be.LeaseGrant(ctx, 8, 30); err != nil {
		tb.Fatal(err)
	}
	withLease := func(r *pb.TxnRequest, id int64) *pb.TxnRequest {
		r.Success[0].GetRequestPut().Lease = id
		return r
	}
	delFrom := func(k string) *pb.RequestOp {
		return &pb.RequestOp{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: &pb.DeleteRangeRequest{Key: []byte(k), RangeEnd: []byte{0}}}}
	}
	putOp := func(k, v string) *pb.RequestOp {
		return &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte(k), Value: []byte(v)}}}
	}
	for i := range 5 {
		mustTxn(tb, be, put(fmt.Sprintf("k%d", i), "v0")) // 2..6
	}
	mustTxn(tb, be, put("k1", "v1"))                                                            // 7
	mustTxn(tb, be, del("k2", ""))                                                              // 8
	mustTxn(tb, be, withLease(put("l1", "x"), 7))                                               // 9
	mustTxn(tb, be, withLease(put("l2", "y"), 7))                                               // 10
	mustTxn(tb, be, put("k1", "v2"))                                                            // 11
	mustTxn(tb, be, put("k2", "again"))                                                         // 12
	mustTxn(tb, be, put("z1", "z"))                                                             // 13
	mustTxn(tb, be, &pb.TxnRequest{Success: []*pb.RequestOp{delFrom("z1"), putOp("z1", "re")}}) // 14
	mustTxn(tb, be, put("k0", ""))                                                              // 15
	mustTxn(tb, be, del("k4", ""))                                                              // 16
	mustTxn(tb, be, put("big", string(make([]byte, 100<<10))))                                  // 17
	if _, err := be.Compact(ctx, 9); err != nil {
		tb.Fatal(err)
	}
	mustTxn(tb, be, put("k1", "v3")) // 18
	cur, compact, err := be.Revisions(ctx)
	if err != nil || cur != 18 || compact != 9 {
		tb.Fatalf("Revisions = %d, %d, %v; want 18, 9", cur, compact, err)
	}
	return cur, compact
}

// readAll reads be's whole snapshot in small pages.
func readAll(tb testing.TB, be backends.Backend) (cur, compact int64, rows []backends.LogRow, leases []backends.Lease) {
	tb.Helper()
	ctx := context.Background()
	ss, ok := be.(backends.Snapshotter)
	if !ok {
		tb.Fatalf("%T is not a backends.Snapshotter", be)
	}
	err := ss.ReadSnapshot(ctx, func(v *backends.SnapshotView) error {
		cur, compact = v.Current, v.Compact
		var afterRev, afterSub int64
		for {
			page, err := v.History(ctx, afterRev, afterSub, 3)
			if err != nil {
				return err
			}
			if len(page) == 0 {
				break
			}
			if len(page) > 3 {
				return fmt.Errorf("page of %d rows, limit 3", len(page))
			}
			rows = append(rows, page...)
			afterRev, afterSub = page[len(page)-1].Rev, page[len(page)-1].Sub
		}
		after := int64(-1 << 63)
		for {
			page, err := v.Leases(ctx, after, 1)
			if err != nil {
				return err
			}
			if len(page) == 0 {
				return nil
			}
			leases = append(leases, page...)
			after = page[len(page)-1].ID
		}
	})
	if err != nil {
		tb.Fatal(err)
	}
	return cur, compact, rows, leases
}

// snapshotAndBulkLoad reads a backend's history through ReadSnapshot and
// loads it into a fresh backend through BeginLoad, with the prev
// revisions left for the load to compute: the copy must answer every read
// (ranges at each revision, changes with prev_kv, leases, hash) as the
// original does, and continue at the next revision.
func snapshotAndBulkLoad(t *testing.T, open Opener) {
	ctx := context.Background()
	src := open(t)
	WriteHistory(t, src)
	cur, compact, rows, leases := readAll(t, src)
	if cur != 18 || compact != 9 {
		t.Fatalf("snapshot revisions %d, %d; want 18, 9", cur, compact)
	}
	for i := 1; i < len(rows); i++ {
		a, b := rows[i-1], rows[i]
		if b.Rev < a.Rev || (b.Rev == a.Rev && b.Sub <= a.Sub) {
			t.Fatalf("history out of order: %d.%d after %d.%d", b.Rev, b.Sub, a.Rev, a.Sub)
		}
	}
	if last := rows[len(rows)-1]; last.Rev != 18 || string(last.Key) != "k1" {
		t.Fatalf("last history row %d %q, want revision 18 of k1", last.Rev, last.Key)
	}
	if len(leases) != 2 || leases[0].ID != 7 || leases[0].GrantedTTL != 100 || leases[1].ID != 8 || leases[1].GrantedTTL != 30 ||
		leases[0].RemainingMillis <= 0 || leases[0].RemainingMillis > 100_000 {
		t.Fatalf("snapshot leases %+v; want 7 (TTL 100) and 8 (TTL 30)", leases)
	}

	dst := open(t)
	ld, ok := dst.(backends.Loader)
	if !ok {
		t.Fatalf("%T is not a backends.Loader", dst)
	}
	load, err := ld.BeginLoad(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < len(rows); i += 2 {
		batch := append([]backends.LogRow(nil), rows[i:min(i+2, len(rows))]...)
		for j := range batch {
			batch[j].PrevRev = -1 // must be computed, not copied
		}
		if err := load.Append(ctx, batch); err != nil {
			t.Fatal(err)
		}
	}
	for _, l := range leases {
		if err := load.AddLease(ctx, l.ID, l.GrantedTTL); err != nil {
			t.Fatal(err)
		}
	}
	if err := load.Commit(ctx, cur, compact); err != nil {
		t.Fatal(err)
	}
	if c, k, err := dst.Revisions(ctx); err != nil || c != cur || k != compact {
		t.Fatalf("loaded revisions %d, %d, %v; want %d, %d", c, k, err, cur, compact)
	}
	// The loaded history is the source's, except that a prev_rev naming a
	// version compacted away is 0: the load cannot know it, and no read
	// at or above the compact revision uses it.
	kept := map[string]bool{}
	for _, r := range rows {
		kept[fmt.Sprintf("%s@%d", r.Key, r.Rev)] = !r.Deleted
	}
	_, _, gotRows, _ := readAll(t, dst)
	if len(gotRows) != len(rows) {
		t.Fatalf("loaded history has %d rows, want %d", len(gotRows), len(rows))
	}
	for i, want := range rows {
		if !kept[fmt.Sprintf("%s@%d", want.Key, want.PrevRev)] {
			want.PrevRev = 0
		}
		if got := gotRows[i]; !reflect.DeepEqual(got, want) {
			t.Errorf("loaded row %d: got %s, want %s", i, rowString(got), rowString(want))
		}
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
			t.Errorf("range at %d: got %s, want %s", rev, KVString(got.Header.Revision, got.Kvs), KVString(want.Header.Revision, want.Kvs))
		}
	}
	if _, err := dst.Range(ctx, &pb.RangeRequest{Key: []byte("k1"), Revision: compact - 1}); !errors.Is(err, backends.ErrCompacted) {
		t.Errorf("read below the loaded compact revision: %v, want ErrCompacted", err)
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
		t.Fatalf("%d events after the load, want %d", len(gotEvs), len(wantEvs))
	}
	for i := range wantEvs {
		if !proto.Equal(gotEvs[i], wantEvs[i]) {
			t.Errorf("event %d: got %s, want %s", i, EventString(gotEvs[i]), EventString(wantEvs[i]))
		}
	}
	for _, l := range leases {
		got, err := dst.LeaseInfo(ctx, l.ID, true)
		if err != nil {
			t.Fatal(err)
		}
		want, err := src.LeaseInfo(ctx, l.ID, true)
		if err != nil {
			t.Fatal(err)
		}
		if got.GrantedTTL != want.GrantedTTL || !reflect.DeepEqual(got.Keys, want.Keys) || got.RemainingMillis <= 0 {
			t.Errorf("lease %d: got %+v, want %+v", l.ID, got, want)
		}
	}
	wantHash, _, err := src.Hash(ctx, cur)
	if err != nil {
		t.Fatal(err)
	}
	if gotHash, _, err := dst.Hash(ctx, cur); err != nil || gotHash != wantHash {
		t.Errorf("hash after the load %x, %v; want %x", gotHash, err, wantHash)
	}
	if resp := mustTxn(t, dst, put("k1", "next")); resp.Header.Revision != cur+1 {
		t.Errorf("first write after the load at revision %d, want %d", resp.Header.Revision, cur+1)
	}
	if _, err := dst.LeaseRevoke(ctx, 7); err != nil {
		t.Fatal(err)
	}
	if resp, err := dst.Range(ctx, &pb.RangeRequest{Key: []byte("l1"), RangeEnd: []byte("l3")}); err != nil || len(resp.Kvs) != 0 {
		t.Errorf("keys of a revoked loaded lease: %v, %v; want none", resp, err)
	}
}

// bulkLoadRefusesData: a load into a database that has a revision, a
// compaction or a lease fails with ErrNotEmpty and changes nothing; a
// failed load leaves the database empty.
func bulkLoadRefusesData(t *testing.T, open Opener) {
	ctx := context.Background()
	begin := func(be backends.Backend) (*backends.BulkLoad, error) {
		ld, ok := be.(backends.Loader)
		if !ok {
			t.Fatalf("%T is not a backends.Loader", be)
		}
		return ld.BeginLoad(ctx)
	}
	withKey := open(t)
	mustTxn(t, withKey, put("a", "1"))
	if _, err := begin(withKey); !errors.Is(err, backends.ErrNotEmpty) {
		t.Errorf("load into a database with a key: %v, want ErrNotEmpty", err)
	}
	withLease := open(t)
	if _, err := withLease.LeaseGrant(ctx, 5, 60); err != nil {
		t.Fatal(err)
	}
	if _, err := begin(withLease); !errors.Is(err, backends.ErrNotEmpty) {
		t.Errorf("load into a database with a lease: %v, want ErrNotEmpty", err)
	}
	empty := open(t)
	load, err := begin(empty)
	if err != nil {
		t.Fatal(err)
	}
	if err := load.Append(ctx, []backends.LogRow{{Rev: 2, Key: []byte("a"), Value: []byte("1"), CreateRev: 2, Version: 1}}); err != nil {
		t.Fatal(err)
	}
	if err := load.Append(ctx, []backends.LogRow{{Rev: 2, Key: []byte("b"), Value: []byte("1")}}); err == nil {
		t.Error("a row at the same (revision, sub) as the one before was accepted")
	}
	if err := load.Rollback(); err != nil {
		t.Fatal(err)
	}
	if cur, compact, err := empty.Revisions(ctx); err != nil || cur != 1 || compact != -1 {
		t.Errorf("after a rolled-back load: revisions %d, %d, %v; want 1, -1", cur, compact, err)
	}
	load, err = begin(empty)
	if err != nil {
		t.Fatalf("load after a rolled-back one: %v", err)
	}
	// Versions and create revisions left 0 are computed as writes would.
	rows := []backends.LogRow{
		{Rev: 2, Key: []byte("a"), Value: []byte("1")},
		{Rev: 3, Key: []byte("a"), Value: []byte("2")},
		{Rev: 4, Key: []byte("a"), Deleted: true},
		{Rev: 5, Key: []byte("a"), Value: []byte("3")},
	}
	if err := load.Append(ctx, rows); err != nil {
		t.Fatal(err)
	}
	if err := load.Commit(ctx, 7, -1); err != nil {
		t.Fatal(err)
	}
	got, err := empty.Range(ctx, &pb.RangeRequest{Key: []byte("a")})
	if err != nil || len(got.Kvs) != 1 || got.Kvs[0].Version != 1 || got.Kvs[0].CreateRevision != 5 || got.Header.Revision != 7 {
		t.Fatalf("after loading a's history: %v, %v; want version 1, created at 5, revision 7", got, err)
	}
	got, err = empty.Range(ctx, &pb.RangeRequest{Key: []byte("a"), Revision: 3})
	if err != nil || len(got.Kvs) != 1 || got.Kvs[0].Version != 2 || got.Kvs[0].CreateRevision != 2 {
		t.Fatalf("a at revision 3: %v, %v; want version 2, created at 2", got, err)
	}
}

func rowString(r backends.LogRow) string {
	return fmt.Sprintf("%d.%d %q deleted=%v create=%d prev=%d version=%d lease=%d value=%d bytes",
		r.Rev, r.Sub, r.Key, r.Deleted, r.CreateRev, r.PrevRev, r.Version, r.Lease, len(r.Value))
}

// KVString describes a range result compactly (values by their length),
// for test failure messages.
func KVString(header int64, kvs []*mvccpb.KeyValue) string {
	out := fmt.Sprintf("@%d [", header)
	for _, kv := range kvs {
		out += kvString(kv) + " "
	}
	return out + "]"
}

func kvString(kv *mvccpb.KeyValue) string {
	if kv == nil {
		return "<nil>"
	}
	return fmt.Sprintf("%q(c%d m%d v%d l%d %dB)", kv.Key, kv.CreateRevision, kv.ModRevision, kv.Version, kv.Lease, len(kv.Value))
}

// EventString describes a watch event compactly, for test failure messages.
func EventString(ev *mvccpb.Event) string {
	return fmt.Sprintf("%s %s prev=%s", ev.Type, kvString(ev.Kv), kvString(ev.PrevKv))
}
