// Package mysql is the MySQL 8 / MariaDB 10.6+ dialect, through
// go-sql-driver/mysql. Writers serialise on the kv_meta row (SELECT ... FOR
// UPDATE), so revisions commit in order; every write transaction updates
// kv_meta, which notify/binlog sees in the binary log as the commit's
// revision. Reads run in REPEATABLE READ read-only transactions: one
// snapshot per request. Lease expiry uses the database clock.
package mysql

import (
	"cmp"
	"context"
	"database/sql"
	"database/sql/driver"
	"embed"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	gomysql "github.com/go-sql-driver/mysql"

	"github.com/kvsql/kvsql/backends"
	"github.com/kvsql/kvsql/internal/dbnet"
)

//go:embed schema/*.sql
var schemaFS embed.FS

// MaxKeyBytes is the longest key this dialect stores (an InnoDB index limit).
const MaxKeyBytes = 2048

// Config configures Open.
type Config struct {
	// DSN is a kvsql endpoint: [mysql://]user:pass@tcp(host:3306)/db with
	// the driver's parameters and kvsql's TLS ones (see ParseEndpoint).
	DSN string
	// MaxOpenConns caps the connection pool (default 32).
	MaxOpenConns int
	// SessionTimeout is how long the server waits for a session of this
	// instance that holds the write lock (a write transaction) or the
	// leader lock and has gone silent — the instance froze or lost its
	// network — before it ends the session, so that its locks pass on.
	// 0 means backends.DefaultSessionTimeout. Whole seconds.
	SessionTimeout time.Duration
	Engine         backends.EngineConfig
}

// connCharset and connCollation are the character set every connection
// uses, whatever the server's default. kvsql stores bytes, so the choice
// matters only for how the server reads statement text: the write
// connections send arguments escaped into the text (InterpolateParams), and
// in a multibyte character set such as gbk or sjis a byte before the
// escaping backslash can swallow it, so that a quote in a key ends the
// string literal (SQL injection). utf8mb4 has no such sequence.
const (
	connCharset   = "utf8mb4"
	connCollation = "utf8mb4_bin"
)

// setCharset makes every connection of dc use connCharset (the driver sends
// SET NAMES after connecting, after any init_connect), and refuses session
// variables in the endpoint that would change it again afterwards.
func setCharset(dc *gomysql.Config) error {
	for name := range dc.Params {
		switch strings.ToLower(name) {
		case "character_set_client", "character_set_connection", "character_set_results", "collation_connection", "names":
			return fmt.Errorf("mysql: the endpoint sets %s; kvsql sets the connection character set itself (%s): remove it", name, connCharset)
		}
	}
	return dc.Apply(gomysql.Charset(connCharset, connCollation))
}

// Store is a backends.Engine on MySQL plus leader election and a member
// registry for several instances sharing one database.
type Store struct {
	*backends.Engine
	d      *dialect
	db     *sql.DB
	cfg    *gomysql.Config
	leader string // GET_LOCK name, per database
	log    *slog.Logger

	leadMu   sync.Mutex // guards leadConn
	leadConn *sql.Conn  // holds the leader lock while open
	// sessionTimeout is Config.SessionTimeout in whole seconds.
	sessionTimeout int
}

var _ backends.Backend = (*Store)(nil)

