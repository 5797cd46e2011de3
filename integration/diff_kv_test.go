package integration

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// Request builders, to keep the cases readable.

func bs(s string) []byte { return []byte(s) }

func putReq(k, v string) *pb.PutRequest { return &pb.PutRequest{Key: bs(k), Value: bs(v)} }

func opPut(p *pb.PutRequest) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: p}}
}

func opRange(r *pb.RangeRequest) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestRange{RequestRange: r}}
}

func opDel(r *pb.DeleteRangeRequest) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: r}}
}

func opTxn(r *pb.TxnRequest) *pb.RequestOp {
	return &pb.RequestOp{Request: &pb.RequestOp_RequestTxn{RequestTxn: r}}
}

func cmpValue(key, end string, res pb.Compare_CompareResult, v string) *pb.Compare {
	return &pb.Compare{Key: bs(key), RangeEnd: bs(end), Result: res, Target: pb.Compare_VALUE, TargetUnion: &pb.Compare_Value{Value: bs(v)}}
}

func cmpInt(key, end string, target pb.Compare_CompareTarget, res pb.Compare_CompareResult, n int64) *pb.Compare {
	c := &pb.Compare{Key: bs(key), RangeEnd: bs(end), Result: res, Target: target}
	switch target {
	case pb.Compare_VERSION:
		c.TargetUnion = &pb.Compare_Version{Version: n}
	case pb.Compare_CREATE:
		c.TargetUnion = &pb.Compare_CreateRevision{CreateRevision: n}
	case pb.Compare_MOD:
		c.TargetUnion = &pb.Compare_ModRevision{ModRevision: n}
	case pb.Compare_LEASE:
		c.TargetUnion = &pb.Compare_Lease{Lease: n}
	}
	return c
}

// prefixEnd is clientv3.GetPrefixRangeEnd.
func prefixEnd(p string) string {
	e := []byte(p)
	for i := len(e) - 1; i >= 0; i-- {
		if e[i] < 0xff {
			e[i]++
			return string(e[:i+1])
		}
	}
	return "\x00"
}

// ok fails the test when an operation that sets up a case failed on etcd.
func (d *differ) ok(_ any, err error) {
	d.t.Helper()
	if err != nil {
		d.t.Fatalf("etcd: %v", err)
	}
}

// seedKeys writes a small history: several versions, deletes, recreations
// and a leased key, so that every revision-dependent field varies.
func seedKeys(d *differ, lease int64) {
	d.t.Helper()
	for _, kv := range [][2]string{
		{"a", "1"}, {"a/1", "x"}, {"a/2", "yy"}, {"b", "2"}, {"a", "3"}, {"b/1", "z"},
		{"c", "0"}, {"a/1", "xx"}, {"a/3", "q"}, {"d", "dd"}, {"a/2", "y"},
	} {
		d.ok(d.put(putReq(kv[0], kv[1])))
	}
	d.ok(d.del(&pb.DeleteRangeRequest{Key: bs("c")}))
	d.ok(d.put(putReq("c", "again")))
	d.ok(d.put(&pb.PutRequest{Key: bs("e"), Value: bs("leased"), Lease: lease}))
	d.ok(d.put(&pb.PutRequest{Key: bs("a/4"), Value: bs("leased too"), Lease: lease}))
}

