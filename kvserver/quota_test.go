package kvserver

import (
	"strings"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

func TestQuotaCost(t *testing.T) {
	put := func(k, v string) *pb.RequestOp {
		return &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte(k), Value: []byte(v)}}}
	}
	del := &pb.RequestOp{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: &pb.DeleteRangeRequest{Key: []byte("k")}}}
	nested := func(ops ...*pb.RequestOp) *pb.RequestOp {
		return &pb.RequestOp{Request: &pb.RequestOp_RequestTxn{RequestTxn: &pb.TxnRequest{Success: ops}}}
	}
	for _, tc := range []struct {
		name string
		req  any
		want int64
	}{
		{"put", &pb.PutRequest{Key: []byte("ab"), Value: []byte("cde")}, kvOverhead + 5},
		{"txn takes the larger branch", &pb.TxnRequest{Success: []*pb.RequestOp{put("a", "b")}, Failure: []*pb.RequestOp{put("a", "bcd"), put("x", "")}}, 2*kvOverhead + 5},
		{"txn without puts", &pb.TxnRequest{Success: []*pb.RequestOp{del}}, 0},
		{"nested puts count (etcd 3.7)", &pb.TxnRequest{Success: []*pb.RequestOp{nested(put("a", "b"))}}, kvOverhead + 2},
		{"lease grant", &pb.LeaseGrantRequest{TTL: 10}, leaseOverhead},
		{"delete range", &pb.DeleteRangeRequest{Key: []byte("k")}, 0},
		{"compaction", &pb.CompactionRequest{Revision: 3}, 0},
		{"lease revoke", &pb.LeaseRevokeRequest{ID: 3}, 0},
	} {
		if got := quotaCost(tc.req); got != tc.want {
			t.Errorf("%s: cost %d, want %d", tc.name, got, tc.want)
		}
	}
}

// TestSummarizeNeverValues: slow-request lines show keys and sizes, never
// values (a put's, a txn's puts', a value compare's).
func TestSummarizeNeverValues(t *testing.T) {
	const secret = "s3cr3t-value"
	txn := &pb.TxnRequest{
		Compare: []*pb.Compare{{Key: []byte("c"), Target: pb.Compare_VALUE, Result: pb.Compare_EQUAL, TargetUnion: &pb.Compare_Value{Value: []byte(secret)}}},
		Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte("k"), Value: []byte(secret)}}}},
		Failure: []*pb.RequestOp{{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("b"), Limit: 5}}}},
	}
	for _, req := range []any{&pb.PutRequest{Key: []byte("k"), Value: []byte(secret)}, txn} {
		s, readOnly, ok := summarize(req)
		if !ok || readOnly {
			t.Fatalf("summarize(%T): ok %v readOnly %v", req, ok, readOnly)
		}
		if strings.Contains(s, secret) {
			t.Errorf("summary shows a value: %s", s)
		}
		if !strings.Contains(s, `key:"k" value_size:12`) {
			t.Errorf("summary lacks the put's key and value size: %s", s)
		}
	}
	s, readOnly, ok := summarize(&pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("b"), Limit: 5, CountOnly: true})
	if !ok || !readOnly || s != `range:<key:"a" range_end:"b" limit:5 count_only:true>` {
		t.Errorf("range summary %q (read-only %v)", s, readOnly)
	}
	if _, _, ok := summarize(&pb.StatusRequest{}); ok {
		t.Error("a Status request is summarised as a slow apply")
	}
}
