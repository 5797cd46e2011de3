// Package postgres is the PostgreSQL (13+) dialect. Writers serialise on the
// kv_meta row (SELECT ... FOR UPDATE), so revisions commit in order; each
// write transaction ends with NOTIFY carrying its newest revision, which
// notify/pgnotify turns into watch wake-ups on every instance. Reads run in
// REPEATABLE READ read-only transactions: one snapshot per request. Lease
// expiry uses the database clock, so all instances agree on it.
package postgres

import (
	"cmp"
	"context"
	"embed"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/kvsql/kvsql/backends"
	"github.com/kvsql/kvsql/internal/dbnet"
)

//go:embed schema/*.sql
var schemaFS embed.FS

// MaxKeyBytes is the longest key this dialect stores. A btree index entry
// holds at most about 2700 bytes (a third of a page), and kv_log's key index
// holds the key with its revision; a key close to that limit would fail in
// the database, inside a group commit. Keys are refused above 2048 bytes,
// MySQL's limit too, before they reach the database.
const MaxKeyBytes = 2048

// Config configures Open.
type Config struct {
	// URL is a libpq-style connection URL or DSN, parsed by
	// pgxpool.ParseConfig (pool_max_conns, sslmode, sslrootcert, ... are
	// honoured). Open's errors never contain it.
	URL string
	// StatementTimeout, if set, bounds every statement on the server.
	StatementTimeout time.Duration
	// SessionTimeout is how long the server waits for a session of this
	// instance that holds the write lock (a write transaction) or the
	// leader lock and has gone silent — the instance froze or lost its
	// network — before it ends the session, so that its locks pass on.
	// 0 means backends.DefaultSessionTimeout.
	SessionTimeout time.Duration
	Engine         backends.EngineConfig
}

// Store is a backends.Engine on PostgreSQL plus what several instances
// sharing one database need: leader election and a member registry.
type Store struct {
	*backends.Engine
	pool *pgxpool.Pool
	log  *slog.Logger

	leadMu   sync.Mutex // guards leadConn
	leadConn *pgx.Conn  // holds the leader advisory lock while open
	// sessionTimeout is Config.SessionTimeout in milliseconds, as a
	// setting's text.
	sessionTimeout string
	// oldServer is set once a server without idle_session_timeout (before
	// PostgreSQL 14) was seen, so that it is reported once.
	oldServer atomic.Bool
}

var _ backends.Backend = (*Store)(nil)

// Open connects, migrates the schema and starts the engine.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	pcfg, err := pgxpool.ParseConfig(cfg.URL)
	if err != nil {
		return nil, parseError(err)
	}
	if cfg.StatementTimeout > 0 {
		pcfg.ConnConfig.RuntimeParams["statement_timeout"] = strconv.FormatInt(cfg.StatementTimeout.Milliseconds(), 10)
	}
	// Connections notice a dead server or network (dbnet) instead of
	// hanging for the kernel's 15 minutes.
	pcfg.ConnConfig.DialFunc = dbnet.Dial
	if pcfg.ConnConfig.ConnectTimeout == 0 {
		pcfg.ConnConfig.ConnectTimeout = dbnet.ConnectTimeout
	}
	hosts := preferPrimary(pcfg.ConnConfig)
	sessionTimeout := cmp.Or(cfg.SessionTimeout, backends.DefaultSessionTimeout)
	if cfg.Engine.GetsInFlight == 0 {
		// Half the pool at most, so that the writer and other reads
		// find a connection without waiting behind Gets, and fewer
		// backends compete for the server's CPUs.
		cfg.Engine.GetsInFlight = max(1, int(pcfg.MaxConns)/2)
	}
	pool, err := pgxpool.NewWithConfig(ctx, pcfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: connect: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres: connect to %s: %w", hosts, err)
	}
	if err := migrate(ctx, pool); err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres: migrate: %w", err)
	}
	log := cfg.Engine.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	timeout := strconv.FormatInt(sessionTimeout.Milliseconds(), 10)
	d := &dialect{pool: pool, sessionTimeout: timeout, sessionMillis: sessionTimeout.Milliseconds(), plans: newPlanRefresh(pool, log)}
	cfg.Engine.MaxKeyBytes = MaxKeyBytes
	if cfg.Engine.Database == "" {
		cfg.Engine.Database = fmt.Sprintf("PostgreSQL at %s/%s", hosts, pcfg.ConnConfig.Database)
	}
	return &Store{Engine: backends.NewEngine(d, cfg.Engine), pool: pool, log: log, sessionTimeout: timeout}, nil
}

