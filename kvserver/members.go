package kvserver

import (
	"context"
	"errors"
	"time"

	"github.com/kvsql/kvsql/backends"
)

const (
	// heartbeatInterval is how often an instance records itself as alive;
	// an instance silent for memberTimeout is left out of MemberList.
	heartbeatInterval = 2 * time.Second
	memberTimeout     = 3 * heartbeatInterval
)

// memberRegistry is implemented by backends that several instances share,
// so that MemberList reports every live instance.
type memberRegistry interface {
	Heartbeat(ctx context.Context, m backends.Member) error
	Members(ctx context.Context, maxAge time.Duration) ([]backends.Member, error)
	Forget(ctx context.Context, id uint64) error
}

func (s *Server) self() backends.Member {
	return backends.Member{ID: s.memberID, Name: s.cfg.Name, ClientURLs: s.cfg.ClientURLs, Leader: s.leading.Load()}
}

// heartbeat records this instance (and whether it leads) in the member
// registry until ctx ends, then removes it. When writes are forwarded, it
// also follows which instance leads. A change of this instance's
// leadership is announced at once rather than at the next tick.
func (s *Server) heartbeat(ctx context.Context) error {
	reg, ok := s.be.(memberRegistry)
	if !ok {
		return nil
	}
	t := time.NewTicker(heartbeatInterval)
	defer t.Stop()
	failing := false // one line per outage, not one per tick
	for {
		me := s.self()
		hctx, cancel := context.WithTimeout(ctx, heartbeatInterval)
		err := reg.Heartbeat(hctx, me)
		if errors.Is(err, backends.ErrNotLeader) {
			// The leader lock's session is gone (this instance was
			// frozen or cut off long enough for the database to end it):
			// stop acting as leader at once and say so as a follower.
			s.log.Warn("lost the leader lock", "err", err)
			s.setLeading(false)
			me = s.self()
			err = reg.Heartbeat(hctx, me)
		}
		switch {
		case err != nil && ctx.Err() == nil && !failing:
			s.log.Warn("member heartbeat failed; will retry", "err", err)
			failing = true
		case err == nil && failing:
			s.log.Info("member heartbeat works again")
			failing = false
		}
		ms, err := reg.Members(hctx, memberTimeout)
		cancel()
		if err == nil {
			s.leaderID.Store(markedLeader(ms, me))
			s.observeLeader(markedLeader(ms, me))
			if s.fwd != nil {
				s.fwd.update(ms, me.Leader)
			}
		} else if ctx.Err() == nil {
			s.log.Debug("reading the member list failed; will retry", "err", err)
		}
		select {
		case <-ctx.Done():
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			defer cancel()
			_ = reg.Forget(cctx, s.memberID)
			return nil
		case <-t.C:
		case <-s.leadChanged:
		}
	}
}

// markedLeader returns the member marked as leader in ms (this instance if
// it leads), or 0 if none is.
func markedLeader(ms []backends.Member, me backends.Member) uint64 {
	if me.Leader {
		return me.ID
	}
	for _, m := range ms {
		if m.Leader && m.ID != me.ID {
			return m.ID
		}
	}
	return 0
}

// leader is the member ID Status reports as leader: the instance holding
// the leader lock, as far as this instance knows, else this instance.
func (s *Server) leader() uint64 {
	if id := s.leaderID.Load(); id != 0 && !s.leading.Load() {
		return id
	}
	return s.memberID
}

// members lists the live instances (this one at least).
func (s *Server) members(ctx context.Context) ([]backends.Member, error) {
	reg, ok := s.be.(memberRegistry)
	if !ok {
		return []backends.Member{s.self()}, nil
	}
	ms, err := reg.Members(ctx, memberTimeout)
	if err != nil {
		return nil, err
	}
	for _, m := range ms {
		if m.ID == s.memberID {
			return ms, nil
		}
	}
	return append(ms, s.self()), nil
}
