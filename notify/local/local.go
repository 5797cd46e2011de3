// Package local is the in-process notify source: the backend's commit hook
// calls Publish after each commit, and Next returns once a revision newer
// than the caller's has been published. It serves the embedded SQLite
// default, where one process owns the database.
package local

import (
	"context"
	"sync"

	"github.com/kvsql/kvsql/notify"
)

// Source is an in-process notify.Source. The zero value is not usable; use New.
type Source struct {
	mu      sync.Mutex // guards rev and changed
	rev     int64
	changed chan struct{} // closed and replaced by Publish
}

var _ notify.Source = (*Source)(nil)

// New returns a Source that has seen no revision.
func New() *Source {
	return &Source{changed: make(chan struct{})}
}

// Publish records that revision rev has committed. It never blocks.
func (s *Source) Publish(rev int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if rev <= s.rev {
		return
	}
	s.rev = rev
	close(s.changed)
	s.changed = make(chan struct{})
}

// Next implements notify.Source.
func (s *Source) Next(ctx context.Context, after int64) (int64, error) {
	for {
		s.mu.Lock()
		rev, ch := s.rev, s.changed
		s.mu.Unlock()
		if rev > after {
			return rev, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}
