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
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"

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
	d := &dialect{pool: pool, sessionTimeout: timeout}
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

var _ backends.PoolReporter = (*Store)(nil)

// PoolStats implements backends.PoolReporter: the pgxpool (the LISTEN,
// tailer and leader connections are hijacked from it and not counted).
func (s *Store) PoolStats() []backends.PoolStats {
	st := s.pool.Stat()
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

// migrate applies schema/NNN_*.sql above the recorded version, under a
// transaction-scoped advisory lock so that instances starting together
// against an empty database apply each migration exactly once.
func migrate(ctx context.Context, pool *pgxpool.Pool) error {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback(context.Background()) }()
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(migrateLockKey)); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS kv_schema (version integer NOT NULL)`); err != nil {
		return err
	}
	rows, err := tx.Query(ctx, `SELECT version FROM kv_schema`)
	if err != nil {
		return err
	}
	applied, err := backends.ScanVersions(rows)
	rows.Close()
	if err != nil {
		return err
	}
	ms, err := backends.Migrations(schemaFS, "schema")
	if err != nil {
		return err
	}
	for _, m := range backends.Pending(ms, applied) {
		if _, err := tx.Exec(ctx, m.SQL); err != nil {
			return fmt.Errorf("migration %s: %w", m.Name, err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO kv_schema (version) VALUES ($1)`, m.Version); err != nil {
			return fmt.Errorf("migration %s: %w", m.Name, err)
		}
	}
	return tx.Commit(ctx)
}

type dialect struct {
	pool *pgxpool.Pool
	// sessionTimeout is idle_in_transaction_session_timeout for write
	// transactions (milliseconds, as a setting's text).
	sessionTimeout string

	tailMu sync.Mutex // guards tail
	tail   *pgx.Conn  // TailChanges' own connection; nil until first used
}

var _ backends.Dialect = (*dialect)(nil)

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

var _ backends.BatchBeginner = (*dialect)(nil)

// BeginBatch implements backends.BatchBeginner: BEGIN, the kv_meta lock
// and the read of keys go to the server as one pipeline, so the lock is held
// from the server's point of view for the round trip that answers them,
// not for three. In READ COMMITTED each statement takes its own snapshot
// when it starts, after the lock statement has finished, so the keys are
// read under the lock.
func (d *dialect) BeginBatch(ctx context.Context, keys [][]byte) (backends.Tx, []*mvccpb.KeyValue, error) {
	c, err := d.pool.Acquire(ctx)
	if err != nil {
		return nil, nil, err
	}
	t := &txn{q: c, conn: c, locked: true}
	b := &pgx.Batch{}
	b.Queue(qBeginWrite)
	// A transaction holding the write lock whose instance goes silent is
	// ended by the server after the session timeout (before the lock, so
	// that a wait for it counts as well).
	b.Queue(qIdleTxTimeout, d.sessionTimeout)
	b.Queue(qLockMeta).QueryRow(func(r pgx.Row) error { return r.Scan(&t.lockedRev, &t.lockedCompact) })
	var kvs []*mvccpb.KeyValue
	if len(keys) > 0 {
		b.Queue(qCurrentMany, keys).Query(func(rows pgx.Rows) error {
			var err error
			kvs, err = backends.ScanKVs(rows)
			return err
		})
	}
	if err := c.SendBatch(ctx, b).Close(); err != nil {
		_ = t.Rollback()
		return nil, nil, fmt.Errorf("lock kv_meta: %w", err)
	}
	return t, kvs, nil
}

var _ backends.ChangesReader = (*dialect)(nil)

// ReadChanges implements backends.ChangesReader: one statement.
func (d *dialect) ReadChanges(ctx context.Context, after, upTo int64, maxBytes int) (cur, compact int64, evs []*mvccpb.Event, err error) {
	rows, err := d.pool.Query(ctx, qChangesUpToCurrent, after, upTo)
	if err != nil {
		return 0, 0, nil, err
	}
	defer rows.Close()
	return backends.ScanChanges(rows, maxBytes)
}

