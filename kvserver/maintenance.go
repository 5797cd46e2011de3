package kvserver

import (
	"context"
	"fmt"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"go.etcd.io/etcd/api/v3/version"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kvsql/kvsql/backends"
	"github.com/kvsql/kvsql/snapshot"
)

// EtcdVersion is the etcd version kvsql reports in Status: the etcd API it
// implements. kube-apiserver enables RequestProgress, consistent reads from
// its watch cache and WatchList only for a version that qualifies.
var EtcdVersion = version.Version

type maintenanceService struct {
	pb.UnimplementedMaintenanceServer
	s *Server
}

// moveLeaderTimeout bounds a MoveLeader whose client set no shorter
// deadline; moveLeaderTTL is how long only the target may take the lock.
const (
	moveLeaderTimeout = 10 * time.Second
	moveLeaderTTL     = 10 * time.Second
	movePoll          = 50 * time.Millisecond
)

// errLeaderTransferTimeout is what etcd answers when the transferee has
// not taken over before the deadline (etcd sends it with code Unknown).
var errLeaderTransferTimeout = status.Error(codes.Unknown, "etcdserver: request timed out, leader transfer took too long")

func (m *maintenanceService) Status(ctx context.Context, r *pb.StatusRequest) (*pb.StatusResponse, error) {
	s := m.s
	// Another instance checking who it forwards writes to signs its call.
	if _, ok := s.auth.trusted(ctx, s.memberID, r); !ok {
		if err := s.auth.requireAuthInfo(ctx); err != nil {
			return nil, s.authErr(err)
		}
	}
	cur, err := s.currentRev(ctx)
	if err != nil {
		return nil, s.toGRPC(err)
	}
	size, inUse, err := s.be.Size(ctx)
	if err != nil {
		return nil, s.toGRPC(err)
	}
	resp := &pb.StatusResponse{
		Header:           s.header(cur),
		Version:          EtcdVersion,
		DbSize:           size,
		DbSizeInUse:      inUse,
		DbSizeQuota:      s.quota,
		Leader:           s.leader(),
		RaftIndex:        uint64(cur),
		RaftTerm:         raftTerm,
		RaftAppliedIndex: uint64(cur),
		StorageVersion:   version.Cluster(EtcdVersion),
	}
	// As etcd: every raised alarm is listed in errors.
	for _, a := range s.stats.list(pb.AlarmType_NONE) {
		resp.Errors = append(resp.Errors, a.String())
	}
	return resp, nil
}

// Alarm lists, raises and clears alarms as etcd does (see quota.go). The
// alarms live in the database, so every instance lists and enforces the
// same ones.
func (m *maintenanceService) Alarm(ctx context.Context, r *pb.AlarmRequest) (*pb.AlarmResponse, error) {
	s := m.s
	// etcd: listing alarms needs an identity, changing them the root role.
	check := s.auth.isAdmin
	if r.Action == pb.AlarmRequest_GET {
		check = s.auth.requireAuthInfo
	}
	if err := check(ctx); err != nil {
		return nil, s.authErr(err)
	}
	resp := &pb.AlarmResponse{}
	switch r.Action {
	case pb.AlarmRequest_GET:
		alarms, err := s.be.Alarms(ctx)
		if err != nil {
			return nil, s.toGRPC(err)
		}
		for _, a := range alarms {
			if r.Alarm == pb.AlarmType_NONE || a.Alarm == r.Alarm {
				resp.Alarms = append(resp.Alarms, a)
			}
		}
	case pb.AlarmRequest_ACTIVATE, pb.AlarmRequest_DEACTIVATE:
		activate := r.Action == pb.AlarmRequest_ACTIVATE
		if activate && r.Alarm == pb.AlarmType_NONE {
			break
		}
		a := &pb.AlarmMember{MemberID: r.MemberID, Alarm: r.Alarm}
		changed, err := s.be.SetAlarm(ctx, a, activate)
		if err != nil {
			return nil, s.toGRPC(err)
		}
		// As etcd: raising answers with the alarm even if it was raised,
		// clearing only if it was.
		if changed || activate {
			resp.Alarms = append(resp.Alarms, a)
		}
		if changed {
			if activate {
				s.log.Warn("alarm raised", "member", fmt.Sprintf("%x", a.MemberID), "alarm", a.Alarm.String())
			} else {
				s.log.Info("alarm disarmed", "member", fmt.Sprintf("%x", a.MemberID), "alarm", a.Alarm.String())
			}
		}
		// Enforce (or stop enforcing) it here at once; other instances
		// follow at their next refresh.
		if err := s.stats.refresh(ctx); err != nil {
			return nil, s.toGRPC(err)
		}
	}
	cur, err := s.currentRev(ctx)
	if err != nil {
		return nil, s.toGRPC(err)
	}
	resp.Header = s.header(cur)
	return resp, nil
}