// Open connects, migrates the schema and starts the engine.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	dc, err := ParseEndpoint(cfg.DSN)
	if err != nil {
		return nil, err
	}
	dc.ClientFoundRows = true // UPDATE reports matched rows
	dc.ParseTime = false
	// Connections notice a dead server or network (dbnet) instead of
	// hanging for the kernel's 15 minutes.
	dc.DialFunc = dbnet.Dial
	if dc.Timeout == 0 {
		dc.Timeout = dbnet.ConnectTimeout
	}
	sessionSecs := max(1, int(cmp.Or(cfg.SessionTimeout, backends.DefaultSessionTimeout).Round(time.Second).Seconds()))
	sessionTimeout := strconv.Itoa(sessionSecs)
	if err := setCharset(dc); err != nil {
		return nil, err
	}
	conn, err := gomysql.NewConnector(dc)
	if err != nil {
		return nil, fmt.Errorf("mysql: %w", err)
	}
	db := sql.OpenDB(conn)
	n := cfg.MaxOpenConns
	if n <= 0 {
		n = 32
	}
	db.SetMaxOpenConns(n)
	db.SetMaxIdleConns(n)
	db.SetConnMaxLifetime(time.Hour)
	if err := db.PingContext(ctx); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("mysql: connect to %s: %w", dc.Addr, err)
	}
	if err := migrate(ctx, db, migrateLock+"."+dc.DBName); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("mysql: migrate: %w", err)
	}
	stmts, err := backends.PrepareAll(ctx, db, statements)
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("mysql: %w", err)
	}
	// The writer's own connections send several statements per round trip
	// (MultiStatements), with the arguments escaped into the text by the
	// driver (InterpolateParams; the server cannot prepare a multi-statement).
	wc := dc.Clone()
	wc.MultiStatements = true
	wc.InterpolateParams = true
	// Ask the server for max_allowed_packet at connect (0): the driver
	// then streams every argument that would not fit a packet as long data
	// instead of assuming its 64 MiB default and having the server reset
	// the connection.
	wc.MaxAllowedPacket = 0
	// A write transaction whose instance goes silent while it holds the
	// write lock is ended by the server after the session timeout.
	// MariaDB ends idle transactions (idle_transaction_timeout); MySQL has
	// no such setting, so its write connections are closed after that
	// long idle in or out of a transaction (wait_timeout), and the pool
	// retires idle ones before the server does.
	var version string
	if err := db.QueryRowContext(ctx, `SELECT VERSION()`).Scan(&version); err != nil {
		stmts.Close()
		_ = db.Close()
		return nil, fmt.Errorf("mysql: read the server version: %w", err)
	}
	mariaDB := strings.Contains(strings.ToLower(version), "mariadb")
	if wc.Params == nil {
		wc.Params = map[string]string{}
	}
	if mariaDB {
		wc.Params["idle_transaction_timeout"] = sessionTimeout
	} else {
		wc.Params["wait_timeout"] = sessionTimeout
	}
	wconn, err := gomysql.NewConnector(wc)
	if err != nil {
		stmts.Close()
		_ = db.Close()
		return nil, fmt.Errorf("mysql: %w", err)
	}
	wdb := sql.OpenDB(wconn)
	wdb.SetMaxOpenConns(writerConns)
	wdb.SetMaxIdleConns(writerConns)
	wdb.SetConnMaxLifetime(time.Hour)
	if !mariaDB {
		wdb.SetConnMaxIdleTime(cmp.Or(cfg.SessionTimeout, backends.DefaultSessionTimeout) / 2)
	}
	var maxPacket int64
	if err := db.QueryRowContext(ctx, `SELECT @@max_allowed_packet`).Scan(&maxPacket); err != nil {
		stmts.Close()
		_ = wdb.Close()
		_ = db.Close()
		return nil, fmt.Errorf("mysql: read max_allowed_packet: %w", err)
	}
	d := &dialect{db: db, wdb: wdb, stmts: stmts, inlineBytes: inlineBudget(maxPacket)}
	cfg.Engine.MaxKeyBytes = MaxKeyBytes
	if cfg.Engine.Database == "" {
		cfg.Engine.Database = fmt.Sprintf("MySQL at %s/%s", dc.Addr, dc.DBName)
	}
	log := cfg.Engine.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Store{Engine: backends.NewEngine(d, cfg.Engine), d: d, db: db, cfg: dc, leader: leaderLock + "." + dc.DBName, log: log, sessionTimeout: sessionSecs}, nil
}

// PoolStats implements backends.PoolReporter: the pool of reads and
// leases ("mysql") and the group-commit writer's ("mysql_writer").
func (d *dialect) PoolStats() []backends.PoolStats {
	return []backends.PoolStats{backends.SQLPoolStats("mysql", d.db), backends.SQLPoolStats("mysql_writer", d.wdb)}
}

// DB returns the connection pool.
func (s *Store) DB() *sql.DB { return s.db }

// DriverConfig returns the parsed connection settings (notify/binlog
// connects as a replica with them).
func (s *Store) DriverConfig() *gomysql.Config { return s.cfg.Clone() }

// Close stops the engine, gives up leadership and closes the pool.
func (s *Store) Close() error {
	err := s.Engine.Close()
	s.leadMu.Lock()
	if s.leadConn != nil {
		discardConn(s.leadConn)
		s.leadConn = nil
	}
	s.leadMu.Unlock()
	return err
}

// writerConns is the size of the write transactions' own pool: the
// group-commit writer and a compaction's history deletes.
const writerConns = 2

type dialect struct {
	db  *sql.DB
	wdb *sql.DB // write transactions, multi-statement: see BeginBatch
	// inlineBytes bounds the keys and values a write connection sends
	// inside statement text (see inlineBudget).
	inlineBytes int
	stmts       *backends.Prepared

	tailMu   sync.Mutex // guards tail and tailStmt
	tail     *sql.Conn  // TailChanges' own connection; nil until first used
	tailStmt *sql.Stmt  // qChangesUpToCurrent prepared on tail
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
	tx, err := d.db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true})
	if err != nil {
		return nil, err
	}
	return &txn{tx: tx, st: &backends.StmtTx{Tx: tx, Prepared: d.stmts}}, nil
}

func (d *dialect) BeginWrite(ctx context.Context) (backends.Tx, error) {
	tx, _, err := d.BeginBatch(ctx, nil)
	return tx, err
}

