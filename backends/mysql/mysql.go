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
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	gomysql "github.com/go-sql-driver/mysql"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"

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

var _ backends.PoolReporter = (*Store)(nil)

// PoolStats implements backends.PoolReporter: the pool of reads and
// leases ("mysql") and the group-commit writer's ("mysql_writer").
func (s *Store) PoolStats() []backends.PoolStats {
	d := s.d
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

// migrate applies schema/NNN_*.sql above the recorded version. MySQL DDL
// commits implicitly, so instances starting together serialise on a named
// lock instead of a transaction; each statement of a file runs in order.
func migrate(ctx context.Context, db *sql.DB, lock string) error {
	c, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	var got sql.NullInt64
	if err := c.QueryRowContext(ctx, qGetLock, lock, 60).Scan(&got); err != nil || got.Int64 != 1 {
		return fmt.Errorf("take migration lock %s (another instance may be stuck migrating): %w", lock, cmpErr(err, errors.New("not granted within 60 s")))
	}
	defer func() { _, _ = c.ExecContext(context.WithoutCancel(ctx), qReleaseLck, lock) }()
	if _, err := c.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS kv_schema (version INT NOT NULL) ENGINE=InnoDB`); err != nil {
		return err
	}
	rows, err := c.QueryContext(ctx, `SELECT version FROM kv_schema`)
	if err != nil {
		return err
	}
	applied, err := backends.ScanVersions(rows)
	_ = rows.Close()
	if err != nil {
		return err
	}
	ms, err := backends.Migrations(schemaFS, "schema")
	if err != nil {
		return err
	}
	for _, m := range backends.Pending(ms, applied) {
		for _, stmt := range splitStatements(m.SQL) {
			if _, err := c.ExecContext(ctx, stmt); err != nil && !alreadyApplied(err) {
				return fmt.Errorf("migration %s: %w", m.Name, err)
			}
		}
		if _, err := c.ExecContext(ctx, `INSERT INTO kv_schema (version) VALUES (?)`, m.Version); err != nil {
			return fmt.Errorf("migration %s: %w", m.Name, err)
		}
	}
	return nil
}

// cmpErr returns err, or other when err is nil.
func cmpErr(err, other error) error {
	if err != nil {
		return err
	}
	return other
}

// alreadyApplied reports whether a migration statement failed only because
// it took effect before: MySQL commits each DDL statement on its own, so a
// process that died between an ALTER TABLE and recording the version runs
// the ALTER again on its next start. Only adding a column or an index that
// exists is tolerated, not creating a table that exists (that may be
// someone else's table).
func alreadyApplied(err error) bool {
	var me *gomysql.MySQLError
	return errors.As(err, &me) && (me.Number == 1060 || me.Number == 1061) // ER_DUP_FIELDNAME, ER_DUP_KEYNAME
}

// splitStatements splits a schema file on semicolons that end a line,
// dropping comment lines.
func splitStatements(body string) []string {
	var out []string
	var cur strings.Builder
	for _, line := range strings.Split(body, "\n") {
		if t := strings.TrimSpace(line); t == "" || strings.HasPrefix(t, "--") {
			continue
		}
		cur.WriteString(line)
		cur.WriteByte('\n')
		if strings.HasSuffix(strings.TrimSpace(line), ";") {
			out = append(out, strings.TrimSuffix(strings.TrimSpace(cur.String()), ";"))
			cur.Reset()
		}
	}
	return out
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

var _ backends.Dialect = (*dialect)(nil)

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

var _ backends.BatchBeginner = (*dialect)(nil)

// BeginBatch implements backends.BatchBeginner: setting READ COMMITTED,
// START TRANSACTION, the kv_meta lock and the read of keys are one
// multi-statement query, one round trip. The statements run in order, and
// in READ COMMITTED each consistent read starts a fresh snapshot, so the
// keys are read under the lock. The transaction runs on a connection of
// the writers' pool; START TRANSACTION and COMMIT are plain statements on
// it, so that they can share a round trip with others.
func (d *dialect) BeginBatch(ctx context.Context, keys [][]byte) (backends.Tx, []*mvccpb.KeyValue, error) {
	c, err := d.wdb.Conn(ctx)
	if err != nil {
		return nil, nil, err
	}
	t := &txn{conn: c, st: connStmts{c}, locked: true, inlineBytes: d.inlineBytes}
	q, args := qBeginWrite, []any(nil)
	inline, keyBytes := keys, 0
	for _, k := range keys {
		keyBytes += len(k)
	}
	if len(inline) > writeChunk || 2*keyBytes > d.inlineBytes {
		inline = nil
	}
	if len(inline) > 0 {
		q += ";\n" + qCurrentManyHead + repeatGroup("?", len(inline)) + qPlaceholderTail
		for _, k := range inline {
			args = append(args, k)
		}
	}
	kvs, err := t.begin(ctx, q, args, len(inline) > 0)
	if err != nil {
		_ = t.Rollback()
		return nil, nil, fmt.Errorf("lock kv_meta: %w", err)
	}
	if len(keys) > 0 && len(inline) == 0 {
		if kvs, err = t.Current(ctx, keys); err != nil {
			_ = t.Rollback()
			return nil, nil, err
		}
	}
	return t, kvs, nil
}

// begin runs BeginBatch's query: its result sets with columns are the
// kv_meta row and, if withKeys, the keys' current rows.
func (t *txn) begin(ctx context.Context, q string, args []any, withKeys bool) ([]*mvccpb.KeyValue, error) {
	rows, err := t.conn.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var kvs []*mvccpb.KeyValue
	sets := 0
	for {
		if cols, err := rows.Columns(); err == nil && len(cols) > 0 {
			switch sets {
			case 0:
				if !rows.Next() {
					if err := rows.Err(); err != nil {
						return nil, err
					}
					return nil, sql.ErrNoRows
				}
				if err := rows.Scan(&t.lockedRev, &t.lockedCompact); err != nil {
					return nil, err
				}
				for rows.Next() {
				}
			case 1:
				if kvs, err = backends.ScanKVs(rows); err != nil {
					return nil, err
				}
			}
			sets++
		}
		if !rows.NextResultSet() {
			break
		}
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if want := map[bool]int{false: 1, true: 2}[withKeys]; sets != want {
		return nil, fmt.Errorf("begin write: %d result sets, want %d", sets, want)
	}
	return kvs, nil
}

var _ backends.LatestGetter = (*dialect)(nil)

func (d *dialect) GetLatest(ctx context.Context, key []byte, keysOnly bool) (int64, *mvccpb.KeyValue, error) {
	var cur int64
	var create, mod, version, lease sql.NullInt64
	var value []byte
	if err := d.stmts.Stmt(qGetLatest).QueryRowContext(ctx, keysOnly, key).Scan(&cur, &create, &mod, &version, &lease, &value); err != nil {
		return 0, nil, err
	}
	if !mod.Valid {
		return cur, nil, nil
	}
	if value == nil {
		value = []byte{}
	}
	return cur, &mvccpb.KeyValue{Key: key, CreateRevision: create.Int64, ModRevision: mod.Int64, Version: version.Int64, Lease: lease.Int64, Value: value}, nil
}

func (d *dialect) GetLatestMany(ctx context.Context, keys [][]byte, keysOnly bool) (int64, []*mvccpb.KeyValue, error) {
	i, _ := slices.BinarySearch(getManySizes, len(keys))
	if i == len(getManySizes) {
		return 0, nil, fmt.Errorf("get %d keys in one statement: at most %d", len(keys), backends.MaxGetBatch)
	}
	args := make([]any, 0, 1+getManySizes[i])
	args = append(args, keysOnly)
	for _, k := range keys {
		args = append(args, k)
	}
	for len(args) < cap(args) {
		args = append(args, keys[len(keys)-1])
	}
	rows, err := d.stmts.Stmt(qGetLatestMany(getManySizes[i])).QueryContext(ctx, args...)
	if err != nil {
		return 0, nil, err
	}
	defer rows.Close()
	return backends.ScanLatest(rows)
}

// BeginCompact implements backends.Dialect: a READ COMMITTED transaction
// on the read pool (prepared statements) that does not touch kv_meta. READ
// COMMITTED keeps InnoDB from taking gap locks on the key index, where
// writers insert.
func (d *dialect) BeginCompact(ctx context.Context) (backends.CompactTx, error) {
	tx, err := d.db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	if err != nil {
		return nil, err
	}
	return &compactTx{tx: tx, st: backends.StmtTx{Tx: tx, Prepared: d.stmts}}, nil
}

// refusedErrors are the server errors that refuse a write for what it
// writes; the statement fails, and kvsql's multi-statement writes stop
// before their COMMIT.
var refusedErrors = map[uint16]bool{
	1048: true, // ER_BAD_NULL_ERROR
	1062: true, // ER_DUP_ENTRY
	1153: true, // ER_NET_PACKET_TOO_LARGE
	1264: true, // ER_WARN_DATA_OUT_OF_RANGE
	1366: true, // ER_TRUNCATED_WRONG_VALUE_FOR_FIELD
	1406: true, // ER_DATA_TOO_LONG
	1644: true, // ER_SIGNAL_EXCEPTION (a trigger's SIGNAL)
	3819: true, // ER_CHECK_CONSTRAINT_VIOLATED (MySQL)
	4025: true, // ER_CONSTRAINT_FAILED (MariaDB)
}

// RefusedWrite implements backends.Dialect.
func (d *dialect) RefusedWrite(err error) bool {
	var me *gomysql.MySQLError
	if errors.As(err, &me) {
		return refusedErrors[me.Number]
	}
	// The driver refuses a packet over max_allowed_packet before sending it.
	return errors.Is(err, gomysql.ErrPktTooLarge)
}

// Size implements backends.Dialect (see qSize).
func (d *dialect) Size(ctx context.Context) (int64, int64, error) {
	var size, inUse int64
	err := d.db.QueryRowContext(ctx, qSize).Scan(&size, &inUse)
	return size, inUse, err
}

// Defragment implements backends.Dialect (see qOptimize). OPTIMIZE TABLE
// reports a failure as a result row, not as an error.
func (d *dialect) Defragment(ctx context.Context) error {
	rows, err := d.db.QueryContext(ctx, qOptimize)
	if err != nil {
		return err
	}
	defer rows.Close()
	var errs []error
	for rows.Next() {
		var table, op, kind, text string
		if err := rows.Scan(&table, &op, &kind, &text); err != nil {
			return err
		}
		if strings.EqualFold(kind, "error") {
			errs = append(errs, fmt.Errorf("optimize %s: %s", table, text))
		}
	}
	return errors.Join(append(errs, rows.Err())...)
}

var _ backends.ErrorClasser = (*dialect)(nil)

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

var _ backends.ChangesReader = (*dialect)(nil)

// ReadChanges implements backends.ChangesReader: one statement.
func (d *dialect) ReadChanges(ctx context.Context, after, upTo int64, maxBytes int) (cur, compact int64, evs []*mvccpb.Event, err error) {
	rows, err := d.stmts.Stmt(qChangesUpToCurrent).QueryContext(ctx, after, upTo)
	if err != nil {
		return 0, 0, nil, err
	}
	defer rows.Close()
	return backends.ScanChanges(rows, maxBytes)
}

// TailChanges implements backends.ChangesReader on a connection of the
// read pool kept for it, with the statement prepared on it once. After an
// error both are released and taken again on the next call.
func (d *dialect) TailChanges(ctx context.Context, after, upTo int64, maxBytes int) (cur, compact int64, evs []*mvccpb.Event, err error) {
	d.tailMu.Lock()
	defer d.tailMu.Unlock()
	if d.tail == nil {
		c, err := d.db.Conn(ctx)
		if err != nil {
			return 0, 0, nil, err
		}
		st, err := c.PrepareContext(ctx, qChangesUpToCurrent)
		if err != nil {
			_ = c.Close()
			return 0, 0, nil, err
		}
		d.tail, d.tailStmt = c, st
	}
	rows, err := d.tailStmt.QueryContext(ctx, after, upTo)
	if err == nil {
		cur, compact, evs, err = backends.ScanChanges(rows, maxBytes)
		if cerr := rows.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		d.closeTail()
		return 0, 0, nil, err
	}
	return cur, compact, evs, nil
}

// closeTail releases the tailer's connection; the caller holds tailMu.
func (d *dialect) closeTail() {
	if d.tail == nil {
		return
	}
	_ = d.tailStmt.Close()
	// Raw's error makes database/sql discard the connection instead of
	// pooling one that may be broken.
	_ = d.tail.Raw(func(any) error { return driver.ErrBadConn })
	_ = d.tail.Close()
	d.tail, d.tailStmt = nil, nil
}

func (d *dialect) Close() error {
	d.tailMu.Lock()
	d.closeTail()
	d.tailMu.Unlock()
	d.stmts.Close()
	werr := d.wdb.Close()
	if err := d.db.Close(); err != nil {
		return err
	}
	return werr
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
	inlineBytes              int // write transactions: see inlineBudget
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

var _ backends.BatchCommitter = (*txn)(nil)

// inlineBudget returns how many bytes of keys and values a write
// connection may put into the text of one query, for a server whose
// max_allowed_packet is maxPacket: the driver's escaping can double them
// and CommitBatch's query carries each value twice (kv_log and
// kv_current), so a quarter of the packet, less room for the SQL, capped
// at 4 MiB. Larger writes go through server-side prepared statements,
// whose large arguments the driver streams in pieces, so any batch the
// server accepts at all fits.
func inlineBudget(maxPacket int64) int {
	return int(max(min(maxPacket/4-64<<10, 4<<20), 0))
}

// CommitBatch implements backends.BatchCommitter: the kv_log insert, the
// kv_current deletes and upserts, the kv_meta update and COMMIT are one
// multi-statement query. MySQL stops at the first statement that fails,
// so COMMIT runs only if everything before it succeeded.
func (t *txn) CommitBatch(ctx context.Context, rows []backends.LogRow, rev int64) error {
	if t.conn == nil {
		return sql.ErrTxDone
	}
	size := 0
	for _, r := range rows {
		size += len(r.Key) + len(r.Value)
	}
	if len(rows) > writeChunk || size > t.inlineBytes {
		if err := t.Write(ctx, rows); err != nil {
			return err
		}
		rows = nil
	}
	var q strings.Builder
	var args []any
	if len(rows) > 0 {
		for _, s := range chunkStatements(rows) {
			q.WriteString(s.q)
			q.WriteString(";\n")
			args = append(args, s.args...)
		}
	}
	if rev > 0 {
		q.WriteString(qSetRevision)
		q.WriteString(";\n")
		args = append(args, rev)
	}
	q.WriteString("COMMIT")
	if _, err := t.conn.ExecContext(ctx, q.String(), args...); err != nil {
		return err
	}
	t.release(nil)
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

func sqlLimit(limit int64) int64 {
	if limit <= 0 {
		return math.MaxInt64
	}
	return limit
}

func (t *txn) Range(ctx context.Context, kr backends.KeyRange, rev, limit int64, keysOnly bool) ([]*mvccpb.KeyValue, error) {
	q, args := rangeStatements.Range(kr, rev, sqlLimit(limit), keysOnly)
	return t.queryKVs(ctx, q, args...)
}

func (t *txn) queryKVs(ctx context.Context, q string, args ...any) ([]*mvccpb.KeyValue, error) {
	rows, err := t.st.Query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	return backends.ScanKVs(rows)
}

func (t *txn) Count(ctx context.Context, kr backends.KeyRange, rev int64) (int64, error) {
	q, args := rangeStatements.Count(kr, rev)
	var n int64
	err := t.st.QueryRow(ctx, q, args, &n)
	return n, err
}

// writeChunk bounds the rows per statement (MySQL allows 65535 placeholders).
const writeChunk = 500

// repeatGroup returns n copies of group joined by commas.
func repeatGroup(group string, n int) string {
	return strings.TrimSuffix(strings.Repeat(group+",", n), ",")
}

// Write appends rows to kv_log and applies the newest row of each key to
// kv_current, a few multi-row statements per chunk of rows.
func (t *txn) Write(ctx context.Context, rows []backends.LogRow) error {
	for len(rows) > 0 {
		n := min(len(rows), writeChunk)
		if err := t.writeChunk(ctx, rows[:n]); err != nil {
			return err
		}
		rows = rows[n:]
	}
	return nil
}

// statement is one statement with its arguments.
type statement struct {
	q    string
	args []any
}

// chunkStatements returns the statements that append rows (at most
// writeChunk) to kv_log and apply the newest row of each key to
// kv_current.
func chunkStatements(rows []backends.LogRow) []statement {
	args := make([]any, 0, len(rows)*9)
	last := make(map[string]int, len(rows))
	for i, r := range rows {
		args = append(args, r.Rev, r.Sub, r.Key, r.Deleted, r.CreateRev, r.PrevRev, r.Version, r.Lease, nonNil(r.Value))
		last[string(r.Key)] = i
	}
	out := []statement{{qInsertLogHead + repeatGroup(qInsertLogRow, len(rows)), args}}
	var dels, puts []any
	nPuts := 0
	for i, r := range rows {
		if last[string(r.Key)] != i {
			continue
		}
		if r.Deleted {
			dels = append(dels, r.Key)
		} else {
			puts = append(puts, r.Key, r.CreateRev, r.Rev, r.Version, r.Lease, nonNil(r.Value))
			nPuts++
		}
	}
	if len(dels) > 0 {
		out = append(out, statement{qDeleteCurHead + repeatGroup("?", len(dels)) + qPlaceholderTail, dels})
	}
	if nPuts > 0 {
		out = append(out, statement{qUpsertCurHead + repeatGroup(qUpsertCurRow, nPuts) + qUpsertCurTail, puts})
	}
	return out
}

func (t *txn) writeChunk(ctx context.Context, rows []backends.LogRow) error {
	size := 0
	for _, r := range rows {
		size += len(r.Key) + len(r.Value)
	}
	for _, s := range chunkStatements(rows) {
		var err error
		if t.conn != nil && 2*size > t.inlineBytes {
			err = t.execPrepared(ctx, s.q, s.args...)
		} else {
			_, err = t.st.Exec(ctx, s.q, s.args...)
		}
		if err != nil {
			return fmt.Errorf("write revisions %d..%d: %w", rows[0].Rev, rows[len(rows)-1].Rev, err)
		}
	}
	return nil
}

// execPrepared runs q on a write transaction's connection as a server-side
// prepared statement: the driver then sends large arguments in pieces
// instead of escaping them into one max_allowed_packet-bounded query.
func (t *txn) execPrepared(ctx context.Context, q string, args ...any) error {
	stmt, err := t.conn.PrepareContext(ctx, q)
	if err != nil {
		return err
	}
	defer stmt.Close()
	_, err = stmt.ExecContext(ctx, args...)
	return err
}

var _ backends.CurrentGetter = (*txn)(nil)

// Current implements backends.CurrentGetter.
func (t *txn) Current(ctx context.Context, keys [][]byte) ([]*mvccpb.KeyValue, error) {
	var out []*mvccpb.KeyValue
	for len(keys) > 0 {
		n := min(len(keys), writeChunk)
		args := make([]any, n)
		for i, k := range keys[:n] {
			args[i] = k
		}
		kvs, err := t.queryKVs(ctx, qCurrentManyHead+repeatGroup("?", n)+qPlaceholderTail, args...)
		if err != nil {
			return nil, err
		}
		out = append(out, kvs...)
		keys = keys[n:]
	}
	return out, nil
}

func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

func (t *txn) Changes(ctx context.Context, after, upTo int64, maxBytes int) ([]*mvccpb.Event, error) {
	rows, err := t.st.Query(ctx, qChanges, after, upTo)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	return backends.ScanEvents(rows, maxBytes)
}

func (t *txn) History(ctx context.Context, afterRev, afterSub int64, limit int) ([]backends.LogRow, error) {
	rows, err := t.st.Query(ctx, qHistory, afterRev, afterRev, afterSub, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	return backends.ScanLogRows(rows)
}

func (t *txn) LeaseInsert(ctx context.Context, id, ttl int64) (bool, error) {
	res, err := t.st.Exec(ctx, qLeaseInsert, id, ttl, ttl)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

func (t *txn) LeaseGet(ctx context.Context, id int64) (ttl, remaining int64, found bool, err error) {
	err = t.st.QueryRow(ctx, qLeaseGet, []any{id}, &ttl, &remaining)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, 0, false, nil
	}
	return ttl, remaining, err == nil, err
}

func (t *txn) LeaseExtendAll(ctx context.Context) (int64, error) {
	res, err := t.st.Exec(ctx, qLeaseExtend)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (t *txn) LeaseRenew(ctx context.Context, id int64) (int64, bool, error) {
	res, err := t.st.Exec(ctx, qLeaseRenew, id)
	if err != nil {
		return 0, false, err
	}
	if n, err := res.RowsAffected(); err != nil || n == 0 {
		return 0, false, err
	}
	var ttl int64
	if err := t.st.QueryRow(ctx, qLeaseTTL, []any{id}, &ttl); err != nil {
		return 0, false, err
	}
	return ttl, true, nil
}

func (t *txn) LeaseDelete(ctx context.Context, id int64) error {
	_, err := t.st.Exec(ctx, qLeaseDelete, id)
	return err
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
	rows, err := t.st.Query(ctx, qAlarms)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	return backends.ScanAlarms(rows)
}

func (t *txn) AlarmInsert(ctx context.Context, member uint64, alarm int32) (bool, error) {
	return changed(t.st.Exec(ctx, qAlarmInsert, member, alarm))
}

func (t *txn) AlarmDelete(ctx context.Context, member uint64, alarm int32) (bool, error) {
	return changed(t.st.Exec(ctx, qAlarmDelete, member, alarm))
}

// changed reports whether a statement changed a row.
func changed(res sql.Result, err error) (bool, error) {
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

func (t *txn) queryIDs(ctx context.Context, q string, args ...any) ([]int64, error) {
	rows, err := t.st.Query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	return backends.ScanIDs(rows)
}

// compactTx implements backends.CompactTx.
type compactTx struct {
	tx *sql.Tx
	st backends.StmtTx
}

func (c *compactTx) CleanedTo(ctx context.Context) (int64, error) {
	var rev int64
	err := c.st.QueryRow(ctx, qCleanedTo, nil, &rev)
	return rev, err
}

func (c *compactTx) SetCleanedTo(ctx context.Context, rev int64) error {
	_, err := c.st.Exec(ctx, qSetCleanedTo, rev)
	return err
}

func (c *compactTx) StepEnd(ctx context.Context, from, upTo int64, limit int) (int64, error) {
	var rev int64
	err := c.st.QueryRow(ctx, qStepEnd, []any{from, upTo, limit}, &rev)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	return rev, err
}

func (c *compactTx) DeleteSuperseded(ctx context.Context, compact, from, to int64) (int64, error) {
	older, err := c.st.Exec(ctx, qDeleteSuperseded, from, to, compact, compact)
	if err != nil {
		return 0, err
	}
	tombs, err := c.st.Exec(ctx, qDeleteTombstones, from, to, compact)
	if err != nil {
		return 0, err
	}
	n, err := older.RowsAffected()
	if err != nil {
		return 0, err
	}
	m, err := tombs.RowsAffected()
	return n + m, err
}

func (c *compactTx) Commit() error   { return c.tx.Commit() }
func (c *compactTx) Rollback() error { return c.tx.Rollback() }

func (t *txn) LeaseRows(ctx context.Context, afterID int64, limit int) ([]backends.Lease, error) {
	rows, err := t.st.Query(ctx, qLeaseRows, afterID, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	return backends.ScanLeases(rows)
}