// preferPrimary makes c, if it lists several hosts (a primary and its
// standbys, in failover order) and no target_session_attrs, connect only
// to the one that accepts writes, as target_session_attrs=read-write does:
// a standby would refuse every write, and its replay may lag behind the
// primary. It returns the hosts (see hostList).
func preferPrimary(c *pgx.ConnConfig) string {
	hosts := hostList(c)
	if strings.Contains(hosts, ",") && c.ValidateConnect == nil {
		c.ValidateConnect = pgconn.ValidateConnectTargetSessionAttrsReadWrite
	}
	return hosts
}

// hostList names the servers c connects to, in order, as host:port[,...]:
// the first and the fallbacks of other addresses (pgx also lists the same
// server again for each sslmode it may try).
func hostList(c *pgx.ConnConfig) string {
	seen := map[string]bool{}
	var list []string
	add := func(host string, port uint16) {
		a := net.JoinHostPort(host, strconv.Itoa(int(port)))
		if !seen[a] {
			seen[a] = true
			list = append(list, a)
		}
	}
	add(c.Host, c.Port)
	for _, f := range c.Fallbacks {
		add(f.Host, f.Port)
	}
	return strings.Join(list, ",")
}

// PoolStats implements backends.PoolReporter: the pgxpool (the LISTEN,
// tailer and leader connections are hijacked from it and not counted).
func (d *dialect) PoolStats() []backends.PoolStats {
	st := d.pool.Stat()
	return []backends.PoolStats{{Name: "postgres", MaxOpen: int(st.MaxConns()), Open: int(st.TotalConns()),
		InUse: int(st.AcquiredConns()), Idle: int(st.IdleConns()), WaitCount: st.EmptyAcquireCount(), WaitDuration: st.EmptyAcquireWaitTime()}}
}

// Pool returns the connection pool (notify/pgnotify takes its listener
// connection from it).
func (s *Store) Pool() *pgxpool.Pool { return s.pool }

// Close stops the engine, gives up leadership and closes the pool.
func (s *Store) Close() error {
	err := s.Engine.Close()
	s.leadMu.Lock()
	if s.leadConn != nil {
		_ = s.leadConn.Close(context.Background())
		s.leadConn = nil
	}
	s.leadMu.Unlock()
	return err
}

type dialect struct {
	pool *pgxpool.Pool
	// sessionTimeout is idle_in_transaction_session_timeout for write
	// transactions (milliseconds, as a setting's text).
	sessionTimeout string
	sessionMillis  int64 // the same, as a number

	tailMu sync.Mutex // guards tail
	tail   *pgx.Conn  // TailChanges' own connection; nil until first used

	plans *planRefresh // see plans.go
}

// The roles of backends.Dialect, each implemented here.
var (
	_ backends.Dialect         = (*dialect)(nil)
	_ backends.ReadBeginner    = (*dialect)(nil)
	_ backends.BatchBeginner   = (*dialect)(nil)
	_ backends.CompactBeginner = (*dialect)(nil)
	_ backends.LatestGetter    = (*dialect)(nil)
	_ backends.ChangesReader   = (*dialect)(nil)
	_ backends.ErrorClasser    = (*dialect)(nil)
	_ backends.PoolReporter    = (*dialect)(nil)
	_ backends.AuthStore       = (*dialect)(nil)
	_ backends.Maintainer      = (*dialect)(nil)

	_ backends.Tx             = (*txn)(nil)
	_ backends.CurrentGetter  = (*txn)(nil)
	_ backends.BatchCommitter = (*txn)(nil)
	_ backends.AuthTxReader   = (*txn)(nil)
)

func (d *dialect) BeginRead(ctx context.Context) (backends.Tx, error) {
	tx, err := d.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, err
	}
	return &txn{q: tx, tx: tx}, nil
}

func (d *dialect) BeginWrite(ctx context.Context) (backends.Tx, error) {
	tx, _, err := d.BeginBatch(ctx, nil)
	return tx, err
}

