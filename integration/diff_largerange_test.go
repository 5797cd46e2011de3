package integration

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/protobuf/proto"
)

// TestDiffLargeRange: Ranges over more keys than one read takes (kvsql
// reads a large Range in chunks from one snapshot, taking their bytes from
// the budget of Range results in flight, and sends them encoded as read)
// answer exactly as etcd's, for every option and across chunk boundaries;
// with a budget smaller than one chunk, concurrent large Ranges wait for
// each other and each still gets the whole answer.
func TestDiffLargeRange(t *testing.T) {
	t.Parallel()
	runDiff(t, serverOptions{MaxRangeBytesInFlight: 64 << 10}, func(d *differ) {
		const keys = 1600
		d.ok(d.leaseGrant(11, 600))
		key := func(i int) []byte { return fmt.Appendf(nil, "l/%04d", i) }
		for i := 0; i < keys; i += 100 {
			var ops []*pb.RequestOp
			for j := i; j < i+100; j++ {
				p := &pb.PutRequest{Key: key(j), Value: []byte(strings.Repeat(string(rune('a'+j%26)), j%2000))}
				if j%9 == 4 {
					p.Lease = 11
				}
				ops = append(ops, &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: p}})
			}
			d.ok(d.txn(&pb.TxnRequest{Success: ops}))
		}
		mid := d.currentRev()
		for i := 0; i < keys; i += 7 {
			d.ok(d.del(&pb.DeleteRangeRequest{Key: key(i)}))
		}
		for i := 3; i < keys; i += 50 {
			d.ok(d.put(&pb.PutRequest{Key: key(i), Value: []byte("again")}))
		}
		live := int64(keys - (keys+6)/7)
		all := func(r *pb.RangeRequest) *pb.RangeRequest {
			r.Key, r.RangeEnd = []byte("l/"), []byte(prefixEnd("l/"))
			return r
		}
		for _, r := range []*pb.RangeRequest{
			all(&pb.RangeRequest{}),
			{Key: []byte{0}, RangeEnd: []byte{0}},
			{Key: key(800), RangeEnd: []byte{0}},
			{Key: key(100), RangeEnd: key(1300)},
			all(&pb.RangeRequest{Limit: 1}),
			all(&pb.RangeRequest{Limit: 500}),
			all(&pb.RangeRequest{Limit: 501}),
			all(&pb.RangeRequest{Limit: 700}),
			all(&pb.RangeRequest{Limit: live - 1}),
			all(&pb.RangeRequest{Limit: live}),
			all(&pb.RangeRequest{Limit: live + 1}),
			all(&pb.RangeRequest{Limit: 5000}),
			all(&pb.RangeRequest{KeysOnly: true}),
			all(&pb.RangeRequest{KeysOnly: true, Limit: 900}),
			all(&pb.RangeRequest{CountOnly: true}),
			all(&pb.RangeRequest{CountOnly: true, Limit: 900}),
			all(&pb.RangeRequest{Revision: mid}),
			all(&pb.RangeRequest{Revision: mid, Limit: 900}),
			all(&pb.RangeRequest{Revision: mid, KeysOnly: true}),
			all(&pb.RangeRequest{Serializable: true}),
			all(&pb.RangeRequest{SortOrder: pb.RangeRequest_ASCEND}),
			all(&pb.RangeRequest{SortOrder: pb.RangeRequest_DESCEND, Limit: 700}),
			all(&pb.RangeRequest{SortTarget: pb.RangeRequest_VALUE}),
			all(&pb.RangeRequest{SortTarget: pb.RangeRequest_MOD, SortOrder: pb.RangeRequest_DESCEND}),
			all(&pb.RangeRequest{MinModRevision: mid}),
			all(&pb.RangeRequest{MaxCreateRevision: mid, Limit: 600}),
		} {
			d.rng(r)
		}

		// Concurrent large Ranges on kvsql, each a few times the budget.
		for _, r := range []*pb.RangeRequest{all(&pb.RangeRequest{}), all(&pb.RangeRequest{Revision: mid})} {
			want, err := d.etcd.kv.Range(d.ctx, r)
			if err != nil {
				d.t.Fatal(err)
			}
			var wg sync.WaitGroup
			for range 6 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					ctx, cancel := context.WithTimeout(d.ctx, diffTimeout)
					defer cancel()
					got, err := d.kv.kv.Range(ctx, proto.Clone(r).(*pb.RangeRequest))
					d.compare("concurrent Range "+compact(r), want, nil, got, err)
				}()
			}
			wg.Wait()
		}
	})
}