// TailChanges implements backends.ChangesReader on a connection taken from
// the pool once and kept (hijacked: the pool never hands it out). After an
// error it is closed and replaced on the next call.
func (d *dialect) TailChanges(ctx context.Context, after, upTo int64, maxBytes int) (cur, compact int64, evs []*mvccpb.Event, err error) {
	d.tailMu.Lock()
	defer d.tailMu.Unlock()
	if d.tail == nil {
		c, err := d.pool.Acquire(ctx)
		if err != nil {
			return 0, 0, nil, err
		}
		d.tail = c.Hijack()
	}
	rows, err := d.tail.Query(ctx, qChangesUpToCurrent, after, upTo)
	if err == nil {
		cur, compact, evs, err = backends.ScanChanges(rows, maxBytes)
		rows.Close()
		if err == nil {
			err = rows.Err()
		}
	}
	if err != nil {
		_ = d.tail.Close(context.Background())
		d.tail = nil
		return 0, 0, nil, err
	}
	return cur, compact, evs, nil
}

var _ backends.LatestGetter = (*dialect)(nil)

func (d *dialect) GetLatest(ctx context.Context, key []byte, keysOnly bool) (int64, *mvccpb.KeyValue, error) {
	var cur int64
	var create, mod, version, lease *int64
	var value []byte
	if err := d.pool.QueryRow(ctx, qGetLatest, key, keysOnly).Scan(&cur, &create, &mod, &version, &lease, &value); err != nil {
		return 0, nil, err
	}
	if mod == nil {
		return cur, nil, nil
	}
	return cur, &mvccpb.KeyValue{Key: key, CreateRevision: *create, ModRevision: *mod, Version: *version, Lease: *lease, Value: value}, nil
}

func (d *dialect) GetLatestMany(ctx context.Context, keys [][]byte, keysOnly bool) (int64, []*mvccpb.KeyValue, error) {
	rows, err := d.pool.Query(ctx, qGetLatestMany, keys, keysOnly)
	if err != nil {
		return 0, nil, err
	}
	defer rows.Close()
	return backends.ScanLatest(rows)
}

// BeginCompact implements backends.Dialect: a READ COMMITTED transaction
// that does not touch kv_meta.
func (d *dialect) BeginCompact(ctx context.Context) (backends.CompactTx, error) {
	tx, err := d.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.ReadCommitted})
	if err != nil {
		return nil, err
	}
	return &compactTx{tx: tx}, nil
}

// RefusedWrite implements backends.Dialect: a data exception (class 22), an
// integrity constraint (23) or a program limit such as an index row too
// large (54). The server then aborts the transaction.
func (d *dialect) RefusedWrite(err error) bool {
	var pe *pgconn.PgError
	if !errors.As(err, &pe) || len(pe.Code) < 2 {
		return false
	}
	switch pe.Code[:2] {
	case "22", "23", "54":
		return true
	}
	return false
}

// Size implements backends.Dialect (see qSize).
func (d *dialect) Size(ctx context.Context) (int64, int64, error) {
	var total, inUse int64
	if err := d.pool.QueryRow(ctx, qSize).Scan(&total, &inUse); err != nil {
		return 0, 0, err
	}
	return total, inUse, nil
}

// Defragment runs VACUUM (ANALYZE) on kvsql's tables (see qVacuum; VACUUM
// FULL would lock them).
func (d *dialect) Defragment(ctx context.Context) error {
	if _, err := d.pool.Exec(ctx, qVacuum); err != nil {
		return fmt.Errorf("vacuum: %w", err)
	}
	return nil
}

var _ backends.ErrorClasser = (*dialect)(nil)

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

var _ backends.BatchCommitter = (*txn)(nil)

