package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/kvsql/kvsql/backends"
)

// TryLead reports whether this instance (member self) holds the leader
// lock, taking it if it is free and no leader move to another instance is
// in progress. The lock is a session advisory lock on a connection of its
// own: if this process dies, PostgreSQL drops the session and the lock,
// and another instance takes over on its next try.
func (s *Store) TryLead(ctx context.Context, self uint64) (bool, error) {
	s.leadMu.Lock()
	defer s.leadMu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, backends.LeaderCheckTimeout)
	defer cancel()
	if s.leadConn != nil {
		if err := s.leadConn.Ping(ctx); err == nil {
			return true, nil
		}
		_ = s.leadConn.Close(context.Background())
		s.leadConn = nil
	}
	c, err := s.pool.Acquire(ctx)
	if err != nil {
		return false, err
	}
	conn := c.Hijack()
	var ok bool
	if err := conn.QueryRow(ctx, qTryLead, int64(leaderLockKey), int64(self)).Scan(&ok); err != nil {
		_ = conn.Close(context.Background())
		return false, err
	}
	if !ok {
		_ = conn.Close(context.Background())
		return false, nil
	}
	// The lock lives as long as this session: if this instance goes
	// silent (frozen, partitioned), the server ends the session after the
	// session timeout and the lock passes on. TryLead's pings keep it
	// busy while the instance runs.
	if _, err := conn.Exec(ctx, qIdleSessionTimeout, s.sessionTimeout); err != nil {
		var pe *pgconn.PgError
		if !errors.As(err, &pe) || pe.Code != "42704" { // undefined_object: before PostgreSQL 14
			_ = conn.Close(context.Background())
			return false, err
		}
		if !s.oldServer.Swap(true) {
			s.log.Warn("this PostgreSQL has no idle_session_timeout (it came in version 14): if the instance holding the leader lock freezes, the lock stays with it until its connection breaks")
		}
	}
	s.leadConn = conn
	if _, err := conn.Exec(ctx, qMoveDone, int64(self)); err != nil {
		// The move expires on its own; the lock is held all the same.
		s.log.Warn("ending the leader move failed", "err", err)
	}
	return true, nil
}

// Resign gives up the leader lock (by ending its session) if this
// instance holds it.
func (s *Store) Resign(ctx context.Context) error {
	s.leadMu.Lock()
	defer s.leadMu.Unlock()
	if s.leadConn == nil {
		return nil
	}
	err := s.leadConn.Close(ctx)
	s.leadConn = nil
	return err
}

// MoveLeader records that only member target may take the leader lock for
// the next ttl, so that when the leader resigns no other instance takes it.
func (s *Store) MoveLeader(ctx context.Context, target uint64, ttl time.Duration) error {
	_, err := s.pool.Exec(ctx, qMoveLeader, int64(target), ttl.Milliseconds())
	return err
}

// Member is one live instance.
type Member = backends.Member

// Heartbeat records this instance as alive, and as the leader if m.Leader
// (clearing any other instance's stale leader mark). The leader's marks
// are written on the session that holds the leader lock: an instance that
// lost the lock while it was frozen cannot mark itself leader again on the
// strength of what it held before (its session was ended).
func (s *Store) Heartbeat(ctx context.Context, m backends.Member) error {
	if !m.Leader {
		_, err := s.pool.Exec(ctx, qHeartbeat, int64(m.ID), m.Name, strings.Join(m.ClientURLs, ","), false)
		return err
	}
	s.leadMu.Lock()
	defer s.leadMu.Unlock()
	if s.leadConn == nil {
		return backends.ErrNotLeader
	}
	b := &pgx.Batch{}
	b.Queue(qHeartbeat, int64(m.ID), m.Name, strings.Join(m.ClientURLs, ","), true)
	b.Queue(qUnmarkLeaders, int64(m.ID))
	if err := s.leadConn.SendBatch(ctx, b).Close(); err != nil {
		_ = s.leadConn.Close(context.Background())
		s.leadConn = nil
		return fmt.Errorf("%w: %w", backends.ErrNotLeader, err)
	}
	return nil
}

// Members lists instances that sent a heartbeat within maxAge.
func (s *Store) Members(ctx context.Context, maxAge time.Duration) ([]backends.Member, error) {
	rows, err := s.pool.Query(ctx, qMembers, maxAge.Milliseconds())
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []backends.Member
	for rows.Next() {
		var id int64
		var m backends.Member
		var urls string
		if err := rows.Scan(&id, &m.Name, &urls, &m.Leader); err != nil {
			return nil, err
		}
		m.ID = uint64(id)
		if urls != "" {
			m.ClientURLs = strings.Split(urls, ",")
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// Forget removes a member record (on clean shutdown).
func (s *Store) Forget(ctx context.Context, id uint64) error {
	_, err := s.pool.Exec(ctx, qForgetMember, int64(id))
	return err
}
