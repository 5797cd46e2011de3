package mysql

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"strings"
	"time"

	"github.com/kvsql/kvsql/backends"
)

// TryLead reports whether this instance (member self) holds the leader
// lock (GET_LOCK on a connection of its own), taking it if it is free and
// no leader move to another instance is in progress. If this process dies
// its session ends and the server releases the lock.
func (s *Store) TryLead(ctx context.Context, self uint64) (bool, error) {
	s.leadMu.Lock()
	defer s.leadMu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, backends.LeaderCheckTimeout)
	defer cancel()
	if s.leadConn != nil {
		if err := s.leadConn.PingContext(ctx); err == nil {
			return true, nil
		}
		discardConn(s.leadConn)
		s.leadConn = nil
	}
	c, err := s.db.Conn(ctx)
	if err != nil {
		return false, err
	}
	var got sql.NullInt64
	if err := c.QueryRowContext(ctx, qTryLead, self, s.leader).Scan(&got); err != nil {
		discardConn(c)
		return false, err
	}
	if got.Int64 != 1 {
		_ = c.Close()
		return false, nil
	}
	// The lock lives as long as this session: if this instance goes
	// silent (frozen, partitioned), the server ends the session after the
	// session timeout and the lock passes on. TryLead's pings keep it
	// busy while the instance runs.
	if _, err := c.ExecContext(ctx, qSessionWaitTimeout, s.sessionTimeout); err != nil {
		discardConn(c)
		return false, err
	}
	s.leadConn = c
	if _, err := c.ExecContext(ctx, qMoveDone, self); err != nil {
		// The move expires on its own; the lock is held all the same.
		s.log.Warn("ending the leader move failed", "err", err)
	}
	return true, nil
}

// Resign gives up the leader lock if this instance holds it: the session
// holding it is closed, not returned to the pool.
func (s *Store) Resign(ctx context.Context) error {
	s.leadMu.Lock()
	defer s.leadMu.Unlock()
	if s.leadConn == nil {
		return nil
	}
	_, err := s.leadConn.ExecContext(ctx, qReleaseLck, s.leader)
	discardConn(s.leadConn)
	s.leadConn = nil
	return err
}

// MoveLeader records that only member target may take the leader lock for
// the next ttl, so that when the leader resigns no other instance takes it.
func (s *Store) MoveLeader(ctx context.Context, target uint64, ttl time.Duration) error {
	_, err := s.db.ExecContext(ctx, qMoveLeader, target, ttl.Milliseconds())
	return err
}

// discardConn closes c's session instead of returning it to the pool (a
// named lock dies with its session).
func discardConn(c *sql.Conn) {
	_ = c.Raw(func(any) error { return driver.ErrBadConn })
	_ = c.Close()
}

// Heartbeat records this instance as alive, and as the leader if m.Leader
// (clearing any other instance's stale leader mark). The leader's marks
// are written on the session that holds the leader lock: an instance that
// lost the lock while it was frozen cannot mark itself leader again on the
// strength of what it held before (its session was ended).
func (s *Store) Heartbeat(ctx context.Context, m backends.Member) error {
	if !m.Leader {
		_, err := s.db.ExecContext(ctx, qHeartbeat, m.ID, m.Name, strings.Join(m.ClientURLs, ","), false)
		return err
	}
	s.leadMu.Lock()
	defer s.leadMu.Unlock()
	if s.leadConn == nil {
		return backends.ErrNotLeader
	}
	for _, st := range []struct {
		q    string
		args []any
	}{
		{qHeartbeat, []any{m.ID, m.Name, strings.Join(m.ClientURLs, ","), true}},
		{qUnmarkLeaders, []any{m.ID}},
	} {
		if _, err := s.leadConn.ExecContext(ctx, st.q, st.args...); err != nil {
			discardConn(s.leadConn)
			s.leadConn = nil
			return fmt.Errorf("%w: %w", backends.ErrNotLeader, err)
		}
	}
	return nil
}

// Members lists instances that sent a heartbeat within maxAge.
func (s *Store) Members(ctx context.Context, maxAge time.Duration) ([]backends.Member, error) {
	rows, err := s.db.QueryContext(ctx, qMembers, maxAge.Milliseconds())
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []backends.Member
	for rows.Next() {
		var m backends.Member
		var urls string
		if err := rows.Scan(&m.ID, &m.Name, &urls, &m.Leader); err != nil {
			return nil, err
		}
		if urls != "" {
			m.ClientURLs = strings.Split(urls, ",")
		}
		out = append(out, m)
	}
	return out, rows.Err()
}

// Forget removes a member record (on clean shutdown).
func (s *Store) Forget(ctx context.Context, id uint64) error {
	_, err := s.db.ExecContext(ctx, qForgetMember, id)
	return err
}