// rangeCases returns Range requests covering every option, against the
// keys of seedKeys, up to revision cur.
func rangeCases(cur int64) []*pb.RangeRequest {
	var rs []*pb.RangeRequest
	add := func(r *pb.RangeRequest) { rs = append(rs, r) }
	keySets := []struct{ key, end string }{
		{"a", ""}, {"zz", ""}, {"a/", prefixEnd("a/")}, {"a", prefixEnd("a")}, {"b", "\x00"},
		{"\x00", "\x00"}, {"a/2", "c"}, {"c", "a"}, {"a", "a"}, {"e", ""},
	}
	for _, ks := range keySets {
		for _, mod := range []func(r *pb.RangeRequest){
			func(r *pb.RangeRequest) {},
			func(r *pb.RangeRequest) { r.Limit = 1 },
			func(r *pb.RangeRequest) { r.Limit = 2 },
			func(r *pb.RangeRequest) { r.Limit = 100 },
			func(r *pb.RangeRequest) { r.Limit = -1 },
			func(r *pb.RangeRequest) { r.CountOnly = true },
			func(r *pb.RangeRequest) { r.CountOnly, r.Limit = true, 1 },
			func(r *pb.RangeRequest) { r.KeysOnly = true },
			func(r *pb.RangeRequest) { r.KeysOnly, r.Limit = true, 2 },
			func(r *pb.RangeRequest) { r.Serializable = true },
			func(r *pb.RangeRequest) { r.Revision = -1 },
			func(r *pb.RangeRequest) { r.Revision = cur },
			func(r *pb.RangeRequest) { r.Revision = cur + 1 },
			func(r *pb.RangeRequest) { r.MinModRevision = 5 },
			func(r *pb.RangeRequest) { r.MaxModRevision = 8 },
			func(r *pb.RangeRequest) { r.MinCreateRevision = 4 },
			func(r *pb.RangeRequest) { r.MaxCreateRevision = 6 },
			func(r *pb.RangeRequest) { r.MinModRevision, r.MaxCreateRevision, r.Limit = 3, 9, 1 },
		} {
			r := &pb.RangeRequest{Key: bs(ks.key), RangeEnd: bs(ks.end)}
			mod(r)
			add(r)
		}
		for rev := int64(1); rev <= cur; rev += 2 {
			add(&pb.RangeRequest{Key: bs(ks.key), RangeEnd: bs(ks.end), Revision: rev})
			add(&pb.RangeRequest{Key: bs(ks.key), RangeEnd: bs(ks.end), Revision: rev, Limit: 1, KeysOnly: rev%4 == 1})
			add(&pb.RangeRequest{Key: bs(ks.key), RangeEnd: bs(ks.end), Revision: rev, CountOnly: true})
		}
		for order := range pb.RangeRequest_SortOrder_name {
			for target := range pb.RangeRequest_SortTarget_name {
				for _, lim := range []int64{0, 2} {
					add(&pb.RangeRequest{Key: bs(ks.key), RangeEnd: bs(ks.end), SortOrder: pb.RangeRequest_SortOrder(order),
						SortTarget: pb.RangeRequest_SortTarget(target), Limit: lim, KeysOnly: lim == 2})
				}
			}
		}
	}
	// invalid sort options
	add(&pb.RangeRequest{Key: bs("a"), SortOrder: 7})
	add(&pb.RangeRequest{Key: bs("a"), SortTarget: 9})
	add(&pb.RangeRequest{})
	add(&pb.RangeRequest{RangeEnd: bs("z")})
	return rs
}

func TestDiffRange(t *testing.T) {
	t.Parallel()
	runDiff(t, serverOptions{}, func(d *differ) {
		d.ok(d.leaseGrant(100, 600))
		seedKeys(d, 100)
		cur := d.currentRev()
		for _, r := range rangeCases(cur) {
			d.rng(r)
		}
		// Sorting with ties on more keys than an insertion sort handles:
		// the order among equal elements must match etcd's too.
		for i := range 30 {
			d.ok(d.put(putReq(fmt.Sprintf("s/%02d", i), fmt.Sprintf("%d", i%3))))
		}
		for i := range 30 {
			if i%4 == 0 {
				d.ok(d.put(putReq(fmt.Sprintf("s/%02d", i), "again")))
			}
		}
		for order := range pb.RangeRequest_SortOrder_name {
			for target := range pb.RangeRequest_SortTarget_name {
				for _, lim := range []int64{0, 5} {
					d.rng(&pb.RangeRequest{Key: bs("s/"), RangeEnd: bs(prefixEnd("s/")), SortOrder: pb.RangeRequest_SortOrder(order),
						SortTarget: pb.RangeRequest_SortTarget(target), Limit: lim})
				}
			}
		}
	})
}