// ErrorClass implements backends.ErrorClasser: the SQLSTATE class of a
// server error ("sqlstate 08" connection exception, "40" transaction
// rollback, "53" insufficient resources, "57" operator intervention, ...).
func (d *dialect) ErrorClass(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) && len(pe.Code) >= 2 {
		return "sqlstate " + pe.Code[:2]
	}
	return ""
}

func (d *dialect) Close() error {
	d.plans.close()
	d.tailMu.Lock()
	if d.tail != nil {
		_ = d.tail.Close(context.Background())
		d.tail = nil
	}
	d.tailMu.Unlock()
	d.pool.Close()
	return nil
}

// querier runs a txn's statements: a pgx.Tx (read transactions) or the
// pooled connection of a write transaction, which manages BEGIN and COMMIT
// itself so that they can share a pipeline with other statements.
type querier interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
	SendBatch(ctx context.Context, b *pgx.Batch) pgx.BatchResults
}

type txn struct {
	q querier
	// tx is set for read transactions, conn for write transactions (nil
	// once committed or rolled back: it is back in the pool).
	tx   pgx.Tx
	conn *pgxpool.Conn
	// locked is set for write transactions, whose kv_meta row was read
	// (and locked) at begin; SetRevision/SetCompact keep these current.
	locked                   bool
	lockedRev, lockedCompact int64
	// lockedAuthRev is auth_meta's revision, read right after the lock.
	lockedAuthRev int64
	// sessionMillis is the write transaction's idle timeout (see
	// CommitBatch).
	sessionMillis int64
	// plans is told of the revision a write transaction committed.
	plans *planRefresh
}

// errCommitRolledBack: COMMIT answered ROLLBACK, as PostgreSQL does for a
// transaction an earlier error aborted.
var errCommitRolledBack = errors.New("commit rolled back")

func checkCommit(ct pgconn.CommandTag) error {
	if ct.String() != "COMMIT" {
		return errCommitRolledBack
	}
	return nil
}

func (t *txn) Commit() error {
	if t.tx != nil {
		return t.tx.Commit(context.Background())
	}
	if t.conn == nil {
		return pgx.ErrTxClosed
	}
	ct, err := t.conn.Exec(context.Background(), "COMMIT")
	t.release()
	if err != nil {
		return err
	}
	return checkCommit(ct)
}

func (t *txn) Rollback() error {
	if t.tx != nil {
		return t.tx.Rollback(context.Background())
	}
	if t.conn == nil {
		return nil
	}
	var err error
	if t.conn.Conn().PgConn().TxStatus() != 'I' {
		_, err = t.conn.Exec(context.Background(), "ROLLBACK")
	}
	t.release()
	return err
}

// release returns a write transaction's connection to the pool, which
// closes it if it is still inside a transaction.
func (t *txn) release() {
	t.conn.Release()
	t.conn = nil
}

func (t *txn) Revisions(ctx context.Context) (int64, int64, error) {
	if t.locked {
		return t.lockedRev, t.lockedCompact, nil
	}
	var cur, compact int64
	err := t.q.QueryRow(ctx, qRevisions).Scan(&cur, &compact)
	return cur, compact, err
}

func (t *txn) SetRevision(ctx context.Context, rev int64) error {
	if _, err := t.q.Exec(ctx, qSetRevision, rev); err != nil {
		return err
	}
	t.lockedRev = rev
	return nil
}

func (t *txn) SetCompact(ctx context.Context, rev int64) error {
	if _, err := t.q.Exec(ctx, qSetCompact, rev); err != nil {
		return err
	}
	t.lockedCompact = rev
	return nil
}

func (t *txn) Timeline(ctx context.Context) (int64, error) {
	var tl int64
	err := t.q.QueryRow(ctx, qTimeline).Scan(&tl)
	return tl, err
}

func (t *txn) Fence(ctx context.Context, rev int64) (int64, error) {
	var tl int64
	if err := t.q.QueryRow(ctx, qFence, rev).Scan(&tl, nil); err != nil {
		return 0, err
	}
	t.lockedRev, t.lockedCompact = rev, rev
	return tl, nil
}

func (t *txn) queryIDs(ctx context.Context, q string, args ...any) ([]int64, error) {
	rows, err := t.q.Query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	return backends.ScanIDs(rows)
}
