package integration

import (
	"context"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/status"
)

// rawCodec sends bytes as they are, to deliver malformed messages.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error)      { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(data []byte, v any) error { *(v.(*[]byte)) = data; return nil }
func (rawCodec) Name() string                       { return "raw-kvsql-test" }

var _ encoding.Codec = rawCodec{}

// TestBadInput sends each kind of bad request and expects etcd's own gRPC
// code and message. The table runs against a real etcd too, so that it pins
// etcd's behaviour rather than ours.
func TestBadInput(t *testing.T) {
	t.Parallel()
	const maxReq = 64 * 1024
	const maxOps = 8
	targets := []struct {
		name  string
		start starter
	}{{"etcd", startEtcd}}
	targets = append(targets, kvsqlBackends...)
	for _, tg := range targets {
		t.Run(tg.name, func(t *testing.T) {
			t.Parallel()
			s := tg.start(t, serverOptions{MaxRequestBytes: maxReq, MaxTxnOps: maxOps})
			c := newClient(t, s)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			kv := pb.NewKVClient(c.ActiveConnection())
			lease := pb.NewLeaseClient(c.ActiveConnection())

			// State: a few revisions, compacted at 3.
			for _, k := range []string{"a", "b", "c", "d"} {
				if _, err := c.Put(ctx, k, "v"); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := c.Compact(ctx, 3); err != nil {
				t.Fatal(err)
			}
			if _, err := lease.LeaseGrant(ctx, &pb.LeaseGrantRequest{ID: 77, TTL: 60}); err != nil {
				t.Fatal(err)
			}
			put := func(k string) *pb.RequestOp {
				return &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte(k)}}}
			}
			manyOps := make([]*pb.RequestOp, maxOps+1)
			for i := range manyOps {
				manyOps[i] = put(string(rune('a' + i)))
			}

			cases := []struct {
				name string
				call func() error
				want error
			}{
				{"put empty key", func() error { _, err := kv.Put(ctx, &pb.PutRequest{Value: []byte("v")}); return err }, rpctypes.ErrGRPCEmptyKey},
				{"range empty key", func() error { _, err := kv.Range(ctx, &pb.RangeRequest{}); return err }, rpctypes.ErrGRPCEmptyKey},
				{"delete empty key", func() error { _, err := kv.DeleteRange(ctx, &pb.DeleteRangeRequest{}); return err }, rpctypes.ErrGRPCEmptyKey},
				{"txn compare empty key", func() error {
					_, err := kv.Txn(ctx, &pb.TxnRequest{Compare: []*pb.Compare{{Target: pb.Compare_VERSION}}})
					return err
				}, rpctypes.ErrGRPCEmptyKey},
				{"txn empty op", func() error {
					_, err := kv.Txn(ctx, &pb.TxnRequest{Success: []*pb.RequestOp{{}}})
					return err
				}, rpctypes.ErrGRPCKeyNotFound},
				{"invalid sort order", func() error {
					_, err := kv.Range(ctx, &pb.RangeRequest{Key: []byte("a"), SortOrder: 9})
					return err
				}, rpctypes.ErrGRPCInvalidSortOption},
				{"invalid sort target", func() error {
					_, err := kv.Range(ctx, &pb.RangeRequest{Key: []byte("a"), SortTarget: 9})
					return err
				}, rpctypes.ErrGRPCInvalidSortOption},
				{"unknown lease", func() error {
					_, err := kv.Put(ctx, &pb.PutRequest{Key: []byte("k"), Lease: 12345})
					return err
				}, rpctypes.ErrGRPCLeaseNotFound},
				{"future revision", func() error {
					_, err := kv.Range(ctx, &pb.RangeRequest{Key: []byte("a"), Revision: 1000})
					return err
				}, rpctypes.ErrGRPCFutureRev},
				{"compacted revision", func() error {
					_, err := kv.Range(ctx, &pb.RangeRequest{Key: []byte("a"), Revision: 2})
					return err
				}, rpctypes.ErrGRPCCompacted},
				{"compact again at same revision", func() error {
					_, err := kv.Compact(ctx, &pb.CompactionRequest{Revision: 3})
					return err
				}, rpctypes.ErrGRPCCompacted},
				{"compact future revision", func() error {
					_, err := kv.Compact(ctx, &pb.CompactionRequest{Revision: 1000})
					return err
				}, rpctypes.ErrGRPCFutureRev},
				{"too many txn ops", func() error {
					_, err := kv.Txn(ctx, &pb.TxnRequest{Success: manyOps})
					return err
				}, rpctypes.ErrGRPCTooManyOps},
				{"same key put twice in txn", func() error {
					_, err := kv.Txn(ctx, &pb.TxnRequest{Success: []*pb.RequestOp{put("x"), put("x")}})
					return err
				}, rpctypes.ErrGRPCDuplicateKey},
				{"put inside deleted range in txn", func() error {
					_, err := kv.Txn(ctx, &pb.TxnRequest{Success: []*pb.RequestOp{
						{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: &pb.DeleteRangeRequest{Key: []byte("a"), RangeEnd: []byte("z")}}},
						put("m"),
					}})
					return err
				}, rpctypes.ErrGRPCDuplicateKey},
				{"request over max-request-bytes", func() error {
					_, err := kv.Put(ctx, &pb.PutRequest{Key: []byte("big"), Value: make([]byte, maxReq+1)})
					return err
				}, rpctypes.ErrGRPCRequestTooLarge},
				{"ignore_value with a value", func() error {
					_, err := kv.Put(ctx, &pb.PutRequest{Key: []byte("a"), Value: []byte("v"), IgnoreValue: true})
					return err
				}, rpctypes.ErrGRPCValueProvided},
				{"ignore_lease with a lease", func() error {
					_, err := kv.Put(ctx, &pb.PutRequest{Key: []byte("a"), Lease: 77, IgnoreLease: true})
					return err
				}, rpctypes.ErrGRPCLeaseProvided},
				{"ignore_value on a missing key", func() error {
					_, err := kv.Put(ctx, &pb.PutRequest{Key: []byte("missing"), IgnoreValue: true})
					return err
				}, rpctypes.ErrGRPCKeyNotFound},
				{"lease TTL too large", func() error {
					_, err := lease.LeaseGrant(ctx, &pb.LeaseGrantRequest{ID: 5, TTL: 9000000001})
					return err
				}, rpctypes.ErrGRPCLeaseTTLTooLarge},
				{"lease ID in use", func() error {
					_, err := lease.LeaseGrant(ctx, &pb.LeaseGrantRequest{ID: 77, TTL: 60})
					return err
				}, rpctypes.ErrGRPCLeaseExist},
				{"revoke unknown lease", func() error {
					_, err := lease.LeaseRevoke(ctx, &pb.LeaseRevokeRequest{ID: 4242})
					return err
				}, rpctypes.ErrGRPCLeaseNotFound},
			}
			for _, tc := range cases {
				err := tc.call()
				if !sameStatus(err, tc.want) {
					t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
				}
			}

			// A range whose end sorts before its key is empty, not an error.
			resp, err := kv.Range(ctx, &pb.RangeRequest{Key: []byte("c"), RangeEnd: []byte("a")})
			if err != nil || resp.Count != 0 || len(resp.Kvs) != 0 {
				t.Errorf("range_end before key: got %v, %v; want an empty result", resp, err)
			}

			// A malformed message is refused by the transport; the server stays up.
			garbage := []byte{0xff, 0xff, 0xff, 0xff, 0x0f}
			var out []byte
			err = c.ActiveConnection().Invoke(ctx, "/etcdserverpb.KV/Put", &garbage, &out, grpc.ForceCodec(rawCodec{}))
			if status.Code(err) != codes.Internal || !strings.Contains(status.Convert(err).Message(), "unmarshal") {
				t.Errorf("malformed Put: got %v, want code Internal about unmarshalling", err)
			}
			// A message over the transport limit (max-request-bytes + 512 KiB).
			_, err = kv.Put(ctx, &pb.PutRequest{Key: []byte("huge"), Value: make([]byte, maxReq+600*1024)})
			if status.Code(err) != codes.ResourceExhausted {
				t.Errorf("oversized message: got %v, want ResourceExhausted", err)
			}
			if _, err := c.Get(ctx, "a"); err != nil {
				t.Errorf("server unhealthy after bad input: %v", err)
			}

			// Watch: a range that is empty is refused at creation; cancelling an
			// unknown watch ID gets no answer (the next answer is for the next request).
			ws, err := pb.NewWatchClient(c.ActiveConnection()).Watch(ctx)
			if err != nil {
				t.Fatal(err)
			}
			send := func(r *pb.WatchRequest) {
				if err := ws.Send(r); err != nil {
					t.Fatal(err)
				}
			}
			send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: &pb.WatchCreateRequest{Key: []byte("z"), RangeEnd: []byte("a")}}})
			wr, err := ws.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if !wr.Created || !wr.Canceled || wr.WatchId != -1 || wr.CancelReason != "mvcc: watcher range is empty" {
				t.Errorf("empty watch range: got %+v", wr)
			}
			send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CancelRequest{CancelRequest: &pb.WatchCancelRequest{WatchId: 999}}})
			send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: &pb.WatchCreateRequest{Key: []byte("a"), WatchId: 5}}})
			wr, err = ws.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if !wr.Created || wr.Canceled || wr.WatchId != 5 {
				t.Errorf("after cancel of unknown id: got %+v, want the create answer for watch 5", wr)
			}
			send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: &pb.WatchCreateRequest{Key: []byte("a"), WatchId: 5}}})
			wr, err = ws.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if !wr.Created || !wr.Canceled || wr.WatchId != -1 || wr.CancelReason != "mvcc: duplicate watch ID provided on the WatchStream" {
				t.Errorf("duplicate watch id: got %+v", wr)
			}
			send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: &pb.WatchCreateRequest{Key: []byte("a"), StartRevision: 2}}})
			wr, err = ws.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if !wr.Created || wr.Canceled {
				t.Errorf("compacted watch: first answer %+v, want created", wr)
			}
			wr, err = ws.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if !wr.Canceled || wr.CompactRevision != 3 {
				t.Errorf("compacted watch: got %+v, want canceled with compact_revision 3", wr)
			}
			_ = ws.CloseSend()
		})
	}
}

// sameStatus reports whether two errors carry the same gRPC code and message.
func sameStatus(got, want error) bool {
	g, w := status.Convert(got), status.Convert(want)
	return got != nil && g.Code() == w.Code() && g.Message() == w.Message()
}