func TestDiffPutDelete(t *testing.T) {
	t.Parallel()
	runDiff(t, serverOptions{}, func(d *differ) {
		d.ok(d.leaseGrant(7, 600))
		d.ok(d.leaseGrant(8, 600))
		d.put(&pb.PutRequest{Key: bs("k"), Value: bs("v1"), PrevKv: true})
		d.put(&pb.PutRequest{Key: bs("k"), Value: bs("v2"), PrevKv: true})
		d.put(&pb.PutRequest{Key: bs("k"), Value: bs(""), PrevKv: true})
		d.put(&pb.PutRequest{Key: bs("k"), Value: bs("v3"), Lease: 7, PrevKv: true})
		d.put(&pb.PutRequest{Key: bs("k"), IgnoreValue: true, PrevKv: true})
		d.put(&pb.PutRequest{Key: bs("k"), Value: bs("v4"), IgnoreLease: true, PrevKv: true})
		d.put(&pb.PutRequest{Key: bs("k"), IgnoreValue: true, IgnoreLease: true, PrevKv: true})
		d.put(&pb.PutRequest{Key: bs("k"), IgnoreValue: true, Lease: 8, PrevKv: true})
		d.put(&pb.PutRequest{Key: bs("k"), Value: bs("v5")}) // drops the lease
		d.rng(&pb.RangeRequest{Key: bs("k")})
		d.leaseTTL(7, true)
		d.leaseTTL(8, true)
		// errors
		d.put(&pb.PutRequest{Key: bs("k"), Value: bs("x"), Lease: 999})
		d.put(&pb.PutRequest{Key: bs("missing"), IgnoreValue: true})
		d.put(&pb.PutRequest{Key: bs("missing"), IgnoreLease: true})
		d.put(&pb.PutRequest{Key: bs("k"), Value: bs("x"), IgnoreValue: true})
		d.put(&pb.PutRequest{Key: bs("k"), Lease: 7, IgnoreLease: true})
		d.put(&pb.PutRequest{Value: bs("x")})
		d.put(&pb.PutRequest{Key: bs("missing"), IgnoreValue: true, Lease: 999})
		// binary keys and values
		d.put(&pb.PutRequest{Key: []byte{0}, Value: []byte{0, 1, 2}})
		d.put(&pb.PutRequest{Key: []byte{0xff, 0xfe}, Value: bytes.Repeat([]byte{0xff}, 100)})
		d.rng(&pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}})

		for _, k := range []string{"p/1", "p/2", "p/3", "q", "r/1", "r/2", "s"} {
			d.put(putReq(k, "v-"+k))
		}
		d.del(&pb.DeleteRangeRequest{Key: bs("nope")})
		d.del(&pb.DeleteRangeRequest{Key: bs("nope"), PrevKv: true})
		d.del(&pb.DeleteRangeRequest{Key: bs("q"), PrevKv: true})
		d.del(&pb.DeleteRangeRequest{Key: bs("p/"), RangeEnd: bs(prefixEnd("p/")), PrevKv: true})
		d.del(&pb.DeleteRangeRequest{Key: bs("p/"), RangeEnd: bs(prefixEnd("p/")), PrevKv: true})
		d.del(&pb.DeleteRangeRequest{Key: bs("s"), RangeEnd: bs("r")})
		d.del(&pb.DeleteRangeRequest{Key: bs("r/1"), RangeEnd: bs("\x00")})
		d.del(&pb.DeleteRangeRequest{RangeEnd: bs("z")})
		d.put(&pb.PutRequest{Key: bs("q"), Value: bs("back"), PrevKv: true})
		d.rng(&pb.RangeRequest{Key: bs("q")})
		d.del(&pb.DeleteRangeRequest{Key: []byte{0}, RangeEnd: []byte{0}, PrevKv: true})
		d.rng(&pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}})
		d.leaseTTL(7, true)
	})
}

