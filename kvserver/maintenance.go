package kvserver

import (
	"context"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
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

func (m *maintenanceService) Status(ctx context.Context, _ *pb.StatusRequest) (*pb.StatusResponse, error) {
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

func (m *maintenanceService) Hash(context.Context, *pb.HashRequest) (*pb.HashResponse, error) {
	return nil, status.Error(codes.Unimplemented, "kvsql: Hash hashes etcd's bolt file and has no meaning here; use HashKV")
}

// Snapshot streams the database as an etcd snapshot file (see package
// snapshot): built from one database snapshot into a temporary file in
// Config.SnapshotDir, then sent in chunks followed by its SHA-256, as etcd
// sends its bolt file. `etcdutl snapshot restore` turns it into an etcd
// data directory; `kvsql snapshot restore` loads it into a kvsql database.
func (m *maintenanceService) Snapshot(_ *pb.SnapshotRequest, srv pb.Maintenance_SnapshotServer) error {
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

func (m *maintenanceService) MoveLeader(context.Context, *pb.MoveLeaderRequest) (*pb.MoveLeaderResponse, error) {
	return nil, status.Error(codes.Unimplemented, "kvsql: there is no raft leader to move")
}

func (m *maintenanceService) Downgrade(context.Context, *pb.DowngradeRequest) (*pb.DowngradeResponse, error) {
	return nil, status.Error(codes.Unimplemented, "kvsql: cluster version downgrade does not apply to kvsql")
}
