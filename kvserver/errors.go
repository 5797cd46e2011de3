package kvserver

import (
	"context"
	"errors"
	"sync"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kvsql/kvsql/backends"
)

var (
	errShuttingDown = withReason(codes.Unavailable, reasonShuttingDown, "kvsql: server is shutting down; retry against another instance or after restart")
)

// errorDomain and the reasons below mark errors whose meaning another kvsql
// instance acts on (see forward.go), in an ErrorInfo detail of the status:
// gRPC's own way to carry a machine-readable cause, so that no caller has
// to parse a message.
const (
	errorDomain = "kvsql"
	// reasonShuttingDown: the server is stopping and applied nothing.
	reasonShuttingDown = "SHUTTING_DOWN"
	// reasonWrongMember: a write forwarded to another member; not applied.
	reasonWrongMember = "WRONG_MEMBER"
)

// withReason returns a status error carrying reason in an ErrorInfo detail.
func withReason(code codes.Code, reason, msg string) error {
	st, err := status.New(code, msg).WithDetails(&errdetails.ErrorInfo{Domain: errorDomain, Reason: reason})
	if err != nil {
		return status.Error(code, msg) // cannot happen: ErrorInfo always marshals
	}
	return st.Err()
}

// reasonOf returns the kvsql reason an error carries, "" if none.
func reasonOf(err error) string {
	for _, d := range status.Convert(err).Details() {
		if ei, ok := d.(*errdetails.ErrorInfo); ok && ei.Domain == errorDomain {
			return ei.Reason
		}
	}
	return ""
}

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
	case errors.Is(err, backends.ErrAuthOldRevision):
		return rpctypes.ErrGRPCAuthOldRevision
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

// dbErrorLogEvery is how often each class of database error is logged at
// most; the line in between counts the ones left out.
const dbErrorLogEvery = time.Minute

// dbErrorLog logs database errors once per class per dbErrorLogEvery, so
// that an outage shows as one line per kind of failure, not one per
// request.
type dbErrorLog struct {
	mu      sync.Mutex // guards classes
	classes map[string]*dbErrorClass
}

type dbErrorClass struct {
	logged  time.Time
	skipped int
}

// toGRPC is toGRPC that also logs database errors by class (see
// dbErrorLog). Every RPC handler converts backend errors with it.
func (s *Server) toGRPC(err error) error {
	g := toGRPC(err)
	if err != nil && isDatabaseError(err) {
		s.logDBError(err)
	}
	return g
}

// isDatabaseError reports whether toGRPC turns err into kvsql's database
// error (not a request's own failure, a status or a context end).
func isDatabaseError(err error) bool {
	if _, ok := status.FromError(err); ok {
		return false
	}
	for _, known := range []error{backends.ErrCompacted, backends.ErrFutureRev, backends.ErrKeyNotFound,
		backends.ErrLeaseNotFound, backends.ErrLeaseExists, backends.ErrKeyTooLarge, backends.ErrClosed, backends.ErrAuthOldRevision,
		context.Canceled, context.DeadlineExceeded} {
		if errors.Is(err, known) {
			return false
		}
	}
	return true
}

func (s *Server) logDBError(err error) {
	class := s.be.ErrorClass(err)
	l := &s.dbErrs
	l.mu.Lock()
	if l.classes == nil {
		l.classes = map[string]*dbErrorClass{}
	}
	c := l.classes[class]
	if c == nil {
		c = &dbErrorClass{}
		l.classes[class] = c
	}
	now := time.Now()
	if !c.logged.IsZero() && now.Sub(c.logged) < dbErrorLogEvery {
		c.skipped++
		l.mu.Unlock()
		return
	}
	skipped := c.skipped
	c.logged, c.skipped = now, 0
	l.mu.Unlock()
	s.log.Warn("database error", "class", class, "err", err, "same_class_since_last_line", skipped)
}