func TestDiffTxn(t *testing.T) {
	t.Parallel()
	runDiff(t, serverOptions{}, func(d *differ) {
		d.ok(d.leaseGrant(5, 600))
		seedKeys(d, 5)
		cur := d.currentRev()
		results := []pb.Compare_CompareResult{pb.Compare_EQUAL, pb.Compare_GREATER, pb.Compare_LESS, pb.Compare_NOT_EQUAL}
		// every target and result, on a single key, a missing key, a range
		// and a from-key range
		for _, ks := range [][2]string{{"a", ""}, {"missing", ""}, {"a/", prefixEnd("a/")}, {"b", "\x00"}, {"zz", "\x00"}} {
			for _, res := range results {
				for _, v := range []string{"", "3", "x", "xx", "z"} {
					d.txn(&pb.TxnRequest{Compare: []*pb.Compare{cmpValue(ks[0], ks[1], res, v)},
						Success: []*pb.RequestOp{opRange(&pb.RangeRequest{Key: bs("a")})}})
				}
				for _, target := range []pb.Compare_CompareTarget{pb.Compare_VERSION, pb.Compare_CREATE, pb.Compare_MOD, pb.Compare_LEASE} {
					for _, n := range []int64{0, 1, 2, 5, cur} {
						d.txn(&pb.TxnRequest{Compare: []*pb.Compare{cmpInt(ks[0], ks[1], target, res, n)},
							Success: []*pb.RequestOp{opRange(&pb.RangeRequest{Key: bs("b")})},
							Failure: []*pb.RequestOp{opRange(&pb.RangeRequest{Key: bs("c")})}})
					}
				}
			}
		}
		// a target whose union holds another type compares against zero
		d.txn(&pb.TxnRequest{Compare: []*pb.Compare{{Key: bs("a"), Target: pb.Compare_MOD, Result: pb.Compare_GREATER, TargetUnion: &pb.Compare_Value{Value: bs("3")}}},
			Success: []*pb.RequestOp{opRange(&pb.RangeRequest{Key: bs("a")})}})
		d.txn(&pb.TxnRequest{Compare: []*pb.Compare{{Key: bs("a"), Target: pb.Compare_VALUE, Result: pb.Compare_GREATER, TargetUnion: &pb.Compare_Version{Version: 3}}},
			Success: []*pb.RequestOp{opRange(&pb.RangeRequest{Key: bs("a")})}})
		// several compares: all must hold
		d.txn(&pb.TxnRequest{Compare: []*pb.Compare{
			cmpValue("a", "", pb.Compare_EQUAL, "3"),
			cmpInt("a/", prefixEnd("a/"), pb.Compare_VERSION, pb.Compare_GREATER, 0),
			cmpInt("zz", "", pb.Compare_CREATE, pb.Compare_EQUAL, 0),
		}, Success: []*pb.RequestOp{opPut(putReq("t1", "yes"))}, Failure: []*pb.RequestOp{opPut(putReq("t1", "no"))}})
		d.txn(&pb.TxnRequest{Compare: []*pb.Compare{
			cmpValue("a", "", pb.Compare_EQUAL, "3"),
			cmpInt("a/", prefixEnd("a/"), pb.Compare_VERSION, pb.Compare_GREATER, 1),
		}, Success: []*pb.RequestOp{opPut(putReq("t1", "yes2"))}, Failure: []*pb.RequestOp{opPut(putReq("t1", "no2"))}})
		// every op type, range after put and delete in the same txn
		d.txn(&pb.TxnRequest{Success: []*pb.RequestOp{
			opRange(&pb.RangeRequest{Key: bs("a/"), RangeEnd: bs(prefixEnd("a/"))}),
			opPut(&pb.PutRequest{Key: bs("a/9"), Value: bs("new"), PrevKv: true}),
			opRange(&pb.RangeRequest{Key: bs("a/"), RangeEnd: bs(prefixEnd("a/"))}),
			opDel(&pb.DeleteRangeRequest{Key: bs("a/1"), PrevKv: true}),
			opRange(&pb.RangeRequest{Key: bs("a/"), RangeEnd: bs(prefixEnd("a/")), Limit: 2}),
			opRange(&pb.RangeRequest{Key: bs("a/"), RangeEnd: bs(prefixEnd("a/")), Revision: cur}),
			opRange(&pb.RangeRequest{Key: bs("a/"), RangeEnd: bs(prefixEnd("a/")), CountOnly: true}),
			opDel(&pb.DeleteRangeRequest{Key: bs("nothing")}),
			opPut(&pb.PutRequest{Key: bs("a/2"), IgnoreValue: true, PrevKv: true}),
			opRange(&pb.RangeRequest{Key: bs("a/2"), SortOrder: pb.RangeRequest_DESCEND, SortTarget: pb.RangeRequest_MOD}),
		}})
		// a txn that changes nothing keeps the revision
		d.txn(&pb.TxnRequest{Success: []*pb.RequestOp{opDel(&pb.DeleteRangeRequest{Key: bs("nothing")}), opRange(&pb.RangeRequest{Key: bs("a")})}})
		d.txn(&pb.TxnRequest{})
		d.txn(&pb.TxnRequest{Compare: []*pb.Compare{cmpValue("a", "", pb.Compare_EQUAL, "nope")}})
		// nested txns: compares see the state before the outer txn
		d.txn(&pb.TxnRequest{
			Compare: []*pb.Compare{cmpInt("n", "", pb.Compare_VERSION, pb.Compare_EQUAL, 0)},
			Success: []*pb.RequestOp{
				opPut(putReq("n", "outer")),
				opTxn(&pb.TxnRequest{
					Compare: []*pb.Compare{cmpInt("n", "", pb.Compare_VERSION, pb.Compare_EQUAL, 0)},
					Success: []*pb.RequestOp{opPut(putReq("n2", "inner-yes")), opRange(&pb.RangeRequest{Key: bs("n"), RangeEnd: bs("o")})},
					Failure: []*pb.RequestOp{opPut(putReq("n2", "inner-no"))},
				}),
				opTxn(&pb.TxnRequest{
					Compare: []*pb.Compare{cmpValue("a", "", pb.Compare_EQUAL, "nope")},
					Success: []*pb.RequestOp{opPut(putReq("n3", "x"))},
					Failure: []*pb.RequestOp{
						opDel(&pb.DeleteRangeRequest{Key: bs("b"), PrevKv: true}),
						opTxn(&pb.TxnRequest{Success: []*pb.RequestOp{opRange(&pb.RangeRequest{Key: bs("b"), RangeEnd: bs("\x00"), KeysOnly: true})}}),
					},
				}),
				opTxn(&pb.TxnRequest{Success: []*pb.RequestOp{opRange(&pb.RangeRequest{Key: bs("n")})}}),
			},
		})
		// a read-only nested txn, and a read-only txn with a historic range
		d.txn(&pb.TxnRequest{Success: []*pb.RequestOp{opTxn(&pb.TxnRequest{Success: []*pb.RequestOp{opRange(&pb.RangeRequest{Key: bs("n")})}})}})
		d.txn(&pb.TxnRequest{Success: []*pb.RequestOp{opRange(&pb.RangeRequest{Key: bs("a"), Revision: 2}), opRange(&pb.RangeRequest{Key: bs("a"), Revision: -1})}})
		// leases in txns
		d.txn(&pb.TxnRequest{Compare: []*pb.Compare{cmpInt("e", "", pb.Compare_LEASE, pb.Compare_EQUAL, 5)},
			Success: []*pb.RequestOp{opPut(&pb.PutRequest{Key: bs("e2"), Value: bs("l"), Lease: 5}), opPut(&pb.PutRequest{Key: bs("e"), IgnoreLease: true, Value: bs("nv")})}})
		d.leaseTTL(5, true)
		// errors inside txns: nothing is applied
		cur = d.currentRev()
		for _, r := range []*pb.TxnRequest{
			{Success: []*pb.RequestOp{opPut(putReq("x", "1")), opPut(&pb.PutRequest{Key: bs("y"), Lease: 999})}},
			{Success: []*pb.RequestOp{opPut(putReq("x", "1")), opPut(&pb.PutRequest{Key: bs("missing"), IgnoreValue: true})}},
			{Success: []*pb.RequestOp{opPut(putReq("x", "1")), opRange(&pb.RangeRequest{Key: bs("a"), Revision: cur + 1})}},
			{Success: []*pb.RequestOp{opPut(putReq("x", "1")), opTxn(&pb.TxnRequest{Success: []*pb.RequestOp{opPut(&pb.PutRequest{Key: bs("y"), Lease: 999})}})}},
			{Success: []*pb.RequestOp{opRange(&pb.RangeRequest{Key: bs("a"), Revision: cur + 1})}},
			{Failure: []*pb.RequestOp{opRange(&pb.RangeRequest{Key: bs("a"), Revision: cur + 1})}}, // not taken: fine
			{Compare: []*pb.Compare{cmpValue("a", "", pb.Compare_EQUAL, "nope")}, Failure: []*pb.RequestOp{opPut(&pb.PutRequest{Key: bs("y"), Lease: 999})}},
			// duplicate keys
			{Success: []*pb.RequestOp{opPut(putReq("x", "1")), opPut(putReq("x", "2"))}},
			{Success: []*pb.RequestOp{opPut(putReq("x", "1")), opDel(&pb.DeleteRangeRequest{Key: bs("x")})}},
			{Success: []*pb.RequestOp{opPut(putReq("x/1", "1")), opDel(&pb.DeleteRangeRequest{Key: bs("x/"), RangeEnd: bs(prefixEnd("x/"))})}},
			{Success: []*pb.RequestOp{opPut(putReq("x", "1")), opTxn(&pb.TxnRequest{Success: []*pb.RequestOp{opPut(putReq("x", "2"))}})}},
			{Success: []*pb.RequestOp{opPut(putReq("x", "1")), opTxn(&pb.TxnRequest{Failure: []*pb.RequestOp{opDel(&pb.DeleteRangeRequest{Key: bs("x")})}})}},
			{Success: []*pb.RequestOp{opTxn(&pb.TxnRequest{Success: []*pb.RequestOp{opPut(putReq("x", "2"))}, Failure: []*pb.RequestOp{opPut(putReq("x", "3"))}})}},
			{Success: []*pb.RequestOp{opTxn(&pb.TxnRequest{Success: []*pb.RequestOp{opPut(putReq("x", "2"))}}), opTxn(&pb.TxnRequest{Success: []*pb.RequestOp{opPut(putReq("x", "3"))}})}},
			{Success: []*pb.RequestOp{opDel(&pb.DeleteRangeRequest{Key: bs("x")}), opDel(&pb.DeleteRangeRequest{Key: bs("x")})}},
			{Success: []*pb.RequestOp{opDel(&pb.DeleteRangeRequest{Key: bs("a"), RangeEnd: bs("\x00")}), opPut(putReq("zzz", "1"))}},
			// empty keys and ops
			{Compare: []*pb.Compare{{Target: pb.Compare_VERSION}}},
			{Success: []*pb.RequestOp{opRange(&pb.RangeRequest{})}},
			{Success: []*pb.RequestOp{opPut(&pb.PutRequest{})}},
			{Success: []*pb.RequestOp{opDel(&pb.DeleteRangeRequest{})}},
			{Success: []*pb.RequestOp{{}}},
			{Failure: []*pb.RequestOp{opTxn(&pb.TxnRequest{Success: []*pb.RequestOp{{}}})}},
			{Success: []*pb.RequestOp{opPut(&pb.PutRequest{Key: bs("x"), Value: bs("v"), IgnoreValue: true})}},
			{Success: []*pb.RequestOp{opRange(&pb.RangeRequest{Key: bs("x"), SortOrder: 9})}},
		} {
			d.txn(r)
		}
		d.rng(&pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}})
		// the default limit of 128 ops
		var many []*pb.RequestOp
		for i := range 129 {
			many = append(many, opPut(putReq(fmt.Sprintf("m/%03d", i), "v")))
		}
		d.txn(&pb.TxnRequest{Success: many})
		d.txn(&pb.TxnRequest{Success: many[:128]})
		d.rng(&pb.RangeRequest{Key: bs("m/"), RangeEnd: bs(prefixEnd("m/")), CountOnly: true})
	})
}

