package kvserver

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/server/v3/auth"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/kvsql/kvsql/backends"
)

type kvService struct {
	pb.UnimplementedKVServer
	s *Server
}

func (k *kvService) Range(ctx context.Context, r *pb.RangeRequest) (*pb.RangeResponse, error) {
	if err := checkRange(r); err != nil {
		return nil, err
	}
	var resp *pb.RangeResponse
	err := k.s.auth.serialize(ctx, func(as auth.AuthStore, ai *auth.AuthInfo) error {
		return as.IsRangePermitted(ai, r.Key, r.RangeEnd)
	}, func() (err error) {
		resp, err = k.s.be.Range(ctx, r)
		return err
	})
	if err != nil {
		return nil, k.s.authErr(err)
	}
	k.s.count(func(m *Metrics) prometheus.Counter { return m.ranges })
	k.s.fill(resp.Header)
	return resp, nil
}

// RangeStream streams a range from one snapshot in chunks of about
// MaxRequestBytes. As in etcd, only the last message carries the header,
// count and more, and it also carries the last chunk of kvs (there is no
// separate trailer: kube-apiserver reads one more message after a chunk as
// "more keys follow"); merging all messages gives the Range response.
func (k *kvService) RangeStream(r *pb.RangeRequest, stream pb.KV_RangeStreamServer) error {
	if err := checkRangeStream(r); err != nil {
		return err
	}
	rs, ok := k.s.be.(backends.RangeStreamer)
	if !ok {
		return status.Error(codes.Unimplemented, "kvsql: this backend does not support RangeStream; use Range")
	}
	ctx := stream.Context()
	err := k.s.auth.serialize(ctx, func(as auth.AuthStore, ai *auth.AuthInfo) error {
		return as.IsRangePermitted(ai, r.Key, r.RangeEnd)
	}, func() error {
		resp, err := rs.RangeStream(ctx, r, k.s.cfg.MaxRequestBytes, func(kvs []*mvccpb.KeyValue) error {
			return stream.Send(&pb.RangeStreamResponse{RangeResponse: &pb.RangeResponse{Kvs: kvs}})
		})
		if err != nil {
			return err
		}
		k.s.count(func(m *Metrics) prometheus.Counter { return m.ranges })
		k.s.fill(resp.Header)
		return stream.Send(&pb.RangeStreamResponse{RangeResponse: resp})
	})
	return k.s.authErr(err)
}

// checkWriteAuth checks a write as etcd does around its size and quota
// checks: the caller's identity first (a bad token fails before anything
// else), then size and quota (checkSizeAndQuota), then chk against the
// current auth state, as etcd checks when it applies the write. A write
// another instance forwarded was checked there (and is only measured
// here).
func (s *Server) checkWriteAuth(ctx context.Context, r proto.Message, chk func(as auth.AuthStore, ai *auth.AuthInfo) error) error {
	w, err := s.auth.identify(ctx, s.memberID, r)
	if err != nil {
		return s.authErr(err)
	}
	if err := s.checkSize(r, w.ai); err != nil {
		return err
	}
	if err := s.checkWrite(ctx, r); err != nil {
		return err
	}
	if w.trusted {
		return nil
	}
	as, err := s.auth.current(ctx)
	if err != nil {
		return s.authErr(err)
	}
	ai := w.ai
	if ai == nil {
		ai = &auth.AuthInfo{}
	}
	return s.authErr(chk(as, ai))
}

func (k *kvService) Put(ctx context.Context, r *pb.PutRequest) (*pb.PutResponse, error) {
	if err := checkPut(r); err != nil {
		return nil, err
	}
	if err := k.s.checkWriteAuth(ctx, r, func(as auth.AuthStore, ai *auth.AuthInfo) error {
		return checkPutAuth(ctx, as, ai, k.s.leaseKeysOf(), r)
	}); err != nil {
		return nil, err
	}
	if out, ok, err := forward(k.s, ctx, r, pb.KVClient.Put); ok {
		if err != nil {
			return nil, err
		}
		out.Header = k.s.fill(out.Header)
		return out, nil
	}
	resp, err := k.s.be.Txn(ctx, &pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: r}}}})
	if err != nil {
		return nil, k.s.toGRPC(err)
	}
	k.s.count(func(m *Metrics) prometheus.Counter { return m.puts })
	out := resp.Responses[0].GetResponsePut()
	out.Header = k.s.fill(resp.Header)
	return out, nil
}

