package kvserver

import (
	"context"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/version"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// EtcdVersion is the etcd version kvsql reports in Status: the etcd API it
// implements. kube-apiserver enables RequestProgress, consistent reads from
// its watch cache and WatchList only for a version that qualifies.
var EtcdVersion = version.Version

type maintenanceService struct {
	pb.UnimplementedMaintenanceServer
	s *Server
}

func (m *maintenanceService) Status(ctx context.Context, r *pb.StatusRequest) (*pb.StatusResponse, error) {
	// Another instance checking who it forwards writes to signs its call.
	if !m.s.auth.trusted(ctx, m.s.memberID, r) {
		if err := m.s.auth.requireAuthInfo(ctx); err != nil {
			return nil, authErr(err)
		}
	}
	cur, err := m.s.currentRev(ctx)
	if err != nil {
		return nil, toGRPC(err)
	}
	size, inUse, err := m.s.be.Size(ctx)
	if err != nil {
		return nil, toGRPC(err)
	}
	return &pb.StatusResponse{
		Header:           m.s.header(cur),
		Version:          EtcdVersion,
		DbSize:           size,
		DbSizeInUse:      inUse,
		Leader:           m.s.leader(),
		RaftIndex:        uint64(cur),
		RaftTerm:         raftTerm,
		RaftAppliedIndex: uint64(cur),
		StorageVersion:   version.Cluster(EtcdVersion),
	}, nil
}

// Alarm lists no alarms: kvsql has no space quota of its own (the database
// has its own limits). Disarming is accepted and changes nothing; raising
// an alarm is refused.
func (m *maintenanceService) Alarm(ctx context.Context, r *pb.AlarmRequest) (*pb.AlarmResponse, error) {
	// etcd: listing alarms needs an identity, changing them the root role.
	check := m.s.auth.isAdmin
	if r.Action == pb.AlarmRequest_GET {
		check = m.s.auth.requireAuthInfo
	}
	if err := check(ctx); err != nil {
		return nil, authErr(err)
	}
	if r.Action == pb.AlarmRequest_ACTIVATE {
		return nil, status.Error(codes.Unimplemented, "kvsql: alarms cannot be raised; kvsql has no space quota alarm")
	}
	cur, err := m.s.currentRev(ctx)
	if err != nil {
		return nil, toGRPC(err)
	}
	return &pb.AlarmResponse{Header: m.s.header(cur)}, nil
}

func (m *maintenanceService) Defragment(ctx context.Context, _ *pb.DefragmentRequest) (*pb.DefragmentResponse, error) {
	if err := m.s.auth.isAdmin(ctx); err != nil {
		return nil, authErr(err)
	}
	if err := m.s.be.Defragment(ctx); err != nil {
		return nil, toGRPC(err)
	}
	cur, err := m.s.currentRev(ctx)
	if err != nil {
		return nil, toGRPC(err)
	}
	return &pb.DefragmentResponse{Header: m.s.header(cur)}, nil
}

func (m *maintenanceService) HashKV(ctx context.Context, r *pb.HashKVRequest) (*pb.HashKVResponse, error) {
	if err := m.s.auth.isAdmin(ctx); err != nil {
		return nil, authErr(err)
	}
	cur, err := m.s.currentRev(ctx)
	if err != nil {
		return nil, toGRPC(err)
	}
	rev := r.Revision
	if rev == 0 {
		rev = cur
	}
	hash, compact, err := m.s.be.Hash(ctx, rev)
	if err != nil {
		return nil, toGRPC(err)
	}
	return &pb.HashKVResponse{Header: m.s.header(cur), Hash: hash, CompactRevision: compact, HashRevision: rev}, nil
}

func (m *maintenanceService) Hash(ctx context.Context, _ *pb.HashRequest) (*pb.HashResponse, error) {
	if err := m.s.auth.isAdmin(ctx); err != nil {
		return nil, authErr(err)
	}
	return nil, status.Error(codes.Unimplemented, "kvsql: Hash hashes etcd's bolt file and has no meaning here; use HashKV")
}

func (m *maintenanceService) Snapshot(_ *pb.SnapshotRequest, stream pb.Maintenance_SnapshotServer) error {
	if err := m.s.auth.isAdmin(stream.Context()); err != nil {
		return authErr(err)
	}
	return status.Error(codes.Unimplemented, "kvsql: snapshots are not supported; back up the SQL database with its own tools")
}

func (m *maintenanceService) MoveLeader(ctx context.Context, _ *pb.MoveLeaderRequest) (*pb.MoveLeaderResponse, error) {
	if err := m.s.auth.isAdmin(ctx); err != nil {
		return nil, authErr(err)
	}
	return nil, status.Error(codes.Unimplemented, "kvsql: there is no raft leader to move")
}

func (m *maintenanceService) Downgrade(ctx context.Context, _ *pb.DowngradeRequest) (*pb.DowngradeResponse, error) {
	if err := m.s.auth.isAdmin(ctx); err != nil {
		return nil, authErr(err)
	}
	return nil, status.Error(codes.Unimplemented, "kvsql: cluster version downgrade does not apply to kvsql")
}
