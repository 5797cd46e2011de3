package kvserver

import (
	"context"
	"errors"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kvsql/kvsql/backends"
)

var (
	errShuttingDown = status.Error(codes.Unavailable, "kvsql: server is shutting down; retry against another instance or after restart")
)

// toGRPC converts a backend error to the gRPC error etcd returns for it, so
// that clients (clientv3, client-go) recognise it.
func toGRPC(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	switch {
	case errors.Is(err, backends.ErrCompacted):
		return rpctypes.ErrGRPCCompacted
	case errors.Is(err, backends.ErrFutureRev):
		return rpctypes.ErrGRPCFutureRev
	case errors.Is(err, backends.ErrKeyNotFound):
		return rpctypes.ErrGRPCKeyNotFound
	case errors.Is(err, backends.ErrLeaseNotFound):
		return rpctypes.ErrGRPCLeaseNotFound
	case errors.Is(err, backends.ErrLeaseExists):
		return rpctypes.ErrGRPCLeaseExist
	case errors.Is(err, backends.ErrKeyTooLarge):
		return status.Error(codes.InvalidArgument, "kvsql: "+err.Error())
	case errors.Is(err, backends.ErrRefused):
		return status.Error(codes.InvalidArgument, "kvsql: "+err.Error())
	case errors.Is(err, backends.ErrClosed):
		return errShuttingDown
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, context.Canceled.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, context.DeadlineExceeded.Error())
	}
	return status.Errorf(codes.Unavailable, "kvsql: database error: %v", err)
}