// Defragment reclaims the space of deleted rows where the database can
// (see each dialect's Defragment and README), then measures the size again.
func (m *maintenanceService) Defragment(ctx context.Context, _ *pb.DefragmentRequest) (*pb.DefragmentResponse, error) {
	if err := m.s.auth.isAdmin(ctx); err != nil {
		return nil, m.s.authErr(err)
	}
	s := m.s
	if err := s.be.Defragment(ctx); err != nil {
		return nil, s.toGRPC(err)
	}
	if err := s.stats.refresh(ctx); err != nil {
		return nil, s.toGRPC(err)
	}
	cur, err := s.currentRev(ctx)
	if err != nil {
		return nil, s.toGRPC(err)
	}
	return &pb.DefragmentResponse{Header: s.header(cur)}, nil
}

func (m *maintenanceService) HashKV(ctx context.Context, r *pb.HashKVRequest) (*pb.HashKVResponse, error) {
	if err := m.s.auth.isAdmin(ctx); err != nil {
		return nil, m.s.authErr(err)
	}
	cur, err := m.s.currentRev(ctx)
	if err != nil {
		return nil, m.s.toGRPC(err)
	}
	rev := r.Revision
	if rev == 0 {
		rev = cur
	}
	hash, compact, err := m.s.be.Hash(ctx, rev)
	if err != nil {
		return nil, m.s.toGRPC(err)
	}
	return &pb.HashKVResponse{Header: m.s.header(cur), Hash: hash, CompactRevision: compact, HashRevision: rev}, nil
}

// Hash answers a hash of the live key space at the current revision (the
// header's): equal on every instance at the same revision. etcd hashes its
// whole bolt file, which has no equivalent here.
func (m *maintenanceService) Hash(ctx context.Context, _ *pb.HashRequest) (*pb.HashResponse, error) {
	if err := m.s.auth.isAdmin(ctx); err != nil {
		return nil, m.s.authErr(err)
	}
	hash, rev, err := m.s.be.HashKeys(ctx)
	if err != nil {
		return nil, m.s.toGRPC(err)
	}
	return &pb.HashResponse{Header: m.s.header(rev), Hash: hash}, nil
}

// Snapshot streams the database as an etcd snapshot file (see package
// snapshot): built from one database snapshot into a temporary file in
// Config.SnapshotDir, then sent in chunks followed by its SHA-256, as etcd
// sends its bolt file. `etcdutl snapshot restore` turns it into an etcd
// data directory; `kvsql snapshot restore` loads it into a kvsql database.
func (m *maintenanceService) Snapshot(_ *pb.SnapshotRequest, srv pb.Maintenance_SnapshotServer) error {
	if err := m.s.auth.isAdmin(srv.Context()); err != nil {
		return m.s.authErr(err)
	}
	src, ok := m.s.be.(backends.Snapshotter)
	if !ok {
		return status.Error(codes.Unimplemented, "kvsql: this backend cannot take snapshots")
	}
	ctx := srv.Context()
	f, err := snapshot.Create(ctx, src, m.s.cfg.SnapshotDir)
	if err != nil {
		if ctx.Err() != nil {
			return toGRPC(ctx.Err())
		}
		m.s.log.Warn("building a snapshot failed", "err", err)
		return toGRPC(err)
	}
	defer func() {
		if err := f.Close(); err != nil {
			m.s.log.Warn("removing a snapshot's temporary file failed", "err", err)
		}
	}()
	m.s.log.Info("sending database snapshot", "revision", f.Revision, "versions", f.Versions, "leases", f.Leases, "bytes", f.Size)
	hdr := m.s.header(f.Revision)
	return f.Send(func(blob []byte, remaining int64) error {
		return srv.Send(&pb.SnapshotResponse{Header: hdr, RemainingBytes: uint64(remaining), Blob: blob, Version: snapshot.StorageVersion})
	})
}

