package backendtest

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/kvsql/kvsql/backends"
)

// ValueOnceLog is a history as a kvsql before schema/009 wrote it, when
// kv_current held a copy of each live value: each dialect's upgrade test
// writes these kv_log rows and the kv_current rows of ValueOnceCurrent in
// that schema, opens the database with the current kvsql (which migrates
// it) and calls CheckValueOnceUpgrade. The rows cover every way a key's
// newest row gets its sub-revision: a key put twice, two keys put in one
// txn (subs 0 and 1), a key deleted and put again in one txn (the put is
// sub 1), and a deleted key.
var ValueOnceLog = []backends.LogRow{
	{Rev: 2, Sub: 0, Key: []byte("a"), CreateRev: 2, Version: 1, Value: []byte("a@2")},
	{Rev: 3, Sub: 0, Key: []byte("a"), CreateRev: 2, PrevRev: 2, Version: 2, Value: []byte("a@3")},
	{Rev: 4, Sub: 0, Key: []byte("b"), CreateRev: 4, Version: 1, Value: []byte("b@4")},
	{Rev: 4, Sub: 1, Key: []byte("c"), CreateRev: 4, Version: 1, Value: []byte("c@4.1")},
	{Rev: 5, Sub: 0, Key: []byte("d"), CreateRev: 5, Version: 1, Value: []byte("d@5")},
	{Rev: 6, Sub: 0, Key: []byte("d"), Deleted: true, PrevRev: 5},
	{Rev: 6, Sub: 1, Key: []byte("d"), CreateRev: 6, Version: 1, Value: []byte("d@6.1")},
	{Rev: 7, Sub: 0, Key: []byte("e"), CreateRev: 7, Version: 1, Value: []byte("e@7")},
	{Rev: 8, Sub: 0, Key: []byte("e"), Deleted: true, PrevRev: 7},
}

// ValueOnceRev is the current revision of ValueOnceLog.
const ValueOnceRev = 8

// ValueOnceCurrent returns the kv_current rows of ValueOnceLog: the newest
// row of each key that is not a tombstone, in key order.
func ValueOnceCurrent() []backends.LogRow {
	newest := map[string]backends.LogRow{}
	var keys []string
	for _, r := range ValueOnceLog {
		if _, ok := newest[string(r.Key)]; !ok {
			keys = append(keys, string(r.Key))
		}
		newest[string(r.Key)] = r
	}
	var out []backends.LogRow
	for _, k := range keys {
		if r := newest[k]; !r.Deleted {
			out = append(out, r)
		}
	}
	return out
}

// OldSchema is what SeedValueOnce needs of a dialect: its migrations, how
// to run a statement, and its statements for the schema before 009.
type OldSchema struct {
	Migrations []backends.Migration
	// Exec runs one statement with its arguments.
	Exec func(q string, args ...any) error
	// Split splits a migration file into statements (nil: run it whole).
	Split func(string) []string
	// CreateVersions creates kv_schema; RecordVersion takes a version.
	CreateVersions, RecordVersion string
	// InsertLog takes a kv_log row (rev, sub, key, deleted, create_rev,
	// prev_rev, version, lease, value); InsertCurrent a kv_current row as
	// before 009 (key, create_rev, mod_rev, version, lease, value);
	// SetRevision the current revision.
	InsertLog, InsertCurrent, SetRevision string
}

