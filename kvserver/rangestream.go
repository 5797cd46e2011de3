package kvserver

import (
	"context"
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/server/v3/auth"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/kvsql/kvsql/backends"
)

// rangeStreamPatience is how long a RangeStream, holding its database
// snapshot, waits for its client to take the previous chunk. After that it
// lets the snapshot (and its database connection) go, waits for the client
// without it, and reads the rest at the snapshot's revision, as etcd reads
// every chunk. A few clients that open RangeStreams and stop reading took
// every connection of the pool, and every other request waited for them.
const rangeStreamPatience = 2 * time.Second

// errSlowClient ends a RangeStream's read whose client did not take a chunk
// within rangeStreamPatience.
var errSlowClient = errors.New("range stream client did not take a chunk in time")

// RangeStream streams a range from one snapshot in chunks of about
// MaxRequestBytes. As in etcd, only the last message carries the header,
// count and more, and it also carries the last chunk of kvs (there is no
// separate trailer: kube-apiserver reads one more message after a chunk as
// "more keys follow"); merging all messages gives the Range response.
//
// A sender goroutine sends the chunks; the read hands each one over. If
// the client does not take one within rangeStreamPatience, the read ends
// (the backend rolls its snapshot back), the chunk is handed over without
// a snapshot held, and the read resumes after it at the first read's
// revision: the result is the same, the client only holds the database
// while it reads.
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
	}, func() error { return k.rangeStream(ctx, rs, r, stream) })
	return k.s.authErr(err)
}

// rangeStream serves a permitted RangeStream (see RangeStream).
func (k *kvService) rangeStream(ctx context.Context, rs backends.RangeStreamer, r *pb.RangeRequest, stream pb.KV_RangeStreamServer) error {
	snd := newChunkSender(stream)
	defer snd.close()
	// Each chunk is garbage once sent; after a large stream, give the
	// memory the collector keeps for the next one back to the system.
	var sent int
	defer func() {
		if sent >= releaseAfterBytes {
			k.s.releaseMemory()
		}
	}()
	req := r
	var (
		header *pb.ResponseHeader // the first read's: the stream's revision
		prior  int64              // key-values sent by reads that were cut short
	)
	for {
		var handed int64
		var stash []*mvccpb.KeyValue // the chunk the client did not take in time
		resp, err := rs.RangeStream(ctx, req, k.s.cfg.MaxRequestBytes, func(kvs []*mvccpb.KeyValue) error {
			for _, kv := range kvs {
				sent += len(kv.Key) + len(kv.Value)
			}
			err := snd.hand(ctx, &pb.RangeStreamResponse{RangeResponse: &pb.RangeResponse{Kvs: kvs}}, rangeStreamPatience)
			switch {
			case errors.Is(err, errSlowClient):
				stash = kvs
			case err == nil:
				handed += int64(len(kvs))
			}
			return err
		})
		if header == nil && resp != nil && resp.Header != nil {
			header = proto.Clone(resp.Header).(*pb.ResponseHeader)
		}
		if errors.Is(err, errSlowClient) && header != nil {
			// The snapshot is gone: wait for the client without it.
			if err := snd.hand(ctx, &pb.RangeStreamResponse{RangeResponse: &pb.RangeResponse{Kvs: stash}}, 0); err != nil {
				return toGRPC(err)
			}
			prior += handed + int64(len(stash))
			req = resumeRange(r, stash[len(stash)-1].Key, header.Revision, prior)
			continue
		}
		if err != nil {
			return toGRPC(err)
		}
		if header != nil && req != r {
			// A resumed read: its count is of the rest, its header that of
			// a later read.
			resp.Header = header
			resp.Count += prior
		}
		k.s.count(func(m *Metrics) prometheus.Counter { return m.ranges })
		k.s.fill(resp.Header)
		if err := snd.hand(ctx, &pb.RangeStreamResponse{RangeResponse: resp}, 0); err != nil {
			return toGRPC(err)
		}
		return snd.close()
	}
}

// resumeRange returns r to be read again after key, at revision rev (r's
// own revision if it has one: rev is then the header's), with prior
// key-values already sent. prior is below r's limit: the backend hands
// over a chunk only once it has read another, and the last chunk is never
// handed over, but returned.
func resumeRange(r *pb.RangeRequest, key []byte, rev, prior int64) *pb.RangeRequest {
	next := proto.Clone(r).(*pb.RangeRequest)
	next.Key = append(append([]byte(nil), key...), 0)
	if r.Revision <= 0 {
		next.Revision = rev
	}
	if r.Limit > 0 {
		next.Limit = r.Limit - prior
	}
	return next
}

// chunkSender sends a stream's messages from a goroutine of its own, so
// that whoever hands them over can stop waiting for a slow client.
type chunkSender struct {
	out  chan *pb.RangeStreamResponse
	done chan struct{} // closed when the sender stops
	err  error         // why it stopped early; set before done is closed
}

func newChunkSender(stream pb.KV_RangeStreamServer) *chunkSender {
	c := &chunkSender{out: make(chan *pb.RangeStreamResponse), done: make(chan struct{})}
	go func() {
		defer close(c.done)
		for m := range c.out {
			if err := stream.Send(m); err != nil {
				c.err = err
				return
			}
		}
	}()
	return c
}

// hand gives m to the sender, waiting for it at most patience (0: as long
// as it takes): errSlowClient if it did not take it in time.
func (c *chunkSender) hand(ctx context.Context, m *pb.RangeStreamResponse, patience time.Duration) error {
	var timeout <-chan time.Time
	if patience > 0 {
		t := time.NewTimer(patience)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case c.out <- m:
		return nil
	case <-c.done:
		return c.err
	case <-timeout:
		return errSlowClient
	case <-ctx.Done():
		return ctx.Err()
	}
}

// close waits until every message handed over is sent, or the sender
// failed, and returns its error. It may be called more than once.
func (c *chunkSender) close() error {
	select {
	case <-c.done:
	default:
		close(c.out)
		<-c.done
	}
	return c.err
}