// MoveLeader hands the leader role (the leader lock) to the instance
// target names, as etcd's does: only the leader accepts it
// (ErrGRPCNotLeader), the target must be a live member
// (ErrGRPCBadLeaderTransferee), and it answers once the target leads. The
// leader first records in the database that only the target may take the
// lock, then releases it; the target takes it at its next lease check.
func (m *maintenanceService) MoveLeader(ctx context.Context, r *pb.MoveLeaderRequest) (*pb.MoveLeaderResponse, error) {
	if err := m.s.auth.isAdmin(ctx); err != nil {
		return nil, m.s.authErr(err)
	}
	s := m.s
	mv, movable := s.be.(leaderMover)
	reg, registered := s.be.(memberRegistry)
	if !movable || !registered {
		// One instance, which always leads.
		if r.TargetID != s.memberID {
			return nil, rpctypes.ErrGRPCBadLeaderTransferee
		}
		return m.moved(ctx)
	}
	if !s.leading.Load() {
		return nil, rpctypes.ErrGRPCNotLeader
	}
	if r.TargetID == s.memberID {
		return m.moved(ctx)
	}
	ms, err := s.members(ctx)
	if err != nil {
		return nil, s.toGRPC(err)
	}
	var target *backends.Member
	for i := range ms {
		if ms[i].ID == r.TargetID {
			target = &ms[i]
		}
	}
	if target == nil {
		return nil, rpctypes.ErrGRPCBadLeaderTransferee
	}
	ctx, cancel := context.WithTimeout(ctx, moveLeaderTimeout)
	defer cancel()
	start := time.Now()
	s.log.Info("leadership transfer starting", "transferee", fmt.Sprintf("%x", target.ID), "transferee_name", target.Name)
	if err := mv.MoveLeader(ctx, target.ID, moveLeaderTTL); err != nil {
		return nil, s.toGRPC(err)
	}
	s.leadOp.Lock()
	err = mv.Resign(ctx)
	s.setLeading(false)
	s.leadOp.Unlock()
	if err != nil {
		s.log.Warn("releasing the leader lock failed", "err", err)
	}
	for {
		ms, err := reg.Members(ctx, memberTimeout)
		if err == nil && markedLeader(ms, backends.Member{}) == target.ID {
			break
		}
		select {
		case <-ctx.Done():
			s.log.Warn("leadership transfer timed out", "transferee", fmt.Sprintf("%x", target.ID))
			return nil, errLeaderTransferTimeout
		case <-time.After(movePoll):
		}
	}
	s.log.Info("leadership transfer finished", "new_leader", fmt.Sprintf("%x", target.ID), "took", time.Since(start).Round(time.Millisecond))
	return m.moved(ctx)
}

// moved answers a MoveLeader that succeeded.
func (m *maintenanceService) moved(ctx context.Context) (*pb.MoveLeaderResponse, error) {
	cur, err := m.s.currentRev(ctx)
	if err != nil {
		return nil, m.s.toGRPC(err)
	}
	return &pb.MoveLeaderResponse{Header: m.s.header(cur)}, nil
}

func (m *maintenanceService) Downgrade(ctx context.Context, _ *pb.DowngradeRequest) (*pb.DowngradeResponse, error) {
	if err := m.s.auth.isAdmin(ctx); err != nil {
		return nil, m.s.authErr(err)
	}
	return nil, status.Error(codes.Unimplemented, "kvsql: cluster version downgrade does not apply to kvsql")
}
