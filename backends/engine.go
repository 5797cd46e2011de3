// The Engine: its configuration, its construction and shutdown, and the
// Backend methods that pass straight to the dialect (sizes, pools,
// defragmentation). What it does lives beside it by concern: writer.go (group
// commit), txn.go (Txn evaluation), range.go (range reading), read.go
// (snapshots and Gets), changes.go (the log for watches), compact.go,
// lease.go, fence.go (a database that went back), hash.go, errors.go.

package backends

import (
	"cmp"
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults for EngineConfig.
const (
	// DefaultMaxBatch is how many client writes one database transaction takes at most.
	DefaultMaxBatch = 256
	// DefaultChangesBytes is EngineConfig.ChangesBytes' default: with 1.5
	// MiB values and prev_kv, 1000 revisions could otherwise be 3 GiB.
	DefaultChangesBytes = 8 << 20
	// DefaultWriteTimeout is EngineConfig.WriteTimeout's default: far above
	// any healthy commit (milliseconds), below clients' patience.
	DefaultWriteTimeout = 15 * time.Second
)

// EngineConfig configures an Engine.
type EngineConfig struct {
	Logger *slog.Logger
	// MaxBatch caps how many client writes share one database transaction.
	MaxBatch int
	// OnCommit, if set, is called after every commit that created new
	// revisions, with the newest revision. It must not block.
	OnCommit func(rev int64)
	// Observer, if set, receives the writer's measurements.
	Observer Observer
	// MaxKeyBytes, if set, is the longest key the database can store; a put
	// of a longer key fails with ErrKeyTooLarge before anything is written.
	MaxKeyBytes int
	// GetsInFlight caps the statements concurrent plain Gets run at once
	// (see getBatcher); 0 means DefaultGetsInFlight.
	GetsInFlight int
	// CompactStepRows caps the kv_log rows one transaction of compaction's
	// cleanup covers; 0 means DefaultCompactStepRows.
	CompactStepRows int
	// CompactStepTime, if set, is how long one cleanup step should take:
	// the rows per step then adapt to it (between MinCompactStepRows and
	// CompactStepRows), starting small. A dialect whose cleanup shares the
	// writer's connection (SQLite) sets it, since every write queued
	// meanwhile waits for the step; 0 keeps every step at CompactStepRows.
	CompactStepTime time.Duration
	// CompactSleep is how long compaction's cleanup waits between two
	// steps (etcd's --compaction-sleep-interval), so that the writes that
	// run meanwhile get the CPU and disk the steps would otherwise take
	// back to back; 0: no wait.
	CompactSleep time.Duration
	// ChangesBytes caps the events (keys and values, prev_kv included) one
	// read of the log returns, beyond the revision that reaches it; 0
	// means DefaultChangesBytes.
	ChangesBytes int
	// WriteTimeout bounds one group-commit transaction and one read of the
	// watch tailer; 0 means DefaultWriteTimeout.
	WriteTimeout time.Duration
	// SerialWrites turns the pipelined writer off (pipeline.go): every
	// batch then reads its keys under the write lock, and the next batch
	// is prepared only after this one committed.
	SerialWrites bool
	// Database names the database in errors (dialect and address, never
	// credentials), so that a client told "database error" knows which.
	Database string
}

// Engine implements Backend on a Dialect. Writes are group-committed: one
// goroutine takes every queued write into one database transaction, so that
// many clients share one fsync while each Txn keeps its own revision.
type Engine struct {
	d   Dialect
	cfg EngineConfig
	log *slog.Logger

	writes chan *writeReq
	// sendMu guards closed. Writers queue a request holding it for
	// reading; Close sets closed holding it for writing, so that once
	// closed is set no request can enter the queue after the writer has
	// drained it for the last time.
	sendMu sync.RWMutex
	closed bool
	// stop is closed by Close; done is closed when the writer has exited.
	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
	closeErr  error

	// compactMu serialises compactions on this instance.
	compactMu sync.Mutex

	// gets serves plain Gets.
	gets *getBatcher
	// counts carries paginated lists' counts from page to page.
	counts countCache

	// seen is the highest revision this instance has read from the
	// database or handed out (see fence.go).
	seen atomic.Int64
	// tailTimeline is the database timeline the watch tailer last
	// reported, -1 before its first read; only TailChanges (one caller,
	// never concurrent) uses it.
	tailTimeline int64
}

var _ Backend = (*Engine)(nil)

// NewEngine starts an Engine on d. Close stops it and closes d.
func NewEngine(d Dialect, cfg EngineConfig) *Engine {
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = DefaultMaxBatch
	}
	if cfg.ChangesBytes <= 0 {
		cfg.ChangesBytes = DefaultChangesBytes
	}
	if cfg.WriteTimeout <= 0 {
		cfg.WriteTimeout = DefaultWriteTimeout
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	e := &Engine{
		d:      d,
		cfg:    cfg,
		log:    log,
		writes: make(chan *writeReq, cfg.MaxBatch),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),

		tailTimeline: -1,
	}
	e.gets = &getBatcher{g: d, slots: cmp.Or(cfg.GetsInFlight, DefaultGetsInFlight)}
	go e.writeLoop()
	return e
}

// Close stops the writer after the queued writes and closes the database.
func (e *Engine) Close() error {
	e.closeOnce.Do(func() {
		e.sendMu.Lock()
		e.closed = true
		e.sendMu.Unlock()
		close(e.stop)
		<-e.done
		e.closeErr = e.d.Close()
	})
	return e.closeErr
}

var _ PoolReporter = (*Engine)(nil)

// PoolStats implements PoolReporter: the dialect's pools.
func (e *Engine) PoolStats() []PoolStats { return e.d.PoolStats() }

// Size implements Backend.
func (e *Engine) Size(ctx context.Context) (int64, int64, error) {
	size, inUse, err := e.d.Size(ctx)
	return size, inUse, e.dbErr(err)
}

// Defragment implements Backend.
func (e *Engine) Defragment(ctx context.Context) error { return e.dbErr(e.d.Defragment(ctx)) }
