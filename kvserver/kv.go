package kvserver

import (
	"context"
	"errors"

	"github.com/prometheus/client_golang/prometheus"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/server/v3/auth"
	"google.golang.org/protobuf/encoding/protowire"
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
		if len(r.RangeEnd) == 0 {
			// One key: at most one value, no budget.
			resp, err = k.s.be.Range(ctx, r)
			return err
		}
		// The response's bytes count in the budget until gRPC has taken it.
		hold := rpcHoldOf(ctx)
		res := k.s.ranges.reserve()
		if hold != nil {
			hold.keep(res)
		} else {
			defer res.release()
		}
		resp, err = k.s.rangeBudgeted(ctx, r, res, hold)
		return err
	})
	if err != nil {
		return nil, k.s.authErr(err)
	}
	k.s.count(func(m *Metrics) prometheus.Counter { return m.ranges })
	k.s.fill(resp.Header)
	return resp, nil
}

// rangeBudgeted answers a Range over more than one key, taking the bytes
// of its result from the budget (see rangeBudget). A range that may be
// large is read in chunks from one snapshot, each taken before the next is
// read; a result that is sorted otherwise than by key, filtered, counted
// or limited to one chunk is read in one statement and counted after.
//
// When the Range is a gRPC call of this server (hold is not nil), each
// chunk is encoded as soon as it is read and its key-values dropped: the
// response never exists twice, as messages and encoded, and gRPC sends the
// encoded chunks as they are (see codec). The returned response's Kvs are
// then empty: an interceptor that wants its size finds it in
// Server.encoded until the codec takes it.
func (s *Server) rangeBudgeted(ctx context.Context, r *pb.RangeRequest, res *reservation, hold *rpcHold) (*pb.RangeResponse, error) {
	rs, ok := s.be.(backends.RangeStreamer)
	// As etcd, order NONE sorts by any target but the key (ascending).
	keyOrder := r.SortTarget == pb.RangeRequest_KEY && r.SortOrder != pb.RangeRequest_DESCEND
	filters := r.MinModRevision != 0 || r.MaxModRevision != 0 || r.MinCreateRevision != 0 || r.MaxCreateRevision != 0
	if !ok || !keyOrder || filters || r.CountOnly || (r.Limit > 0 && r.Limit <= onePageKeys) {
		resp, err := s.be.Range(ctx, r)
		if err != nil {
			return nil, err
		}
		return resp, res.take(ctx, kvsBytes(resp.Kvs), false)
	}
	var kvs []*mvccpb.KeyValue
	enc := encodedKVs{}
	add := func(chunk []*mvccpb.KeyValue) error {
		n := kvsBytes(chunk)
		if err := res.take(ctx, n, true); err != nil {
			return err
		}
		if hold == nil {
			kvs = append(kvs, chunk...)
			return nil
		}
		b, err := encodeKVs(make([]byte, 0, n), chunk)
		enc.chunks = append(enc.chunks, b)
		enc.kvs += len(chunk)
		enc.bytes += len(b)
		return err
	}
	resp, err := rs.RangeStream(ctx, r, rangeChunkBytes, add)
	if err != nil {
		return nil, err
	}
	last := resp.Kvs
	resp.Kvs = nil
	if err := add(last); err != nil {
		return nil, err
	}
	if hold == nil {
		resp.Kvs = kvs
	} else {
		hold.keepEncoded(s, resp, &enc)
	}
	return resp, nil
}

// kvsBytes is the encoded size of kvs in a RangeResponse.
func kvsBytes(kvs []*mvccpb.KeyValue) int64 {
	var n int64
	for _, kv := range kvs {
		n += int64(protowire.SizeBytes(proto.Size(kv))) + 1 // field 2's tag, length and message
	}
	return n
}