// CommitBatch implements backends.BatchCommitter: the kv_log and
// kv_current writes, the kv_meta update with its NOTIFY, and COMMIT go to
// the server as one pipeline. If a statement fails the server skips the
// rest, COMMIT included, and the transaction stays aborted until Rollback.
func (t *txn) CommitBatch(ctx context.Context, rows []backends.LogRow, rev int64) error {
	if t.conn == nil {
		return pgx.ErrTxClosed
	}
	b := &pgx.Batch{}
	if len(rows) > 0 {
		queueWrite(b, rows)
	}
	if rev > 0 {
		b.Queue(qSetRevision, rev)
	}
	b.Queue("COMMIT").Exec(checkCommit)
	if err := t.conn.SendBatch(ctx, b).Close(); err != nil {
		return err
	}
	t.release()
	if rev > 0 {
		t.lockedRev = rev
	}
	return nil
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

func sqlLimit(limit int64) any {
	if limit <= 0 {
		return nil
	}
	return limit
}

func (t *txn) Range(ctx context.Context, kr backends.KeyRange, rev, limit int64, keysOnly bool) ([]*mvccpb.KeyValue, error) {
	q, args := rangeStatements.Range(kr, rev, sqlLimit(limit), keysOnly)
	return t.queryKVs(ctx, q, args...)
}

func (t *txn) queryKVs(ctx context.Context, q string, args ...any) ([]*mvccpb.KeyValue, error) {
	rows, err := t.q.Query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	return backends.ScanKVs(rows)
}

func (t *txn) Count(ctx context.Context, kr backends.KeyRange, rev int64) (int64, error) {
	q, args := rangeStatements.Count(kr, rev)
	var n int64
	err := t.q.QueryRow(ctx, q, args...).Scan(&n)
	return n, err
}

// Write appends rows to kv_log and applies the newest row of each key to
// kv_current: two statements however many rows there are, in one round trip.
func (t *txn) Write(ctx context.Context, rows []backends.LogRow) error {
	if len(rows) == 0 {
		return nil
	}
	b := &pgx.Batch{}
	queueWrite(b, rows)
	if err := t.q.SendBatch(ctx, b).Close(); err != nil {
		return fmt.Errorf("write revisions %d..%d: %w", rows[0].Rev, rows[len(rows)-1].Rev, err)
	}
	return nil
}

// queueWrite queues the two statements of Write on b.
func queueWrite(b *pgx.Batch, rows []backends.LogRow) {
	n := len(rows)
	revs, subs, creates, prevs, versions, leases := make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n), make([]int64, n)
	keys, values := make([][]byte, n), make([][]byte, n)
	deleted := make([]bool, n)
	last := make(map[string]int, n)
	for i, r := range rows {
		revs[i], subs[i], keys[i], deleted[i] = r.Rev, r.Sub, r.Key, r.Deleted
		creates[i], prevs[i], versions[i], leases[i], values[i] = r.CreateRev, r.PrevRev, r.Version, r.Lease, r.Value
		if values[i] == nil {
			values[i] = []byte{}
		}
		last[string(r.Key)] = i
	}
	b.Queue(qAppendLog, revs, subs, keys, deleted, creates, prevs, versions, leases, values)
	m := len(last)
	cKeys, cValues := make([][]byte, 0, m), make([][]byte, 0, m)
	cDeleted := make([]bool, 0, m)
	cCreates, cMods, cVersions, cLeases := make([]int64, 0, m), make([]int64, 0, m), make([]int64, 0, m), make([]int64, 0, m)
	for i := range rows {
		if last[string(rows[i].Key)] != i {
			continue
		}
		cKeys, cDeleted, cValues = append(cKeys, keys[i]), append(cDeleted, deleted[i]), append(cValues, values[i])
		cCreates, cMods, cVersions, cLeases = append(cCreates, creates[i]), append(cMods, revs[i]), append(cVersions, versions[i]), append(cLeases, leases[i])
	}
	b.Queue(qApplyCurrent, cKeys, cDeleted, cCreates, cMods, cVersions, cLeases, cValues)
}

var _ backends.CurrentGetter = (*txn)(nil)

// Current implements backends.CurrentGetter.
func (t *txn) Current(ctx context.Context, keys [][]byte) ([]*mvccpb.KeyValue, error) {
	return t.queryKVs(ctx, qCurrentMany, keys)
}

func (t *txn) Changes(ctx context.Context, after, upTo int64, maxBytes int) ([]*mvccpb.Event, error) {
	rows, err := t.q.Query(ctx, qChanges, after, upTo)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	return backends.ScanEvents(rows, maxBytes)
}

