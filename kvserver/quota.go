package kvserver

import (
	"context"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

// Space quota and alarms, as etcd has them (--quota-backend-bytes, the
// NOSPACE and CORRUPT alarms):
//   - A Put, a Txn with a put on either branch (nested ones too), or a LeaseGrant
//     that would make the database's size in use reach the quota is
//     refused with ErrGRPCNoSpace, and the NOSPACE alarm is raised for
//     this member.
//   - While a NOSPACE alarm is raised (by any instance: alarms live in the
//     database), those requests are refused with ErrGRPCNoSpace; ranges,
//     deletes, txns without puts, compaction and lease revokes still work,
//     so that space can be freed. `etcdctl alarm disarm` clears it.
//   - While a CORRUPT alarm is raised, every write (Put, DeleteRange, Txn
//     with writes, Compact, LeaseGrant, LeaseRevoke) is refused with
//     ErrGRPCCorrupt; reads still work.
// The size is the one measured in the background (stats) plus what was
// let through since, so a check costs no database round trip.

const (
	// DefaultQuotaBackendBytes is etcd's default quota (2 GiB), used when
	// Config.QuotaBackendBytes is 0.
	DefaultQuotaBackendBytes = 2 << 30
	// etcd's estimates of what storing a key's metadata and a lease cost.
	kvOverhead    = 256
	leaseOverhead = 64
	// alarmWriteTimeout bounds raising an alarm from a refused request.
	alarmWriteTimeout = 5 * time.Second
)

// quotaCost is etcd's charge against the quota for a request: a put's key
// and value plus overhead, a txn's larger branch (its puts, nested txns'
// included), a lease grant's overhead; 0 for anything else, which the
// quota never refuses.
func quotaCost(r any) int64 {
	switch v := r.(type) {
	case *pb.PutRequest:
		return putCost(v)
	case *pb.TxnRequest:
		return max(branchCost(v.Success), branchCost(v.Failure))
	case *pb.LeaseGrantRequest:
		return leaseOverhead
	}
	return 0
}

func putCost(r *pb.PutRequest) int64 { return int64(kvOverhead + len(r.Key) + len(r.Value)) }

func branchCost(ops []*pb.RequestOp) int64 {
	var n int64
	for _, op := range ops {
		if p := op.GetRequestPut(); p != nil {
			n += putCost(p)
		}
		if t := op.GetRequestTxn(); t != nil {
			n += max(branchCost(t.Success), branchCost(t.Failure))
		}
	}
	return n
}

// checkWrite applies the quota and the alarms to a write request (Put,
// DeleteRange, a Txn with writes, Compact, LeaseGrant, LeaseRevoke) before
// it is applied, in etcd's order: the quota first, then CORRUPT, then
// NOSPACE.
func (s *Server) checkWrite(ctx context.Context, r any) error {
	cost := quotaCost(r)
	if cost > 0 && s.quota > 0 {
		if ok, size := s.stats.admit(cost, s.quota); !ok {
			s.raiseNoSpace(ctx, size)
			return rpctypes.ErrGRPCNoSpace
		}
	}
	noSpace, corrupt := s.stats.active()
	if corrupt {
		return rpctypes.ErrGRPCCorrupt
	}
	if noSpace && cost > 0 {
		return rpctypes.ErrGRPCNoSpace
	}
	return nil
}

// raiseNoSpace raises this member's NOSPACE alarm unless it is raised.
// A failure is logged: the request is refused all the same.
func (s *Server) raiseNoSpace(ctx context.Context, size int64) {
	for _, a := range s.stats.list(pb.AlarmType_NOSPACE) {
		if a.MemberID == s.memberID {
			return
		}
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), alarmWriteTimeout)
	defer cancel()
	changed, err := s.be.SetAlarm(ctx, &pb.AlarmMember{MemberID: s.memberID, Alarm: pb.AlarmType_NOSPACE}, true)
	if err != nil {
		s.log.Warn("raising the NOSPACE alarm failed", "err", err, "size_in_use", size, "quota", s.quota)
		return
	}
	if changed {
		s.log.Warn("database space exceeded: raised the NOSPACE alarm; writes are refused until space is freed (compact, defragment) and the alarm is disarmed",
			"size_in_use", size, "quota", s.quota)
	}
	if err := s.stats.refresh(ctx); err != nil {
		s.log.Warn("reading alarms after raising NOSPACE failed", "err", err)
	}
}
