package integration

// Regression tests for differences from etcd that the Kubernetes storage
// conformance suite (integration/k8s) found.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"reflect"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/protobuf/proto"
)

// streamFrame is the shape of one RangeStream message.
type streamFrame struct {
	Kvs    int
	Header bool
	Count  int64
	More   bool
}

func rangeStreamFrames(ctx context.Context, tg target, r *pb.RangeRequest) ([]streamFrame, error) {
	st, err := tg.kv.RangeStream(ctx, proto.Clone(r).(*pb.RangeRequest))
	if err != nil {
		return nil, err
	}
	var frames []streamFrame
	for {
		m, err := st.Recv()
		if errors.Is(err, io.EOF) {
			return frames, nil
		}
		if err != nil {
			return nil, err
		}
		rr := m.GetRangeResponse()
		frames = append(frames, streamFrame{Kvs: len(rr.GetKvs()), Header: rr.GetHeader() != nil, Count: rr.GetCount(), More: rr.GetMore()})
	}
}

// TestDiffRangeStreamFraming pins how RangeStream splits a result into
// messages, not only what the merged messages hold: the last chunk of kvs
// travels in the final message, with the header, count and more, and no
// message follows it. kube-apiserver 1.37 stops reading a limited list at
// the message that fills the page and takes the revision and count from
// it, and reads one more message after a chunk as "more keys follow";
// kvsql used to send the header in a separate, empty trailer, so paginated
// lists failed with "illegal resource version from storage: 0" or returned
// a wrong remainingItemCount and a continue token past the end.
func TestDiffRangeStreamFraming(t *testing.T) {
	t.Parallel()
	runDiff(t, serverOptions{}, func(d *differ) {
		for i := range 25 {
			d.ok(d.put(putReq(fmt.Sprintf("p/%02d", i), "v")))
		}
		for _, r := range []*pb.RangeRequest{
			{Key: bs("p/"), RangeEnd: bs(prefixEnd("p/"))},
			{Key: bs("p/"), RangeEnd: bs(prefixEnd("p/")), Limit: 5},
			{Key: bs("p/"), RangeEnd: bs(prefixEnd("p/")), Limit: 10},
			{Key: bs("p/"), RangeEnd: bs(prefixEnd("p/")), Limit: 15},
			{Key: bs("p/"), RangeEnd: bs(prefixEnd("p/")), Limit: 25},
			{Key: bs("p/"), RangeEnd: bs(prefixEnd("p/")), Limit: 30},
			{Key: bs("p/"), RangeEnd: bs(prefixEnd("p/")), Revision: 12},
			{Key: bs("p/05")},
			{Key: bs("q/"), RangeEnd: bs(prefixEnd("q/"))},
			{Key: bs("p/"), RangeEnd: bs(prefixEnd("p/")), CountOnly: true},
		} {
			ctx, cancel := context.WithTimeout(d.ctx, diffTimeout)
			want, wantErr := rangeStreamFrames(ctx, d.etcd, r)
			got, gotErr := rangeStreamFrames(ctx, d.kv, r)
			cancel()
			if wantErr != nil || gotErr != nil {
				t.Fatalf("RangeStream %s: etcd error %v, kvsql error %v", compact(r), wantErr, gotErr)
			}
			if !reflect.DeepEqual(want, got) {
				t.Errorf("RangeStream %s: messages differ\netcd:  %+v\nkvsql: %+v", compact(r), want, got)
			}
		}
	})
}

// TestDiffWatchPrevKVAtCompactRevision: a watch may start at the compact
// revision; etcd reads an event's prev_kv at the event's revision - 1,
// which is compacted there, so the event at the compact revision has no
// prev_kv. kvsql served it from its in-memory window with the prev_kv it
// had when the event was committed (and k8s.io/apiserver's
// RunTestWatchFromZero, which expects the resulting error, failed).
func TestDiffWatchPrevKVAtCompactRevision(t *testing.T) {
	t.Parallel()
	runDiff(t, serverOptions{}, func(d *differ) {
		d.ok(d.put(putReq("k", "v1")))
		d.ok(d.put(putReq("k", "v2")))
		rev := d.currentRev()
		d.ok(d.put(putReq("k", "v3")))
		d.ok(d.del(&pb.DeleteRangeRequest{Key: bs("k")}))
		d.ok(d.compact(rev))
		wp := d.openWatch()
		wp.create(&pb.WatchCreateRequest{Key: bs("k"), StartRevision: rev, PrevKv: true})
		wp.create(&pb.WatchCreateRequest{Key: bs("k"), StartRevision: rev + 1, PrevKv: true})
		wp.compareEvents("watch from the compact revision")
	})
}