func (t *txn) History(ctx context.Context, afterRev, afterSub int64, limit int) ([]backends.LogRow, error) {
	rows, err := t.q.Query(ctx, qHistory, afterRev, afterSub, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	return backends.ScanLogRows(rows)
}

func (t *txn) LeaseInsert(ctx context.Context, id, ttl int64) (bool, error) {
	tag, err := t.q.Exec(ctx, qLeaseInsert, id, ttl)
	if err != nil {
		return false, err
	}
	return tag.RowsAffected() == 1, nil
}

func (t *txn) LeaseGet(ctx context.Context, id int64) (ttl, remaining int64, found bool, err error) {
	err = t.q.QueryRow(ctx, qLeaseGet, id).Scan(&ttl, &remaining)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, 0, false, nil
	}
	return ttl, remaining, err == nil, err
}

func (t *txn) LeaseRenew(ctx context.Context, id int64) (int64, bool, error) {
	var ttl int64
	err := t.q.QueryRow(ctx, qLeaseRenew, id).Scan(&ttl)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, false, nil
	}
	return ttl, err == nil, err
}

func (t *txn) LeaseDelete(ctx context.Context, id int64) error {
	_, err := t.q.Exec(ctx, qLeaseDelete, id)
	return err
}

func (t *txn) LeaseExtendAll(ctx context.Context) (int64, error) {
	ct, err := t.q.Exec(ctx, qLeaseExtend)
	return ct.RowsAffected(), err
}

func (t *txn) LeaseKeys(ctx context.Context, id int64) ([]*mvccpb.KeyValue, error) {
	return t.queryKVs(ctx, qLeaseKeys, id)
}

func (t *txn) Leases(ctx context.Context) ([]int64, error) {
	return t.queryIDs(ctx, qLeases)
}

func (t *txn) ExpiredLeases(ctx context.Context, limit int) ([]int64, error) {
	return t.queryIDs(ctx, qLeaseExpired, limit)
}

func (t *txn) AlarmList(ctx context.Context) ([]*pb.AlarmMember, error) {
	rows, err := t.q.Query(ctx, qAlarms)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	return backends.ScanAlarms(rows)
}

func (t *txn) AlarmInsert(ctx context.Context, member uint64, alarm int32) (bool, error) {
	tag, err := t.q.Exec(ctx, qAlarmInsert, int64(member), alarm)
	return tag.RowsAffected() > 0, err
}

func (t *txn) AlarmDelete(ctx context.Context, member uint64, alarm int32) (bool, error) {
	tag, err := t.q.Exec(ctx, qAlarmDelete, int64(member), alarm)
	return tag.RowsAffected() > 0, err
}

func (t *txn) queryIDs(ctx context.Context, q string, args ...any) ([]int64, error) {
	rows, err := t.q.Query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	return backends.ScanIDs(rows)
}

// compactTx implements backends.CompactTx.
type compactTx struct{ tx pgx.Tx }

func (c *compactTx) CleanedTo(ctx context.Context) (int64, error) {
	var rev int64
	err := c.tx.QueryRow(ctx, qCleanedTo).Scan(&rev)
	return rev, err
}

func (c *compactTx) SetCleanedTo(ctx context.Context, rev int64) error {
	_, err := c.tx.Exec(ctx, qSetCleanedTo, rev)
	return err
}

func (c *compactTx) StepEnd(ctx context.Context, from, upTo int64, limit int) (int64, error) {
	var rev int64
	err := c.tx.QueryRow(ctx, qStepEnd, from, upTo, limit).Scan(&rev)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	return rev, err
}

func (c *compactTx) DeleteSuperseded(ctx context.Context, compact, from, to int64) (int64, error) {
	older, err := c.tx.Exec(ctx, qDeleteSuperseded, compact, from, to)
	if err != nil {
		return 0, err
	}
	tombs, err := c.tx.Exec(ctx, qDeleteTombstones, compact, from, to)
	if err != nil {
		return 0, err
	}
	return older.RowsAffected() + tombs.RowsAffected(), nil
}

func (c *compactTx) Commit() error   { return c.tx.Commit(context.Background()) }
func (c *compactTx) Rollback() error { return c.tx.Rollback(context.Background()) }

func (t *txn) LeaseRows(ctx context.Context, afterID int64, limit int) ([]backends.Lease, error) {
	rows, err := t.q.Query(ctx, qLeaseRows, afterID, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	return backends.ScanLeases(rows)
}
