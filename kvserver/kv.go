package kvserver

import (
	"context"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

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
	resp, err := k.s.be.Range(ctx, r)
	if err != nil {
		return nil, toGRPC(err)
	}
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
	resp, err := rs.RangeStream(stream.Context(), r, k.s.cfg.MaxRequestBytes, func(kvs []*mvccpb.KeyValue) error {
		return stream.Send(&pb.RangeStreamResponse{RangeResponse: &pb.RangeResponse{Kvs: kvs}})
	})
	if err != nil {
		return toGRPC(err)
	}
	k.s.fill(resp.Header)
	return stream.Send(&pb.RangeStreamResponse{RangeResponse: resp})
}

func (k *kvService) Put(ctx context.Context, r *pb.PutRequest) (*pb.PutResponse, error) {
	if err := checkPut(r); err != nil {
		return nil, err
	}
	if err := k.s.checkSize(r); err != nil {
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
		return nil, toGRPC(err)
	}
	out := resp.Responses[0].GetResponsePut()
	out.Header = k.s.fill(resp.Header)
	return out, nil
}

func (k *kvService) DeleteRange(ctx context.Context, r *pb.DeleteRangeRequest) (*pb.DeleteRangeResponse, error) {
	if err := checkDelete(r); err != nil {
		return nil, err
	}
	if err := k.s.checkSize(r); err != nil {
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
		return nil, toGRPC(err)
	}
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
	// etcd limits the size of proposals only: a read-only txn is not one.
	if !isReadOnlyTxn(r) {
		if err := k.s.checkSize(r); err != nil {
			return nil, err
		}
		if out, ok, err := forward(k.s, ctx, r, pb.KVClient.Txn); ok {
			if err != nil {
				return nil, err
			}
			out.Header = k.s.fill(out.Header)
			return out, nil
		}
	}
	resp, err := k.s.be.Txn(ctx, r)
	if err != nil {
		return nil, toGRPC(err)
	}
	k.s.fill(resp.Header)
	return resp, nil
}

func (k *kvService) Compact(ctx context.Context, r *pb.CompactionRequest) (*pb.CompactionResponse, error) {
	rev, err := k.s.be.Compact(ctx, r.Revision)
	if err != nil {
		return nil, toGRPC(err)
	}
	return &pb.CompactionResponse{Header: k.s.header(rev)}, nil
}
