package kvserver

import (
	"errors"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// validationErrors are the errors request validation may return: etcd's
// own, and Unimplemented for what RangeStream does not support.
var validationErrors = []error{
	rpctypes.ErrGRPCEmptyKey, rpctypes.ErrGRPCInvalidSortOption, rpctypes.ErrGRPCValueProvided,
	rpctypes.ErrGRPCLeaseProvided, rpctypes.ErrGRPCTooManyOps, rpctypes.ErrGRPCKeyNotFound,
	rpctypes.ErrGRPCDuplicateKey,
}

// FuzzValidate decodes arbitrary bytes as a Range, Put, DeleteRange or Txn
// request (the first byte picks which) and runs every check the KV service
// runs on it: none may panic, and each answers nil or one of etcd's errors.
// Whether the answers are etcd's for the same request is
// integration.FuzzDiffRequest's job.
func FuzzValidate(f *testing.F) {
	put := func(k string) *pb.RequestOp {
		return &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: []byte(k)}}}
	}
	del := func(k, end string) *pb.RequestOp {
		return &pb.RequestOp{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: &pb.DeleteRangeRequest{Key: []byte(k), RangeEnd: []byte(end)}}}
	}
	nested := func(then, els []*pb.RequestOp) *pb.RequestOp {
		return &pb.RequestOp{Request: &pb.RequestOp_RequestTxn{RequestTxn: &pb.TxnRequest{Success: then, Failure: els}}}
	}
	for kind, m := range []proto.Message{
		&pb.RangeRequest{Key: []byte("a"), RangeEnd: []byte("b"), SortOrder: 7, SortTarget: pb.RangeRequest_VALUE},
		&pb.PutRequest{Key: []byte("a"), Value: []byte("v"), IgnoreValue: true},
		&pb.DeleteRangeRequest{Key: []byte("a"), RangeEnd: []byte{0}},
		&pb.TxnRequest{
			Compare: []*pb.Compare{{Key: []byte("a"), Target: pb.Compare_MOD}},
			Success: []*pb.RequestOp{put("a"), nested([]*pb.RequestOp{put("b")}, []*pb.RequestOp{put("b"), del("c", "d")})},
			Failure: []*pb.RequestOp{del("a", "z"), nested([]*pb.RequestOp{put("b")}, nil)},
		},
	} {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(append([]byte{byte(kind)}, b...))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		m := []proto.Message{&pb.RangeRequest{}, &pb.PutRequest{}, &pb.DeleteRangeRequest{}, &pb.TxnRequest{}}[data[0]%4]
		if proto.Unmarshal(data[1:], m) != nil {
			return
		}
		var errs []error
		switch r := m.(type) {
		case *pb.RangeRequest:
			errs = append(errs, checkRange(r))
			if err := checkRangeStream(r); status.Code(err) != codes.Unimplemented {
				errs = append(errs, err)
			}
		case *pb.PutRequest:
			errs = append(errs, checkPut(r))
		case *pb.DeleteRangeRequest:
			errs = append(errs, checkDelete(r))
		case *pb.TxnRequest:
			errs = append(errs, checkTxn(r, DefaultMaxTxnOps))
			_, _, err := checkOverlaps(r.Success)
			errs = append(errs, err)
			_, _, err = checkOverlaps(r.Failure)
			errs = append(errs, err)
			isReadOnlyTxn(r)
		}
		for _, err := range errs {
			if err != nil && !isOneOf(err, validationErrors) {
				t.Errorf("validation returned %v, which is not one of etcd's validation errors", err)
			}
		}
	})
}

func isOneOf(err error, errs []error) bool {
	for _, e := range errs {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}
