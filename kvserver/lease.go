package kvserver

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"io"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/server/v3/auth"

	"github.com/kvsql/kvsql/backends"
)

type leaseService struct {
	pb.UnimplementedLeaseServer
	s *Server
}

// randomLeaseID returns a random positive lease ID, as etcd picks one when
// the client asks for ID 0. Random IDs cannot collide across instances the
// way a per-process counter would.
func randomLeaseID() int64 {
	var b [8]byte
	for {
		_, _ = rand.Read(b[:])
		if id := int64(binary.BigEndian.Uint64(b[:]) &^ (1 << 63)); id != 0 {
			return id
		}
	}
}

func (l *leaseService) LeaseGrant(ctx context.Context, r *pb.LeaseGrantRequest) (*pb.LeaseGrantResponse, error) {
	if err := l.s.checkWrite(ctx, r); err != nil { // etcd checks the quota first
		return nil, err
	}
	if err := l.s.auth.requireAuthInfo(ctx); err != nil {
		return nil, l.s.authErr(err)
	}
	if r.TTL > MaxLeaseTTL {
		return nil, rpctypes.ErrGRPCLeaseTTLTooLarge
	}
	ttl := max(r.TTL, MinLeaseTTL)
	id := r.ID
	for {
		pick := id
		if pick == 0 {
			pick = randomLeaseID()
		}
		rev, err := l.s.be.LeaseGrant(ctx, pick, ttl)
		if errors.Is(err, backends.ErrLeaseExists) && id == 0 {
			continue // a random ID collided: draw again
		}
		if err != nil {
			return nil, l.s.toGRPC(err)
		}
		return &pb.LeaseGrantResponse{Header: l.s.header(rev), ID: pick, TTL: ttl}, nil
	}
}

func (l *leaseService) LeaseRevoke(ctx context.Context, r *pb.LeaseRevokeRequest) (*pb.LeaseRevokeResponse, error) {
	if err := l.s.checkWrite(ctx, r); err != nil {
		return nil, err
	}
	if err := l.s.auth.requireAuthInfo(ctx); err != nil {
		return nil, l.s.authErr(err)
	}
	// As etcd applies a revoke: the caller must be allowed to write every
	// key attached to the lease.
	ctx, err := l.s.authorizeApply(ctx, func(as auth.AuthStore, ai *auth.AuthInfo) error {
		return checkLeasePuts(ctx, as, ai, l.s.leaseKeysOf(), r.ID)
	})
	if err != nil {
		return nil, err
	}
	// The header carries the revision of the revoke's own deletions, as
	// etcd's does: a revision read afterwards could include other writes.
	rev, err := l.s.be.LeaseRevoke(ctx, r.ID)
	if err != nil {
		return nil, l.s.writeErr(ctx, err)
	}
	return &pb.LeaseRevokeResponse{Header: l.s.header(rev)}, nil
}

func (l *leaseService) LeaseKeepAlive(stream pb.Lease_LeaseKeepAliveServer) error {
	ctx := stream.Context()
	if err := l.s.waitLeasesReady(ctx); err != nil {
		return l.s.toGRPC(err)
	}
	reqs := make(chan *pb.LeaseKeepAliveRequest)
	errc := make(chan error, 1)
	go func() {
		for {
			req, err := stream.Recv()
			if err != nil {
				errc <- err
				return
			}
			select {
			case reqs <- req:
			case <-ctx.Done():
				return
			}
		}
	}()
	for {
		var req *pb.LeaseKeepAliveRequest
		select {
		case req = <-reqs:
		case err := <-errc:
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		case <-l.s.shutdown:
			return errShuttingDown
		case <-ctx.Done():
			return ctx.Err()
		}
		if _, err := l.s.auth.checkLeaseKeys(ctx, l.s.leaseKeysOf(), req.ID, true); err != nil {
			return l.s.authErr(err)
		}
		ttl, err := l.s.be.LeaseRenew(ctx, req.ID)
		if errors.Is(err, backends.ErrLeaseNotFound) {
			ttl, err = 0, nil // etcd answers TTL 0 for an unknown lease
		}
		if err != nil {
			return l.s.toGRPC(err)
		}
		cur, err := l.s.currentRev(ctx)
		if err != nil {
			return l.s.toGRPC(err)
		}
		if err := stream.Send(&pb.LeaseKeepAliveResponse{Header: l.s.header(cur), ID: req.ID, TTL: ttl}); err != nil {
			return err
		}
	}
}

func (l *leaseService) LeaseTimeToLive(ctx context.Context, r *pb.LeaseTimeToLiveRequest) (*pb.LeaseTimeToLiveResponse, error) {
	if err := l.s.auth.requireAuthInfo(ctx); err != nil {
		return nil, l.s.authErr(err)
	}
	var authRev uint64
	if r.Keys {
		// etcd checks read permission on the lease's keys only when they
		// are asked for.
		var err error
		if authRev, err = l.s.auth.checkLeaseKeys(ctx, l.s.leaseKeysOf(), r.ID, false); err != nil {
			return nil, l.s.authErr(err)
		}
	}
	if err := l.s.waitLeasesReady(ctx); err != nil {
		return nil, l.s.toGRPC(err)
	}
	resp, err := l.timeToLive(ctx, r)
	if err != nil {
		return nil, err
	}
	if r.Keys && l.s.auth.enabledAndChangedSince(authRev) {
		return nil, l.s.authErr(auth.ErrAuthOldRevision)
	}
	return resp, nil
}

func (l *leaseService) timeToLive(ctx context.Context, r *pb.LeaseTimeToLiveRequest) (*pb.LeaseTimeToLiveResponse, error) {
	cur, err := l.s.currentRev(ctx)
	if err != nil {
		return nil, l.s.toGRPC(err)
	}
	info, err := l.s.be.LeaseInfo(ctx, r.ID, r.Keys)
	if errors.Is(err, backends.ErrLeaseNotFound) {
		return &pb.LeaseTimeToLiveResponse{Header: l.s.header(cur), ID: r.ID, TTL: -1}, nil
	}
	if err != nil {
		return nil, l.s.toGRPC(err)
	}
	return &pb.LeaseTimeToLiveResponse{
		Header:     l.s.header(cur),
		ID:         r.ID,
		TTL:        max(info.RemainingMillis/1000, 0),
		GrantedTTL: info.GrantedTTL,
		Keys:       info.Keys,
	}, nil
}

func (l *leaseService) LeaseLeases(ctx context.Context, _ *pb.LeaseLeasesRequest) (*pb.LeaseLeasesResponse, error) {
	ids, err := l.s.be.Leases(ctx)
	if err != nil {
		return nil, l.s.toGRPC(err)
	}
	if err := l.s.auth.checkLeases(ctx, l.s.leaseKeysOf(), ids); err != nil {
		return nil, l.s.authErr(err)
	}
	cur, err := l.s.currentRev(ctx)
	if err != nil {
		return nil, l.s.toGRPC(err)
	}
	out := &pb.LeaseLeasesResponse{Header: l.s.header(cur), Leases: make([]*pb.LeaseStatus, 0, len(ids))}
	for _, id := range ids {
		out.Leases = append(out.Leases, &pb.LeaseStatus{ID: id})
	}
	return out, nil
}
