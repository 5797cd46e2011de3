package integration

import (
	"fmt"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

func TestDiffWatch(t *testing.T) {
	t.Parallel()
	runDiff(t, serverOptions{}, func(d *differ) {
		d.ok(d.leaseGrant(42, 600))
		seedKeys(d, 42)
		cur := d.currentRev()
		wp := d.openWatch()
		noPut := []pb.WatchCreateRequest_FilterType{pb.WatchCreateRequest_NOPUT}
		noDel := []pb.WatchCreateRequest_FilterType{pb.WatchCreateRequest_NODELETE}
		for _, c := range []*pb.WatchCreateRequest{
			{Key: bs("a")},
			{Key: bs("a/"), RangeEnd: bs(prefixEnd("a/")), PrevKv: true},
			{Key: bs("b"), RangeEnd: bs("\x00"), Filters: noPut},
			{Key: []byte{0}, RangeEnd: []byte{0}, Filters: noDel, PrevKv: true},
			{Key: []byte{0}, RangeEnd: []byte{0}, StartRevision: 1, PrevKv: true},
			{Key: bs("a"), RangeEnd: bs(prefixEnd("a")), StartRevision: 3},
			{Key: bs("c"), StartRevision: cur - 3, PrevKv: true, Filters: noPut},
			{Key: bs("a"), RangeEnd: bs("\x00"), StartRevision: cur + 2, PrevKv: true},
			{Key: bs("a"), RangeEnd: bs("b"), StartRevision: cur},
			{Key: bs("x"), WatchId: 100, ProgressNotify: true},
			{Key: bs("a"), Filters: append(noPut, noDel...)},
			{}, // the empty key watches "\x00"
			{RangeEnd: bs("\x00")},
			// failures
			{Key: bs("x"), WatchId: 100},
			{Key: bs("b"), RangeEnd: bs("a")},
			{Key: bs("b"), RangeEnd: bs("b")},
			{Key: bs("b"), StartRevision: -1},
		} {
			wp.create(c)
		}
		// writes of every kind
		d.ok(d.put(putReq("a", "w1")))
		d.ok(d.put(putReq("a/1", "w2")))
		d.ok(d.del(&pb.DeleteRangeRequest{Key: bs("a/"), RangeEnd: bs(prefixEnd("a/"))}))
		d.ok(d.put(putReq("a/1", "recreated")))
		d.ok(d.txn(&pb.TxnRequest{Success: []*pb.RequestOp{
			opPut(putReq("x", "1")), opPut(putReq("b", "tx")), opDel(&pb.DeleteRangeRequest{Key: bs("c")}),
			opPut(&pb.PutRequest{Key: bs("d"), IgnoreValue: true}), opDel(&pb.DeleteRangeRequest{Key: bs("none")}),
		}}))
		d.ok(d.put(&pb.PutRequest{Key: bs("a/5"), Value: bs("l"), Lease: 42}))
		d.ok(d.leaseRevoke(42))
		d.ok(d.put(putReq("\x00", "nul")))
		wp.compareEvents("after writes")

		// cancel, and a cancel of an unknown ID (etcd answers nothing: the
		// next control response must be the one for the following create)
		wp.cancelWatch(1, true)
		wp.cancelWatch(999, false)
		wp.create(&pb.WatchCreateRequest{Key: bs("a"), RangeEnd: bs("\x00"), PrevKv: true})
		wp.cancelWatch(1, false) // already cancelled
		wp.create(&pb.WatchCreateRequest{Key: bs("b")})
		d.ok(d.put(putReq("a/1", "after cancel")))
		d.ok(d.put(putReq("b", "after cancel")))
		wp.compareEvents("after cancel")

		// compaction: a watch from below the compact revision is created,
		// then cancelled with the compact revision. It gets a stream of its
		// own: etcd keeps a compacted watch in its stream, never synced, so
		// it never again answers RequestProgress on that stream (kvsql
		// forgets the watch and does answer; not compared).
		cur = d.currentRev()
		d.ok(d.compact(cur - 2))
		wpc := d.openWatch()
		wpc.create(&pb.WatchCreateRequest{Key: bs("a"), RangeEnd: bs("\x00"), StartRevision: cur - 3})
		wpc.ctrl("compacted watch cancellation")
		wp.create(&pb.WatchCreateRequest{Key: bs("a"), RangeEnd: bs("\x00"), StartRevision: cur - 2, PrevKv: true})
		wp.compareEvents("after compaction")

		// a second stream sees the same
		wp2 := d.openWatch()
		wp2.create(&pb.WatchCreateRequest{Key: []byte{0}, RangeEnd: []byte{0}, StartRevision: cur - 2, PrevKv: true})
		for i := range 5 {
			d.ok(d.put(putReq(fmt.Sprintf("z/%d", i), "v")))
		}
		d.ok(d.del(&pb.DeleteRangeRequest{Key: bs("z/"), RangeEnd: bs(prefixEnd("z/")), PrevKv: true}))
		wp.compareEvents("final")
		wp2.compareEvents("second stream")
	})
}

func TestDiffLease(t *testing.T) {
	t.Parallel()
	runDiff(t, serverOptions{}, func(d *differ) {
		d.ok(d.leaseGrant(1, 60))
		d.leaseGrant(1, 60)         // exists
		d.leaseGrant(2, 9000000001) // TTL too large
		d.ok(d.leaseGrant(3, 1))    // raised to the minimum TTL
		d.ok(d.leaseGrant(4, -5))   // likewise
		d.ok(d.leaseGrant(5, 9000000000))
		d.ok(d.leaseGrant(-6, 100))
		d.leases()
		wp := d.openWatch()
		wp.create(&pb.WatchCreateRequest{Key: []byte{0}, RangeEnd: []byte{0}, PrevKv: true})
		for _, k := range []string{"l/c", "l/a", "l/b", "l/d"} {
			d.ok(d.put(&pb.PutRequest{Key: bs(k), Value: bs("v-" + k), Lease: 1}))
		}
		d.ok(d.put(&pb.PutRequest{Key: bs("l/e"), Value: bs("other"), Lease: 3}))
		d.ok(d.put(putReq("l/d", "unleased")))
		d.ok(d.put(&pb.PutRequest{Key: bs("l/e"), Lease: 1, IgnoreValue: true}))
		d.ok(d.del(&pb.DeleteRangeRequest{Key: bs("l/b")}))
		for _, id := range []int64{1, 3, 4, 5, -6, 77} {
			d.leaseTTL(id, true)
			d.leaseTTL(id, false)
			d.keepAliveOnce(id)
		}
		d.ok(d.leaseRevoke(1))
		d.leaseRevoke(1)
		d.leaseRevoke(77)
		d.leaseTTL(1, true)
		d.keepAliveOnce(1)
		d.rng(&pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}})
		d.ok(d.leaseRevoke(3)) // no keys left: no new revision
		d.leases()
		d.put(&pb.PutRequest{Key: bs("l/x"), Lease: 1})
		wp.compareEvents("lease revocations")

		// a lease with an ID chosen by the server: IDs differ, the rest must not
		var ids [2]int64
		for i, tg := range []target{d.etcd, d.kv} {
			resp, err := tg.lease.LeaseGrant(d.ctx, &pb.LeaseGrantRequest{TTL: 30})
			if err != nil || resp.ID <= 0 || resp.TTL != 30 {
				t.Fatalf("%s: LeaseGrant with ID 0: %v %v", tg.name, resp, err)
			}
			ids[i] = resp.ID
		}
		for i, tg := range []target{d.etcd, d.kv} {
			if _, err := tg.lease.LeaseRevoke(d.ctx, &pb.LeaseRevokeRequest{ID: ids[i]}); err != nil {
				t.Fatalf("%s: revoke %d: %v", tg.name, ids[i], err)
			}
		}
		d.leases()
	})
}
