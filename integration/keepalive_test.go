package integration

import (
	"context"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
)

// TestClientKeepalivePingsAreAccepted: clientv3 (and so kube-apiserver)
// pings every 30 s by default; gRPC clients may ping as often as every
// 10 s. etcd accepts pings every 5 s; a server with gRPC's default policy
// (one ping per 5 minutes) answers with GOAWAY "too_many_pings" and drops
// the connection. Hold a watch stream open across several pings and check
// the connection never leaves READY.
func TestClientKeepalivePingsAreAccepted(t *testing.T) {
	t.Parallel()
	s := startSQLite(t, serverOptions{})
	conn, err := grpc.NewClient(strings.TrimPrefix(s.Endpoint, "http://"),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 5 * time.Second, PermitWithoutStream: true}))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ws, err := pb.NewWatchClient(conn).Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := ws.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: &pb.WatchCreateRequest{Key: []byte("k")}}}); err != nil {
		t.Fatal(err)
	}
	if _, err := ws.Recv(); err != nil {
		t.Fatal(err)
	}
	if st := conn.GetState(); st != connectivity.Ready {
		t.Fatalf("connection state %v, want READY", st)
	}
	// Three or four pings at 10 s; gRPC's default policy gives up after two.
	wait, stop := context.WithTimeout(ctx, 35*time.Second)
	defer stop()
	if conn.WaitForStateChange(wait, connectivity.Ready) {
		t.Fatalf("connection left READY (now %v): the server refused the client's keepalive pings", conn.GetState())
	}
}