func TestDiffCompact(t *testing.T) {
	t.Parallel()
	runDiff(t, serverOptions{}, func(d *differ) {
		d.ok(d.leaseGrant(3, 600))
		seedKeys(d, 3)
		cur := d.currentRev()
		d.compact(cur + 1) // future
		d.compact(0)       // not above the (never set) compact revision
		d.ok(d.compact(6))
		d.compact(6)
		d.compact(5)
		for rev := int64(-1); rev <= cur+1; rev++ {
			d.rng(&pb.RangeRequest{Key: bs("a"), RangeEnd: bs("\x00"), Revision: rev})
			d.rng(&pb.RangeRequest{Key: bs("a"), Revision: rev, CountOnly: true})
			d.txn(&pb.TxnRequest{Success: []*pb.RequestOp{opRange(&pb.RangeRequest{Key: bs("a"), RangeEnd: bs("\x00"), Revision: rev})}})
			d.txn(&pb.TxnRequest{Success: []*pb.RequestOp{opPut(putReq("w", "v")), opRange(&pb.RangeRequest{Key: bs("a"), Revision: rev, KeysOnly: true})}})
			d.rangeStream(&pb.RangeRequest{Key: bs("a"), RangeEnd: bs("\x00"), Revision: rev})
		}
		cur = d.currentRev()
		d.ok(d.compact(cur))
		d.rng(&pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}, Revision: cur})
		d.rng(&pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}, Revision: cur - 1})
		d.rng(&pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}})
		d.ok(d.put(putReq("after", "compact")))
		d.rng(&pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}, Revision: cur})
	})
}

