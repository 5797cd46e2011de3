package postgres

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Plans made for tables that have since grown. pgx prepares each statement
// once per connection, and after five executions PostgreSQL may keep a
// generic plan for it, costed at the sizes the tables had when it was
// made. Made while kv_current was nearly empty, the plan of a key lookup
// reads the whole table and compares every row with the keys wanted; it is
// replaced only when the table is analyzed, which autovacuum does a minute
// later at the earliest (autovacuum_naptime) and then only once a tenth of
// the table has changed. A bulk load into a new database (a new cluster, a
// restore) ran its first minute on such scans: measured with 20 000
// objects, 2214 sequential scans of kv_current (17 million rows read) in
// the first 10 s of a compare-and-swap churn, against 666 scans of nearly
// no rows once the tables were analyzed during the load (docs/
// benchmarks.md).
//
// So each time the revision doubles, from firstAnalyzeRev on, the instance
// that committed it analyzes kv_current and kv_log in the background: the
// statistics are current and every session's cached plans are made again.
// A database user that does not own the tables gets PostgreSQL's warning,
// which is ignored; autovacuum then remains the only refresh.

// firstAnalyzeRev is the revision of the first refresh.
const firstAnalyzeRev = 1000

// analyzeTimeout bounds one ANALYZE (it samples at most 30 000 rows of each
// table at the default statistics target).
const analyzeTimeout = time.Minute

const qAnalyze = `ANALYZE kv_current, kv_log`

// planRefresh runs the ANALYZE described above.
type planRefresh struct {
	pool *pgxpool.Pool
	log  *slog.Logger
	// next is the revision whose commit starts the next refresh; 0 until
	// the first commit sets it (twice the revision the instance found,
	// so that a restart does not analyze a table its plans were made for).
	next   atomic.Int64
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func newPlanRefresh(pool *pgxpool.Pool, log *slog.Logger) *planRefresh {
	ctx, cancel := context.WithCancel(context.Background())
	return &planRefresh{pool: pool, log: log, ctx: ctx, cancel: cancel}
}

// committed is told of each revision a write transaction committed.
func (r *planRefresh) committed(rev int64) {
	next := r.next.Load()
	if next == 0 {
		r.next.CompareAndSwap(0, max(firstAnalyzeRev, 2*rev))
		return
	}
	if rev < next || !r.next.CompareAndSwap(next, 2*rev) {
		return
	}
	r.wg.Go(func() {
		ctx, cancel := context.WithTimeout(r.ctx, analyzeTimeout)
		defer cancel()
		start := time.Now()
		if _, err := r.pool.Exec(ctx, qAnalyze); err != nil {
			if r.ctx.Err() == nil {
				r.log.Warn("analyzing kv_current and kv_log for fresh query plans failed; autovacuum will analyze them later", "revision", rev, "err", err)
			}
			return
		}
		r.log.Debug("analyzed kv_current and kv_log: cached query plans are made again", "revision", rev, "took", time.Since(start))
	})
}

// close stops a refresh under way and waits for it.
func (r *planRefresh) close() {
	r.cancel()
	r.wg.Wait()
}
