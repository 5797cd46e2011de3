// Package poll is the fallback notify source for databases whose change
// stream cannot be used (PostgreSQL behind a transaction-mode pooler such as
// PgBouncer, MySQL without binlog access). Next simply returns every
// interval, and the tailer reads kv_log after its cursor.
//
// Polling is safe, not just approximate, because revisions are gapless and
// commit in revision order (the global write lock): a read that finds
// revision N has already seen every revision below N, so nothing committed
// can be skipped — unlike polling an auto-increment id, where a lower id may
// commit after a higher one.
package poll

import (
	"context"
	"time"

	"github.com/kvsql/kvsql/notify"
)

// Source wakes the tailer every Interval.
type Source struct {
	Interval time.Duration
}

var _ notify.Source = Source{}

// Next implements notify.Source.
func (s Source) Next(ctx context.Context, _ int64) (int64, error) {
	t := time.NewTimer(s.Interval)
	defer t.Stop()
	select {
	case <-t.C:
		return 0, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}
