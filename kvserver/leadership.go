// Leadership: one instance at a time (the holder of the backend's leader
// lock; a backend of one instance always leads) expires leases. The lease
// loop elects on every tick, gives every lease its full TTL again when
// leadership passes to this instance, revokes expired leases while it
// leads, and records each change of leader.

package kvserver

import (
	"context"
	"fmt"
	"time"
)

// leaderElector is implemented by backends that several instances share:
// one instance at a time holds leadership and does the leader duties
// (revoking expired leases). Backends without it are always leader.
type leaderElector interface {
	// TryLead reports whether member self holds the leader lock, taking
	// it if it is free and no leader move to another member is under way.
	TryLead(ctx context.Context, self uint64) (bool, error)
}

// leaderMover is implemented by backends whose leadership can be handed to
// a named instance (Maintenance.MoveLeader).
type leaderMover interface {
	// MoveLeader lets only member target take the leader lock for ttl.
	MoveLeader(ctx context.Context, target uint64, ttl time.Duration) error
	// Resign gives up the leader lock if this instance holds it.
	Resign(ctx context.Context) error
}

// isLeader reports whether this instance should do the leader duties now.
func (s *Server) isLeader(ctx context.Context) bool {
	le, ok := s.be.(leaderElector)
	if !ok {
		return true
	}
	lead, err := le.TryLead(ctx, s.memberID)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("leader election failed; will retry", "err", err)
		}
		return false
	}
	return lead
}

// observeLeader records the leader this instance sees (0: none). As in
// etcd, a leader other than the last one seen counts as a leader change,
// and so does the first; it is logged once, on the instance that sees it.
func (s *Server) observeLeader(id uint64) {
	prev := s.seenLeader.Swap(id)
	if id != 0 && id != prev {
		if m := s.cfg.Metrics; m != nil {
			m.leaderChanges.Inc()
		}
		s.log.Info("leader changed", "leader", fmt.Sprintf("%x", id), "previous", fmt.Sprintf("%x", prev), "this_instance_leads", id == s.memberID)
	}
	if m := s.cfg.Metrics; m != nil {
		m.setLeader(id != 0, s.leading.Load())
	}
}

// takeOverLeases reports whether this instance is the leader, and when it
// has just become one — at start-up, or when a dead leader's lock passes to
// it — first gives every lease its full TTL again, as etcd's new leader
// does: the time nobody was expiring leases (and clients could not reach a
// server to keep them alive) is not charged to them. It returns false if
// the extension failed, so that the next check tries again.
func (s *Server) takeOverLeases(ctx context.Context) bool {
	if !s.isLeader(ctx) {
		return false
	}
	n, err := s.be.LeasePromote(ctx)
	if err != nil {
		if ctx.Err() == nil {
			s.log.Warn("extending leases on taking over lease expiry failed; will retry", "err", err)
		}
		return false
	}
	s.log.Info("took over lease expiry", "leases_extended", n)
	return true
}

// waitLeasesReady waits until Run's first lease take-over attempt is done.
func (s *Server) waitLeasesReady(ctx context.Context) error {
	select {
	case <-s.leasesReady:
		return nil
	case <-s.shutdown:
		return errShuttingDown
	case <-ctx.Done():
		return ctx.Err()
	}
}

// expireLeases revokes expired leases while this instance is the leader;
// leading says whether it already is (and has extended the leases).
func (s *Server) expireLeases(ctx context.Context, leading bool) error {
	t := time.NewTicker(s.cfg.LeaseCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		// The heartbeat clears s.leading when it finds the leader lock's
		// session gone, and a MoveLeader that resigned does too: then this
		// is a take-over again (with its lease extension), not a
		// continuation.
		s.leadOp.Lock()
		if !leading || !s.leading.Load() {
			leading = s.takeOverLeases(ctx)
		} else if !s.isLeader(ctx) {
			leading = false
		}
		s.setLeading(leading)
		s.leadOp.Unlock()
		if !leading {
			continue
		}
		n, err := s.be.ExpireLeases(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			s.log.Warn("revoking expired leases failed; will retry", "err", err)
			continue
		}
		if n > 0 {
			s.log.Debug("revoked expired leases", "count", n)
		}
	}
}

// setLeading records whether this instance leads and, when that changed,
// wakes the heartbeat to announce it (and to stop or start forwarding).
func (s *Server) setLeading(leading bool) {
	if s.leading.Swap(leading) == leading {
		return
	}
	if _, ok := s.be.(memberRegistry); !ok {
		// A backend of one instance: it leads whenever it runs.
		s.observeLeader(map[bool]uint64{true: s.memberID}[leading])
	}
	select {
	case s.leadChanged <- struct{}{}:
	default:
	}
}