func TestDiffRangeStream(t *testing.T) {
	t.Parallel()
	runDiff(t, serverOptions{MaxRequestBytes: 4096}, func(d *differ) {
		d.ok(d.leaseGrant(9, 600))
		for i := range 150 {
			p := &pb.PutRequest{Key: bs(fmt.Sprintf("r/%03d", i)), Value: bs(strings.Repeat("v", i%7*40))}
			if i%10 == 3 {
				p.Lease = 9
			}
			d.ok(d.put(p))
		}
		mid := d.currentRev()
		for i := 0; i < 150; i += 4 {
			d.ok(d.del(&pb.DeleteRangeRequest{Key: bs(fmt.Sprintf("r/%03d", i))}))
		}
		for _, r := range []*pb.RangeRequest{
			{Key: bs("r/"), RangeEnd: bs(prefixEnd("r/"))},
			{Key: []byte{0}, RangeEnd: []byte{0}},
			{Key: bs("r/050"), RangeEnd: bs("\x00")},
			{Key: bs("r/001")},
			{Key: bs("r/000")},
			{Key: bs("r/"), RangeEnd: bs(prefixEnd("r/")), Limit: 1},
			{Key: bs("r/"), RangeEnd: bs(prefixEnd("r/")), Limit: 37},
			{Key: bs("r/"), RangeEnd: bs(prefixEnd("r/")), Limit: 112},
			{Key: bs("r/"), RangeEnd: bs(prefixEnd("r/")), Limit: 113},
			{Key: bs("r/"), RangeEnd: bs(prefixEnd("r/")), Limit: 500},
			{Key: bs("r/"), RangeEnd: bs(prefixEnd("r/")), KeysOnly: true},
			{Key: bs("r/"), RangeEnd: bs(prefixEnd("r/")), CountOnly: true},
			{Key: bs("r/"), RangeEnd: bs(prefixEnd("r/")), CountOnly: true, Limit: 3},
			{Key: bs("r/"), RangeEnd: bs(prefixEnd("r/")), Revision: mid},
			{Key: bs("r/"), RangeEnd: bs(prefixEnd("r/")), Revision: mid, Limit: 20},
			{Key: bs("r/"), RangeEnd: bs(prefixEnd("r/")), Revision: 10},
			{Key: bs("r/"), RangeEnd: bs(prefixEnd("r/")), Revision: 1},
			{Key: bs("r/"), RangeEnd: bs(prefixEnd("r/")), Revision: 1000},
			{Key: bs("r/"), RangeEnd: bs(prefixEnd("r/")), Serializable: true},
			{Key: bs("r/"), RangeEnd: bs(prefixEnd("r/")), SortOrder: pb.RangeRequest_ASCEND},
			{Key: bs("r/"), RangeEnd: bs(prefixEnd("r/")), SortOrder: pb.RangeRequest_DESCEND},
			{Key: bs("r/"), RangeEnd: bs(prefixEnd("r/")), SortOrder: pb.RangeRequest_ASCEND, SortTarget: pb.RangeRequest_MOD},
			{Key: bs("r/"), RangeEnd: bs(prefixEnd("r/")), SortTarget: pb.RangeRequest_MOD},
			{Key: bs("r/"), RangeEnd: bs(prefixEnd("r/")), MinModRevision: 3},
			{Key: bs("r/"), RangeEnd: bs(prefixEnd("r/")), MaxCreateRevision: 3},
			{Key: bs("z"), RangeEnd: bs("a")},
			{Key: bs("r/"), SortOrder: 5},
			{},
		} {
			d.rangeStream(r)
		}
		d.ok(d.compact(mid))
		d.rangeStream(&pb.RangeRequest{Key: bs("r/"), RangeEnd: bs(prefixEnd("r/")), Revision: mid - 1})
		d.rangeStream(&pb.RangeRequest{Key: bs("r/"), RangeEnd: bs(prefixEnd("r/")), Revision: mid})
	})
}

