package kvserver

import (
	"context"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

type clusterService struct {
	pb.UnimplementedClusterServer
	s *Server
}

// MemberList lists the live kvsql instances sharing this database (on the
// embedded SQLite default: this one), so that clientv3's endpoint sync
// finds every instance.
func (c *clusterService) MemberList(ctx context.Context, _ *pb.MemberListRequest) (*pb.MemberListResponse, error) {
	if err := c.s.auth.requireAuthInfo(ctx); err != nil {
		return nil, c.s.authErr(err)
	}
	cur, err := c.s.currentRev(ctx)
	if err != nil {
		return nil, c.s.toGRPC(err)
	}
	ms, err := c.s.members(ctx)
	if err != nil {
		return nil, c.s.toGRPC(err)
	}
	resp := &pb.MemberListResponse{Header: c.s.header(cur)}
	for _, m := range ms {
		resp.Members = append(resp.Members, &pb.Member{ID: m.ID, Name: m.Name, ClientURLs: m.ClientURLs})
	}
	return resp, nil
}

var errMembership = status.Error(codes.Unimplemented, "kvsql: membership is not managed through etcd's API; start or stop kvsql instances against the same database instead")

func (c *clusterService) MemberAdd(context.Context, *pb.MemberAddRequest) (*pb.MemberAddResponse, error) {
	return nil, errMembership
}

func (c *clusterService) MemberRemove(context.Context, *pb.MemberRemoveRequest) (*pb.MemberRemoveResponse, error) {
	return nil, errMembership
}

func (c *clusterService) MemberUpdate(context.Context, *pb.MemberUpdateRequest) (*pb.MemberUpdateResponse, error) {
	return nil, errMembership
}

func (c *clusterService) MemberPromote(context.Context, *pb.MemberPromoteRequest) (*pb.MemberPromoteResponse, error) {
	return nil, errMembership
}