// checkWriteAuth checks a write as etcd does around its size and quota
// checks: the caller's identity first (a bad token fails before anything
// else), then size and quota (checkSizeAndQuota), then chk against the
// current auth state. A write another instance forwarded was checked there
// (and is only measured here). etcd checks when it applies the write; here
// the check comes first, and the returned context carries the auth
// revision it was made at (backends.WithAuthRevision), so that the write
// applies only if no auth change committed in between, through any
// instance; otherwise it fails with etcd's ErrAuthOldRevision (authOld).
func (s *Server) checkWriteAuth(ctx context.Context, r proto.Message, chk func(as auth.AuthStore, ai *auth.AuthInfo) error) (context.Context, error) {
	w, err := s.auth.identify(ctx, s.memberID, r)
	if err != nil {
		return ctx, s.authErr(err)
	}
	if err := s.checkSize(r, w.ai); err != nil {
		return ctx, err
	}
	if err := s.checkWrite(ctx, r); err != nil {
		return ctx, err
	}
	if w.trusted {
		return backends.WithAuthRevision(ctx, w.authRev), nil
	}
	as, err := s.auth.current(ctx)
	if err != nil {
		return ctx, s.authErr(err)
	}
	ai := w.ai
	if ai == nil {
		ai = &auth.AuthInfo{}
	}
	if err := chk(as, ai); err != nil {
		return ctx, s.authErr(err)
	}
	if !as.IsAuthEnabled() {
		return ctx, nil
	}
	return backends.WithAuthRevision(ctx, as.Revision()), nil
}

// writeErr converts a write's error, from the backend or from the leader
// it was forwarded to, for the client. A write that failed because the
// auth state changed after its check (backends.ErrAuthOldRevision) first
// brings this instance's auth state up to date, so that the client's retry
// is checked against the new one.
func (s *Server) writeErr(ctx context.Context, err error) error {
	if errors.Is(err, backends.ErrAuthOldRevision) {
		err = rpctypes.ErrGRPCAuthOldRevision
	}
	if errors.Is(rpctypes.Error(err), rpctypes.ErrAuthOldRevision) {
		if _, serr := s.auth.sync(ctx); serr != nil {
			s.log.Debug("re-reading the auth state after an old-revision write failed", "err", serr)
		}
		return err
	}
	return s.toGRPC(err)
}

func (k *kvService) Put(ctx context.Context, r *pb.PutRequest) (*pb.PutResponse, error) {
	if err := checkPut(r); err != nil {
		return nil, err
	}
	ctx, err := k.s.checkWriteAuth(ctx, r, func(as auth.AuthStore, ai *auth.AuthInfo) error {
		return checkPutAuth(ctx, as, ai, k.s.leaseKeysOf(), r)
	})
	if err != nil {
		return nil, err
	}
	if out, ok, err := forward(ctx, k.s, r, pb.KVClient.Put); ok {
		if err != nil {
			return nil, k.s.writeErr(ctx, err)
		}
		out.Header = k.s.fill(out.Header)
		return out, nil
	}
	resp, err := k.s.be.Txn(ctx, &pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: r}}}})
	if err != nil {
		return nil, k.s.writeErr(ctx, err)
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
	ctx, err := k.s.checkWriteAuth(ctx, r, func(as auth.AuthStore, ai *auth.AuthInfo) error {
		return checkDeleteAuth(as, ai, r)
	})
	if err != nil {
		return nil, err
	}
	if out, ok, err := forward(ctx, k.s, r, pb.KVClient.DeleteRange); ok {
		if err != nil {
			return nil, k.s.writeErr(ctx, err)
		}
		out.Header = k.s.fill(out.Header)
		return out, nil
	}
	resp, err := k.s.be.Txn(ctx, &pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestDeleteRange{RequestDeleteRange: r}}}})
	if err != nil {
		return nil, k.s.writeErr(ctx, err)
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
		ctx, err := k.s.checkWriteAuth(ctx, r, chk)
		if err != nil {
			return nil, err
		}
		if out, ok, err := forward(ctx, k.s, r, pb.KVClient.Txn); ok {
			if err != nil {
				return nil, k.s.writeErr(ctx, err)
			}
			out.Header = k.s.fill(out.Header)
			return out, nil
		}
		if resp, err = k.s.be.Txn(ctx, r); err != nil {
			return nil, k.s.writeErr(ctx, err)
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