func TestDiffBadInput(t *testing.T) {
	t.Parallel()
	runDiff(t, serverOptions{MaxTxnOps: 4, MaxRequestBytes: 8 * 1024}, func(d *differ) {
		big := strings.Repeat("x", 12*1024)
		d.put(putReq("k", big))
		d.put(putReq(big, "v"))
		d.del(&pb.DeleteRangeRequest{Key: bs(big)})
		d.txn(&pb.TxnRequest{Success: []*pb.RequestOp{opPut(putReq("k", big))}})
		// reads are not proposed, so etcd does not limit their size
		d.rng(&pb.RangeRequest{Key: bs(big)})
		d.txn(&pb.TxnRequest{Compare: []*pb.Compare{cmpValue("k", "", pb.Compare_EQUAL, big)}, Success: []*pb.RequestOp{opRange(&pb.RangeRequest{Key: bs("k")})}})
		// over the gRPC message limit (MaxRequestBytes + 512 KiB)
		d.put(putReq("k", strings.Repeat("y", 600*1024)))
		d.put(putReq("k", strings.Repeat("y", 4*1024)))
		ops := func(n int) []*pb.RequestOp {
			var o []*pb.RequestOp
			for i := range n {
				o = append(o, opRange(&pb.RangeRequest{Key: bs(fmt.Sprintf("k%d", i))}))
			}
			return o
		}
		var cmps []*pb.Compare
		for range 5 {
			cmps = append(cmps, cmpValue("k", "", pb.Compare_NOT_EQUAL, "z"))
		}
		for _, r := range []*pb.TxnRequest{
			{Success: ops(4)},
			{Success: ops(5)},
			{Failure: ops(5)},
			{Compare: cmps},
			{Compare: cmps[:4], Success: ops(4), Failure: ops(4)},
			{Compare: cmps[:2], Success: []*pb.RequestOp{opTxn(&pb.TxnRequest{Success: ops(2)})}},
			{Compare: cmps[:2], Success: []*pb.RequestOp{opTxn(&pb.TxnRequest{Success: ops(3)})}},
			{Success: []*pb.RequestOp{opTxn(&pb.TxnRequest{Success: []*pb.RequestOp{opTxn(&pb.TxnRequest{Success: ops(4)})}})}},
		} {
			d.txn(r)
		}
		d.rng(&pb.RangeRequest{Key: bs("k"), RangeEnd: bs("a")})
		d.del(&pb.DeleteRangeRequest{Key: bs("k"), RangeEnd: bs("a")})
		d.rng(&pb.RangeRequest{Key: bs("k"), Revision: 100})
		d.put(&pb.PutRequest{Key: bs("k"), Lease: 12345})
		d.leaseRevoke(12345)
		d.compact(100)
	})
}