// SeedValueOnce builds, through o, a database as a kvsql before schema/009
// left it: every migration below 009 applied and recorded, and
// ValueOnceLog with its kv_current rows (values included) written.
func SeedValueOnce(t *testing.T, o OldSchema) {
	t.Helper()
	exec := func(q string, args ...any) {
		t.Helper()
		if err := o.Exec(q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	exec(o.CreateVersions)
	for _, m := range o.Migrations {
		if m.Version >= 9 {
			continue
		}
		stmts := []string{m.SQL}
		if o.Split != nil {
			stmts = o.Split(m.SQL)
		}
		for _, q := range stmts {
			exec(q)
		}
		exec(o.RecordVersion, m.Version)
	}
	for _, r := range ValueOnceLog {
		exec(o.InsertLog, r.Rev, r.Sub, r.Key, r.Deleted, r.CreateRev, r.PrevRev, r.Version, r.Lease, append([]byte{}, r.Value...))
	}
	for _, r := range ValueOnceCurrent() {
		exec(o.InsertCurrent, r.Key, r.CreateRev, r.Rev, r.Version, r.Lease, r.Value)
	}
	exec(o.SetRevision, int64(ValueOnceRev))
}

// CheckValueOnceUpgrade checks a database written as ValueOnceLog by a
// kvsql before schema/009 and opened since by the current one: every live
// key reads back with its value and metadata, old revisions still read,
// and writes after the upgrade read back.
func CheckValueOnceUpgrade(t *testing.T, be backends.Backend) {
	t.Helper()
	ctx := context.Background()
	want := ValueOnceCurrent()
	resp, err := be.Range(ctx, &pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}})
	if err != nil {
		t.Fatal(err)
	}
	if resp.Header.Revision != ValueOnceRev {
		t.Errorf("revision after the upgrade %d, want %d", resp.Header.Revision, ValueOnceRev)
	}
	if err := sameKVs(resp, want); err != nil {
		t.Errorf("latest state after the upgrade: %v", err)
	}
	// One key at a time (the Get path) and through a limited range.
	for _, r := range want {
		got, err := be.Range(ctx, &pb.RangeRequest{Key: r.Key})
		if err != nil {
			t.Fatal(err)
		}
		if err := sameKVs(got, []backends.LogRow{r}); err != nil {
			t.Errorf("get %q after the upgrade: %v", r.Key, err)
		}
	}
	// History is untouched: a at revision 2.
	old, err := be.Range(ctx, &pb.RangeRequest{Key: []byte("a"), Revision: 2})
	if err != nil {
		t.Fatal(err)
	}
	if err := sameKVs(old, ValueOnceLog[:1]); err != nil {
		t.Errorf("a at revision 2 after the upgrade: %v", err)
	}
	// A txn comparing an upgraded key's value, then a put, read back.
	txn, err := be.Txn(ctx, &pb.TxnRequest{
		Compare: []*pb.Compare{{Key: []byte("c"), Target: pb.Compare_VALUE, Result: pb.Compare_EQUAL,
			TargetUnion: &pb.Compare_Value{Value: []byte("c@4.1")}}},
		Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{
			Key: []byte("c"), Value: []byte("c@9"), PrevKv: true}}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	if !txn.Succeeded {
		t.Fatalf("txn comparing c's upgraded value did not succeed")
	}
	if prev := txn.Responses[0].GetResponsePut().PrevKv; prev == nil || string(prev.Value) != "c@4.1" {
		t.Errorf("put c: prev_kv %v, want the upgraded value c@4.1", prev)
	}
	got, err := be.Range(ctx, &pb.RangeRequest{Key: []byte("c")})
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Kvs) != 1 || string(got.Kvs[0].Value) != "c@9" || got.Kvs[0].ModRevision != ValueOnceRev+1 || got.Kvs[0].Version != 2 {
		t.Errorf("c after a put following the upgrade: %v", got.Kvs)
	}
}

// sameKVs compares a range response with the rows it should return.
func sameKVs(resp *pb.RangeResponse, want []backends.LogRow) error {
	if len(resp.Kvs) != len(want) {
		return fmt.Errorf("%d keys %v, want %d", len(resp.Kvs), resp.Kvs, len(want))
	}
	for i, kv := range resp.Kvs {
		w := want[i]
		if !bytes.Equal(kv.Key, w.Key) || !bytes.Equal(kv.Value, w.Value) || kv.CreateRevision != w.CreateRev ||
			kv.ModRevision != w.Rev || kv.Version != w.Version || kv.Lease != w.Lease {
			return fmt.Errorf("key %d: %v, want %+v", i, kv, w)
		}
	}
	return nil
}