// ErrorClass implements backends.ErrorClasser: the server's error number
// ("mysql error 1205" lock wait timeout, 1213 deadlock, 1040 too many
// connections, ...), or "connection" for the driver's broken connection.
func (d *dialect) ErrorClass(err error) string {
	var me *gomysql.MySQLError
	switch {
	case errors.As(err, &me):
		return fmt.Sprintf("mysql error %d", me.Number)
	case errors.Is(err, gomysql.ErrInvalidConn):
		return "connection"
	}
	return ""
}

func (d *dialect) Close() error {
	d.tailMu.Lock()
	d.closeTail()
	d.tailMu.Unlock()
	d.stmts.Close()
	// sql.DB.Close's error is the first idle connection that failed to
	// say goodbye (COM_QUIT): one the server or the network already
	// dropped, after an outage the pool has not noticed, fails it with
	// "bad connection". Every transaction has ended by now, so nothing is
	// lost with such a connection, and no caller could act on the error.
	_ = d.wdb.Close()
	_ = d.db.Close()
	return nil
}

// stmtRunner runs a txn's statements: backends.StmtTx for read
// transactions, connStmts for write transactions.
type stmtRunner interface {
	Query(ctx context.Context, q string, args ...any) (*sql.Rows, error)
	Exec(ctx context.Context, q string, args ...any) (sql.Result, error)
	QueryRow(ctx context.Context, q string, args []any, dst ...any) error
}

// connStmts runs statements on a write transaction's connection, whose
// driver interpolates the arguments: one round trip per statement, no
// prepare.
type connStmts struct{ c *sql.Conn }

func (s connStmts) Query(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	return s.c.QueryContext(ctx, q, args...)
}

func (s connStmts) Exec(ctx context.Context, q string, args ...any) (sql.Result, error) {
	return s.c.ExecContext(ctx, q, args...)
}

func (s connStmts) QueryRow(ctx context.Context, q string, args []any, dst ...any) error {
	return s.c.QueryRowContext(ctx, q, args...).Scan(dst...)
}

type txn struct {
	// tx is set for read transactions, conn for write transactions (nil
	// once committed or rolled back).
	tx                       *sql.Tx
	conn                     *sql.Conn
	st                       stmtRunner
	locked                   bool
	lockedRev, lockedCompact int64
	// lockedAuthRev is auth_meta's revision, read right after the lock.
	lockedAuthRev uint64
	inlineBytes   int // write transactions: see inlineBudget
}

func (t *txn) Commit() error {
	if t.tx != nil {
		return t.tx.Commit()
	}
	if t.conn == nil {
		return sql.ErrTxDone
	}
	_, err := t.conn.ExecContext(context.Background(), "COMMIT")
	t.release(err)
	return err
}

func (t *txn) Rollback() error {
	if t.tx != nil {
		return t.tx.Rollback()
	}
	if t.conn == nil {
		return nil
	}
	_, err := t.conn.ExecContext(context.Background(), "ROLLBACK")
	t.release(err)
	return err
}

// release returns a write transaction's connection to its pool, or, after
// err, closes it: a connection that may still be inside a transaction must
// never be reused (the next START TRANSACTION would commit it).
func (t *txn) release(err error) {
	if err != nil {
		_ = t.conn.Raw(func(any) error { return driver.ErrBadConn })
	}
	_ = t.conn.Close()
	t.conn = nil
}

func (t *txn) Revisions(ctx context.Context) (int64, int64, error) {
	if t.locked {
		return t.lockedRev, t.lockedCompact, nil
	}
	var cur, compact int64
	err := t.st.QueryRow(ctx, qRevisions, nil, &cur, &compact)
	return cur, compact, err
}

func (t *txn) SetRevision(ctx context.Context, rev int64) error {
	if _, err := t.st.Exec(ctx, qSetRevision, rev); err != nil {
		return err
	}
	t.lockedRev = rev
	return nil
}

func (t *txn) SetCompact(ctx context.Context, rev int64) error {
	if _, err := t.st.Exec(ctx, qSetCompact, rev); err != nil {
		return err
	}
	t.lockedCompact = rev
	return nil
}

func (t *txn) Timeline(ctx context.Context) (int64, error) {
	var tl int64
	err := t.st.QueryRow(ctx, qTimeline, nil, &tl)
	return tl, err
}

func (t *txn) Fence(ctx context.Context, rev int64) (int64, error) {
	if _, err := t.st.Exec(ctx, qFence, rev, rev); err != nil {
		return 0, err
	}
	tl, err := t.Timeline(ctx)
	if err != nil {
		return 0, err
	}
	t.lockedRev, t.lockedCompact = rev, rev
	return tl, nil
}

func (t *txn) queryIDs(ctx context.Context, q string, args ...any) ([]int64, error) {
	rows, err := t.st.Query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	return backends.ScanIDs(rows)
}