// TestDiffTxnDeleteThenPutSameRevision: etcd lets a txn delete a from-key
// range (range_end "\x00", which its duplicate-key check does not treat as
// overlapping) and then put a key in it, or put a key and then delete it
// that way, so the key changes twice in one revision. Reads at that
// revision and watch events must match etcd, as far as etcd 3.7.3 itself
// survives it: it dies ("range failed to find revision pair") on a
// historic read or a prev_kv lookup at such a revision, so those are
// pinned by TestKeyChangedTwiceInOneRevision against kvsql alone.
func TestDiffTxnDeleteThenPutSameRevision(t *testing.T) {
	t.Parallel()
	runDiff(t, serverOptions{}, func(d *differ) {
		wp := d.openWatch()
		wp.create(&pb.WatchCreateRequest{Key: bs("a"), RangeEnd: bs("\x00")})
		d.ok(d.put(putReq("a", "1")))
		d.ok(d.put(putReq("b", "1")))
		// delete everything from "a", then put "a" again: rev 4
		d.txn(&pb.TxnRequest{Success: []*pb.RequestOp{
			opDel(&pb.DeleteRangeRequest{Key: bs("a"), RangeEnd: bs("\x00"), PrevKv: true}),
			opPut(&pb.PutRequest{Key: bs("a"), Value: bs("2"), PrevKv: true}),
		}})
		// put "c" (new) and "a", then delete everything from "a": rev 5
		d.txn(&pb.TxnRequest{Success: []*pb.RequestOp{
			opPut(&pb.PutRequest{Key: bs("c"), Value: bs("new"), PrevKv: true}),
			opPut(&pb.PutRequest{Key: bs("a"), Value: bs("3"), PrevKv: true}),
			opDel(&pb.DeleteRangeRequest{Key: bs("a"), RangeEnd: bs("\x00"), PrevKv: true}),
		}})
		// Historic reads at revisions 4 and 5 are left out: etcd 3.7.3
		// dies on them ("range failed to find revision pair").
		for rev := int64(2); rev <= 3; rev++ {
			d.rng(&pb.RangeRequest{Key: bs("a"), RangeEnd: bs("\x00"), Revision: rev})
		}
		d.rng(&pb.RangeRequest{Key: bs("a"), RangeEnd: bs("\x00")})
		wp.compareEvents("watch across keys changed twice in one revision")
	})
}
