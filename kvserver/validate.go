package kvserver

import (
	"bytes"
	"fmt"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/server/v3/auth"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// These checks reproduce etcd's request validation (v3rpc/key.go) so that a
// client gets the same error from kvsql as from etcd.

func checkRange(r *pb.RangeRequest) error {
	if len(r.Key) == 0 {
		return rpctypes.ErrGRPCEmptyKey
	}
	if _, ok := pb.RangeRequest_SortOrder_name[int32(r.SortOrder)]; !ok {
		return rpctypes.ErrGRPCInvalidSortOption
	}
	if _, ok := pb.RangeRequest_SortTarget_name[int32(r.SortTarget)]; !ok {
		return rpctypes.ErrGRPCInvalidSortOption
	}
	return nil
}

func checkRangeStream(r *pb.RangeRequest) error {
	if err := checkRange(r); err != nil {
		return err
	}
	if !(r.SortOrder == pb.RangeRequest_NONE || (r.SortTarget == pb.RangeRequest_KEY && r.SortOrder == pb.RangeRequest_ASCEND)) {
		return status.Error(codes.Unimplemented, "RangeStream does not support custom sort orders")
	}
	if r.MinModRevision != 0 || r.MaxModRevision != 0 || r.MinCreateRevision != 0 || r.MaxCreateRevision != 0 {
		return status.Error(codes.Unimplemented, "RangeStream does not support revision filters")
	}
	return nil
}

func checkPut(r *pb.PutRequest) error {
	if len(r.Key) == 0 {
		return rpctypes.ErrGRPCEmptyKey
	}
	if r.IgnoreValue && len(r.Value) != 0 {
		return rpctypes.ErrGRPCValueProvided
	}
	if r.IgnoreLease && r.Lease != 0 {
		return rpctypes.ErrGRPCLeaseProvided
	}
	return nil
}

func checkDelete(r *pb.DeleteRangeRequest) error {
	if len(r.Key) == 0 {
		return rpctypes.ErrGRPCEmptyKey
	}
	return nil
}

func checkTxn(r *pb.TxnRequest, maxOps int) error {
	n := max(len(r.Compare), len(r.Success), len(r.Failure))
	if n > maxOps {
		return rpctypes.ErrGRPCTooManyOps
	}
	for _, c := range r.Compare {
		if len(c.Key) == 0 {
			return rpctypes.ErrGRPCEmptyKey
		}
	}
	for _, ops := range [][]*pb.RequestOp{r.Success, r.Failure} {
		for _, op := range ops {
			if err := checkOp(op, maxOps-n); err != nil {
				return err
			}
		}
	}
	return nil
}

func checkOp(op *pb.RequestOp, maxOps int) error {
	switch v := op.Request.(type) {
	case *pb.RequestOp_RequestRange:
		return checkRange(v.RequestRange)
	case *pb.RequestOp_RequestPut:
		return checkPut(v.RequestPut)
	case *pb.RequestOp_RequestDeleteRange:
		return checkDelete(v.RequestDeleteRange)
	case *pb.RequestOp_RequestTxn:
		return checkTxn(v.RequestTxn, maxOps)
	default:
		// an empty op: etcd answers "key not found"
		return rpctypes.ErrGRPCKeyNotFound
	}
}

// interval is a deleted key range [begin, end); end nil is the single key
// begin. As in etcd, a range_end of "\x00" is taken literally here, so a
// from-key delete does not conflict with puts.
type interval struct{ begin, end []byte }

func (iv interval) contains(k []byte) bool {
	if iv.end == nil {
		return bytes.Equal(iv.begin, k)
	}
	return bytes.Compare(iv.begin, k) <= 0 && bytes.Compare(k, iv.end) < 0
}

func anyContains(ivs []interval, k []byte) bool {
	for _, iv := range ivs {
		if iv.contains(k) {
			return true
		}
	}
	return false
}

// checkOverlaps rejects a txn branch that puts one key twice, or puts a key
// that the same branch (or a nested txn in it) deletes: etcd's
// ErrGRPCDuplicateKey. It returns the branch's puts and deletes for the
// enclosing level.
func checkOverlaps(ops []*pb.RequestOp) (map[string]bool, []interval, error) {
	var dels []interval
	for _, op := range ops {
		if d := op.GetRequestDeleteRange(); d != nil {
			iv := interval{begin: d.Key}
			if len(d.RangeEnd) != 0 {
				iv.end = d.RangeEnd
			}
			dels = append(dels, iv)
		}
	}
	puts := map[string]bool{}
	for _, op := range ops {
		t := op.GetRequestTxn()
		if t == nil {
			continue
		}
		putsThen, delsThen, err := checkOverlaps(t.Success)
		if err != nil {
			return nil, nil, err
		}
		putsElse, delsElse, err := checkOverlaps(t.Failure)
		if err != nil {
			return nil, nil, err
		}
		for k := range putsThen {
			if puts[k] || anyContains(dels, []byte(k)) {
				return nil, nil, rpctypes.ErrGRPCDuplicateKey
			}
			puts[k] = true
		}
		for k := range putsElse {
			// then and else exclude each other, so a key in both is fine
			if (puts[k] && !putsThen[k]) || anyContains(dels, []byte(k)) {
				return nil, nil, rpctypes.ErrGRPCDuplicateKey
			}
			puts[k] = true
		}
		dels = append(dels, delsThen...)
		dels = append(dels, delsElse...)
	}
	for _, op := range ops {
		p := op.GetRequestPut()
		if p == nil {
			continue
		}
		k := string(p.Key)
		if puts[k] || anyContains(dels, p.Key) {
			return nil, nil, rpctypes.ErrGRPCDuplicateKey
		}
		puts[k] = true
	}
	return puts, dels, nil
}

// checkSize rejects a write request (a Put, DeleteRange or Txn) larger than
// MaxRequestBytes, measured as etcd measures it before proposing it: the
// raft proposal that carries it, with a request ID from this member's
// generator (whose size, 7 to 10 bytes, depends on the member ID as on an
// etcd member). The request alone is a few bytes smaller, so measuring only
// it let through requests etcd refuses.
//
// With auth, etcd's proposal also names the caller (user name and auth
// revision), so ai, the caller's identity (nil: none), counts as well.
func (s *Server) checkSize(m proto.Message, ai *auth.AuthInfo) error {
	req := &pb.InternalRaftRequest{Header: &pb.RequestHeader{ID: s.reqIDs.Next()}}
	if ai != nil {
		req.Header.Username, req.Header.AuthRevision = ai.Username, ai.Revision
	}
	switch r := m.(type) {
	case *pb.PutRequest:
		req.Put = r
	case *pb.DeleteRangeRequest:
		req.DeleteRange = r
	case *pb.TxnRequest:
		req.Txn = r
	default:
		panic(fmt.Sprintf("checkSize: %T is not a write request", m))
	}
	if proto.Size(req) > s.cfg.MaxRequestBytes {
		return rpctypes.ErrGRPCRequestTooLarge
	}
	return nil
}

// isReadOnlyTxn reports whether every op of both branches is a Range (etcd's
// definition: a nested txn counts as a write).
func isReadOnlyTxn(r *pb.TxnRequest) bool {
	for _, ops := range [][]*pb.RequestOp{r.Success, r.Failure} {
		for _, op := range ops {
			if op.GetRequestRange() == nil {
				return false
			}
		}
	}
	return true
}
