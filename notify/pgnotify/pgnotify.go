// Package pgnotify is the PostgreSQL notify source: one dedicated
// connection (taken from the pool and hijacked, so the pool never hands it
// to a query) LISTENs on the channel the postgres dialect NOTIFYs at every
// commit, with the newest revision as payload.
//
// After every (re)connect Next returns at once with revision 0, so the
// tailer re-reads kv_log from its cursor: notifications sent while the
// connection was down are never needed.
package pgnotify

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/kvsql/kvsql/notify"
)

// newRetry spaces reconnects: from 50 ms, growing to 5 s, with jitter so
// that instances reconnecting to one database spread out.
func newRetry() *backoff.ExponentialBackOff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval, b.MaxInterval = minBackoff, maxBackoff
	b.Reset()
	return b
}

const (
	minBackoff = 50 * time.Millisecond
	maxBackoff = 5 * time.Second
	// listenIdle is how long the source waits for a notification before it
	// checks that the connection still answers (pingTimeout): a connection
	// whose server or network went silent without closing it would
	// otherwise wait for ever.
	listenIdle  = 10 * time.Second
	pingTimeout = 5 * time.Second
)

// Source is a notify.Source on LISTEN/NOTIFY. Next must not be called
// concurrently.
type Source struct {
	pool    *pgxpool.Pool
	channel string
	log     *slog.Logger

	mu   sync.Mutex // guards conn (Close may run during Next)
	conn *pgx.Conn
	// retry spaces reconnects; nil while the last connect worked.
	retry *backoff.ExponentialBackOff
}

var _ notify.Source = (*Source)(nil)

// New returns a Source listening on channel through a connection from pool.
func New(pool *pgxpool.Pool, channel string, log *slog.Logger) *Source {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Source{pool: pool, channel: channel, log: log}
}

func (s *Source) connect(ctx context.Context) (*pgx.Conn, error) {
	c, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, err
	}
	conn := c.Hijack()
	if _, err := conn.Exec(ctx, "LISTEN "+pgx.Identifier{s.channel}.Sanitize()); err != nil {
		_ = conn.Close(context.Background())
		return nil, err
	}
	return conn, nil
}

// Next implements notify.Source.
func (s *Source) Next(ctx context.Context, after int64) (int64, error) {
	s.mu.Lock()
	conn := s.conn
	s.mu.Unlock()
	if conn == nil {
		if s.retry != nil {
			select {
			case <-time.After(s.retry.NextBackOff()):
			case <-ctx.Done():
				return 0, ctx.Err()
			}
		}
		c, err := s.connect(ctx)
		if err != nil {
			if s.retry == nil {
				s.retry = newRetry()
			}
			return 0, fmt.Errorf("pgnotify: listen: %w", err)
		}
		s.retry = nil
		s.mu.Lock()
		s.conn = c
		s.mu.Unlock()
		s.log.Debug("listening", "channel", s.channel)
		// Anything committed while we were not listening is in kv_log:
		// make the caller read it.
		return 0, nil
	}
	for {
		wctx, cancel := context.WithTimeout(ctx, listenIdle)
		n, err := conn.WaitForNotification(wctx)
		cancel()
		if err != nil && ctx.Err() == nil && wctx.Err() != nil {
			// Quiet for listenIdle: a timeout leaves the connection
			// usable; check that the server still answers on it.
			pctx, cancel := context.WithTimeout(ctx, pingTimeout)
			err = conn.Ping(pctx)
			cancel()
			if err == nil {
				continue
			}
		}
		if err != nil {
			if ctx.Err() != nil {
				return 0, ctx.Err()
			}
			s.mu.Lock()
			s.conn = nil
			s.mu.Unlock()
			_ = conn.Close(context.Background())
			s.retry = newRetry()
			return 0, fmt.Errorf("pgnotify: connection lost: %w", err)
		}
		rev, perr := strconv.ParseInt(n.Payload, 10, 64)
		if perr != nil || rev > after {
			return max(rev, 0), nil
		}
	}
}

// Close closes the listening connection.
func (s *Source) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.conn == nil {
		return nil
	}
	err := s.conn.Close(context.Background())
	s.conn = nil
	return err
}