func (k *kvService) DeleteRange(ctx context.Context, r *pb.DeleteRangeRequest) (*pb.DeleteRangeResponse, error) {
	if err := checkDelete(r); err != nil {
		return nil, err
	}
	if err := k.s.checkWriteAuth(ctx, r, func(as auth.AuthStore, ai *auth.AuthInfo) error {
		return checkDeleteAuth(as, ai, r)
	}); err != nil {
		return nil, err
	}
	if out, ok, err := forward(k.s, ctx, r, pb.KVClient.DeleteRange); ok {
		if err != nil {
			return nil, err
		}
		out.Header = k.s.fill(out.Header)
		return out, nil
	}
	resp, err := k.s.be.Txn(ctx, &pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: r}}}})
	if err != nil {
		return nil, k.s.toGRPC(err)
	}
	k.s.count(func(m *Metrics) prometheus.Counter { return m.deletes })
	out := resp.Responses[0].GetResponseDeleteRange()
	out.Header = k.s.fill(resp.Header)
	return out, nil
}

func (k *kvService) Txn(ctx context.Context, r *pb.TxnRequest) (*pb.TxnResponse, error) {
	if err := checkTxn(r, k.s.cfg.MaxTxnOps); err != nil {
		return nil, err
	}
	if _, _, err := checkOverlaps(r.Success); err != nil {
		return nil, err
	}
	if _, _, err := checkOverlaps(r.Failure); err != nil {
		return nil, err
	}
	chk := func(as auth.AuthStore, ai *auth.AuthInfo) error {
		return checkTxnAuth(ctx, as, ai, k.s.leaseKeysOf(), r)
	}
	var resp *pb.TxnResponse
	// etcd limits the size of proposals only: a read-only txn is not one,
	// and is checked as a read.
	if isReadOnlyTxn(r) {
		err := k.s.auth.serialize(ctx, chk, func() (err error) {
			resp, err = k.s.be.Txn(ctx, r)
			return err
		})
		if err != nil {
			return nil, k.s.authErr(err)
		}
	} else {
		if err := k.s.checkWriteAuth(ctx, r, chk); err != nil {
			return nil, err
		}
		if out, ok, err := forward(k.s, ctx, r, pb.KVClient.Txn); ok {
			if err != nil {
				return nil, err
			}
			out.Header = k.s.fill(out.Header)
			return out, nil
		}
		var err error
		if resp, err = k.s.be.Txn(ctx, r); err != nil {
			return nil, k.s.toGRPC(err)
		}
	}
	if m := k.s.cfg.Metrics; m != nil {
		m.txns.Inc()
		m.countOps(resp.Responses)
	}
	k.s.fill(resp.Header)
	return resp, nil
}

func (k *kvService) Compact(ctx context.Context, r *pb.CompactionRequest) (*pb.CompactionResponse, error) {
	if err := k.s.auth.isAdmin(ctx); err != nil {
		return nil, k.s.authErr(err)
	}
	if err := k.s.checkWrite(ctx, r); err != nil {
		return nil, err
	}
	rev, err := k.s.be.Compact(ctx, r.Revision)
	if err != nil {
		return nil, k.s.toGRPC(err)
	}
	k.s.stats.kick() // the history it removed frees space
	return &pb.CompactionResponse{Header: k.s.header(rev)}, nil
}

// count increments the counter pick selects, if there are metrics.
func (s *Server) count(pick func(*Metrics) prometheus.Counter) {
	if m := s.cfg.Metrics; m != nil {
		pick(m).Inc()
	}
}

// countOps counts the ranges, puts and deletes a txn executed.
func (m *Metrics) countOps(ops []*pb.ResponseOp) {
	for _, op := range ops {
		switch v := op.Response.(type) {
		case *pb.ResponseOp_ResponseRange:
			m.ranges.Inc()
		case *pb.ResponseOp_ResponsePut:
			m.puts.Inc()
		case *pb.ResponseOp_ResponseDeleteRange:
			m.deletes.Inc()
		case *pb.ResponseOp_ResponseTxn:
			m.countOps(v.ResponseTxn.Responses)
		}
	}
}
