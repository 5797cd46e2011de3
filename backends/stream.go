package backends

import (
	"context"
	"errors"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"google.golang.org/protobuf/proto"
)

// firstStreamChunk is the size in keys of RangeStream's first chunk; later
// chunks double or halve to land near the requested chunk size.
const firstStreamChunk = 10

var _ RangeStreamer = (*Engine)(nil)

// RangeStream implements RangeStreamer.
func (e *Engine) RangeStream(ctx context.Context, r *pb.RangeRequest, chunkBytes int, send func([]*mvccpb.KeyValue) error) (*pb.RangeResponse, error) {
	var resp *pb.RangeResponse
	err := e.read(ctx, func(tx Tx) error {
		cur, compact, err := e.revisions(ctx, tx)
		if err != nil {
			return err
		}
		if err := checkRev(max(r.Revision, 0), cur, compact); err != nil {
			return err
		}
		at := r.Revision
		if at <= 0 || at == cur {
			at = 0 // as in etcd, a revision <= 0 reads the latest state
		}
		kr := NewKeyRange(r.Key, r.RangeEnd)
		resp = &pb.RangeResponse{Header: &pb.ResponseHeader{Revision: cur}}
		if r.CountOnly {
			resp.Count, err = tx.Count(ctx, kr, at)
			return err
		}
		total := r.Limit // 0: everything
		var sent int64
		chunk := int64(firstStreamChunk)
		// As in etcd, the last chunk of kvs travels in the final message
		// with the header, count and more: each chunk is held back until
		// the next one is read, and the last one is returned in resp.Kvs.
		// kube-apiserver depends on this framing: it stops reading a
		// limited list at the message that fills the page and takes the
		// revision and count from that message, and it treats any message
		// after a chunk as "more keys follow".
		var held []*mvccpb.KeyValue
		for {
			want := chunk
			if total > 0 {
				want = min(want, total-sent)
			}
			kvs, err := tx.Range(ctx, kr, at, want+1, r.KeysOnly)
			if err != nil {
				return err
			}
			more := int64(len(kvs)) > want
			if more {
				kvs = kvs[:want]
			}
			if r.KeysOnly {
				// as Range: no lease unless values were read to sort by them
				dropLease := r.SortTarget != pb.RangeRequest_VALUE
				for _, kv := range kvs {
					kv.Value = nil
					if dropLease {
						kv.Lease = 0
					}
				}
			}
			if len(kvs) > 0 {
				if len(held) > 0 {
					if err := send(held); err != nil {
						return callerError{err}
					}
				}
				held = kvs
			}
			sent += int64(len(kvs))
			resp.Kvs = held
			if !more || kr.Single() {
				resp.Count = sent
				return nil
			}
			next := append(append([]byte(nil), kvs[len(kvs)-1].Key...), 0)
			kr.Key = next
			if total > 0 && sent >= total {
				rest, err := tx.Count(ctx, kr, at)
				if err != nil {
					return err
				}
				resp.Count, resp.More = sent+rest, true
				return nil
			}
			size := 0
			for _, kv := range kvs {
				size += proto.Size(kv)
			}
			switch {
			case size < chunkBytes/2:
				chunk *= 2
			case size > chunkBytes*2:
				chunk = max(chunk/2, 1)
			}
		}
	})
	var ce callerError
	if errors.As(err, &ce) {
		// The caller's send failed, not the database. The response so far
		// (its header: the snapshot's revision) goes back with the error,
		// so that a caller can resume the read at that revision.
		return resp, ce.err
	}
	return resp, err
}

// callerError carries an error of the caller's callback through read, which
// would otherwise name the database in it.
type callerError struct{ err error }

func (c callerError) Error() string { return c.err.Error() }
func (c callerError) Unwrap() error { return c.err }
