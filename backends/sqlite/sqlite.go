// Package sqlite is the embedded SQLite dialect, kvsql's default. One process
// owns the database file: writes go through a single connection that opens
// every transaction with BEGIN IMMEDIATE (the global write lock); reads use a
// pool of WAL readers, each transaction one consistent snapshot. Every commit
// is synced (synchronous=FULL): an acknowledged write survives power loss,
// and group commit in backends.Engine keeps that affordable.
package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"

	"github.com/kvsql/kvsql/backends"
)

// DefaultFile is the database file name inside the data directory.
const DefaultFile = "state.db"

// DriverName is the database/sql driver the dialect opens files with
// (tests open the same file with it).
const DriverName = driverName

// defaultReaders is the size of the read connection pool.
const defaultReaders = 8

//go:embed schema/*.sql
var schemaFS embed.FS

// Config configures Open.
type Config struct {
	// Path is the database file. Its directory is created if missing.
	Path string
	// Readers is the read connection pool size (default 8).
	Readers int
	// Engine configures the group-commit engine.
	Engine backends.EngineConfig
}

// CompactStepTime is how long one step of compaction's cleanup takes on
// SQLite (backends.EngineConfig.CompactStepTime): the steps and the group
// commits take turns on the one writer connection, so a write that arrives
// during a step waits for at most about this much more than without a
// compaction running.
const CompactStepTime = 5 * time.Millisecond

// Open opens (creating and migrating if needed) the SQLite database at
// cfg.Path and returns a running Engine on it.
func Open(ctx context.Context, cfg Config) (*backends.Engine, error) {
	d, err := openDialect(ctx, cfg)
	if err != nil {
		return nil, err
	}
	if cfg.Engine.Database == "" {
		cfg.Engine.Database = "SQLite at " + cfg.Path
	}
	if cfg.Engine.CompactStepTime == 0 {
		cfg.Engine.CompactStepTime = CompactStepTime
	}
	return backends.NewEngine(d, cfg.Engine), nil
}

type dialect struct {
	w      *sql.DB // one connection, BEGIN IMMEDIATE
	r      *sql.DB // WAL readers
	wStmts *backends.Prepared
	rStmts *backends.Prepared
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
	_ backends.CompactTx      = (*txn)(nil)
)

func openDialect(ctx context.Context, cfg Config) (*dialect, error) {
	if cfg.Path == "" {
		return nil, errors.New("sqlite: no database path given")
	}
	if dir := filepath.Dir(cfg.Path); dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("sqlite: create data directory: %w", err)
		}
	}
	w, err := sql.Open(driverName, dsn(cfg.Path, "immediate"))
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", cfg.Path, err)
	}
	w.SetMaxOpenConns(1)
	w.SetMaxIdleConns(1)
	w.SetConnMaxLifetime(0)
	if err := migrate(ctx, w); err != nil {
		_ = w.Close()
		return nil, fmt.Errorf("sqlite: migrate %s: %w", cfg.Path, err)
	}
	r, err := sql.Open(driverName, dsn(cfg.Path, "deferred"))
	if err != nil {
		_ = w.Close()
		return nil, fmt.Errorf("sqlite: open %s: %w", cfg.Path, err)
	}
	n := cfg.Readers
	if n <= 0 {
		n = defaultReaders
	}
	r.SetMaxOpenConns(n)
	r.SetMaxIdleConns(n)
	r.SetConnMaxLifetime(0)
	ws, err := backends.PrepareAll(ctx, w, statements)
	if err != nil {
		_ = r.Close()
		_ = w.Close()
		return nil, fmt.Errorf("sqlite: %w", err)
	}
	rs, err := backends.PrepareAll(ctx, r, statements)
	if err != nil {
		ws.Close()
		_ = r.Close()
		_ = w.Close()
		return nil, fmt.Errorf("sqlite: %w", err)
	}
	return &dialect{w: w, r: r, wStmts: ws, rStmts: rs}, nil
}

// migrate applies schema/NNN_*.sql files above PRAGMA user_version, in order,
// each in one transaction.
// appliedMigrations returns the versions recorded in kv_schema. Databases
// from before kv_schema recorded the highest version in PRAGMA user_version
// and had every migration up to it applied: kv_schema then starts with
// those.
func appliedMigrations(ctx context.Context, db *sql.DB, ms []backends.Migration) (map[int]bool, error) {
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS kv_schema (version INTEGER NOT NULL)`); err != nil {
		return nil, err
	}
	rows, err := db.QueryContext(ctx, `SELECT version FROM kv_schema`)
	if err != nil {
		return nil, err
	}
	applied, err := backends.ScanVersions(rows)
	_ = rows.Close()
	if err != nil || len(applied) > 0 {
		return applied, err
	}
	var old int
	if err := db.QueryRowContext(ctx, `PRAGMA user_version`).Scan(&old); err != nil {
		return nil, err
	}
	for _, m := range ms {
		if m.Version > old {
			break
		}
		if _, err := db.ExecContext(ctx, `INSERT INTO kv_schema (version) VALUES (?)`, m.Version); err != nil {
			return nil, err
		}
		applied[m.Version] = true
	}
	return applied, nil
}

func migrate(ctx context.Context, db *sql.DB) error {
	ms, err := backends.Migrations(schemaFS, "schema")
	if err != nil {
		return err
	}
	applied, err := appliedMigrations(ctx, db, ms)
	if err != nil {
		return err
	}
	pending, err := backends.Pending(ms, applied)
	if err != nil {
		return err
	}
	for _, m := range pending {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, m.SQL); err != nil {
			_ = tx.Rollback()
			return fmt.Errorf("migration %s: %w", m.Name, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO kv_schema (version) VALUES (?)`, m.Version); err != nil {
			_ = tx.Rollback()
			return fmt.Errorf("migration %s: %w", m.Name, err)
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("migration %s: %w", m.Name, err)
		}
	}
	return nil
}

func (d *dialect) BeginRead(ctx context.Context) (backends.Tx, error) {
	tx, err := d.r.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	return &txn{tx: tx, st: backends.StmtTx{Tx: tx, Prepared: d.rStmts}}, nil
}

func (d *dialect) BeginWrite(ctx context.Context) (backends.Tx, error) {
	tx, err := d.w.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	return &txn{tx: tx, st: backends.StmtTx{Tx: tx, Prepared: d.wStmts}}, nil
}

// BeginCompact implements backends.Dialect. SQLite has one writer: the
// cleanup's steps take turns with group commits on it, each bounded.
func (d *dialect) BeginCompact(ctx context.Context) (backends.CompactTx, error) {
	tx, err := d.w.BeginTx(ctx, nil)
	if err != nil {
		return nil, err
	}
	return &txn{tx: tx, st: backends.StmtTx{Tx: tx, Prepared: d.wStmts}}, nil
}

// SQLite primary result codes for a write refused for its content.
const (
	codeTooBig     = 18 // SQLITE_TOOBIG: a string or blob over the length limit
	codeConstraint = 19 // SQLITE_CONSTRAINT (and its extended codes)
	codeMismatch   = 20 // SQLITE_MISMATCH
)

// RefusedWrite implements backends.Dialect. An error from a statement
// leaves the transaction uncommitted (kvsql rolls it back).
func (d *dialect) RefusedWrite(err error) bool {
	code, ok := errCode(err)
	if !ok {
		return false
	}
	switch code & 0xff {
	case codeTooBig, codeConstraint, codeMismatch:
		return true
	}
	return false
}

func (d *dialect) Size(ctx context.Context) (int64, int64, error) {
	var pages, size, free int64
	for _, q := range []struct {
		sql string
		dst *int64
	}{{qPageCount, &pages}, {qPageSize, &size}, {qFreePages, &free}} {
		if err := d.r.QueryRowContext(ctx, q.sql).Scan(q.dst); err != nil {
			return 0, 0, err
		}
	}
	return pages * size, (pages - free) * size, nil
}

// Defragment rewrites the database file without its free pages (VACUUM,
// on the writer's connection, so writes wait for it), then checkpoints
// the WAL into the file and truncates the WAL, so that the space goes
// back to the file system.
func (d *dialect) Defragment(ctx context.Context) error {
	if _, err := d.w.ExecContext(ctx, `VACUUM`); err != nil {
		return fmt.Errorf("vacuum: %w", err)
	}
	if _, err := d.w.ExecContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	return nil
}

// ErrorClass implements backends.ErrorClasser: SQLite's primary result
// code (SQLITE_BUSY is 5, SQLITE_FULL 13, ...), where the driver reports one.
func (d *dialect) ErrorClass(err error) string {
	var coded interface{ Code() int }
	if errors.As(err, &coded) {
		return fmt.Sprintf("sqlite code %d", coded.Code()&0xff)
	}
	return ""
}

// PoolStats implements backends.PoolReporter: the one writer connection
// and the WAL readers.
func (d *dialect) PoolStats() []backends.PoolStats {
	return []backends.PoolStats{backends.SQLPoolStats("sqlite_writer", d.w), backends.SQLPoolStats("sqlite_readers", d.r)}
}

func (d *dialect) Close() error {
	d.rStmts.Close()
	d.wStmts.Close()
	return errors.Join(d.r.Close(), d.w.Close())
}

type txn struct {
	tx *sql.Tx
	st backends.StmtTx
}

func (t *txn) Commit() error   { return t.tx.Commit() }
func (t *txn) Rollback() error { return t.tx.Rollback() }

func (t *txn) Revisions(ctx context.Context) (cur, compact int64, err error) {
	err = t.st.QueryRow(ctx, qRevisions, nil, &cur, &compact)
	return cur, compact, err
}

func (t *txn) SetRevision(ctx context.Context, rev int64) error {
	_, err := t.st.Exec(ctx, qSetRevision, rev)
	return err
}

func (t *txn) SetCompact(ctx context.Context, rev int64) error {
	_, err := t.st.Exec(ctx, qSetCompact, rev)
	return err
}

func (t *txn) Timeline(ctx context.Context) (int64, error) {
	var tl int64
	err := t.st.QueryRow(ctx, qTimeline, nil, &tl)
	return tl, err
}

func (t *txn) Fence(ctx context.Context, rev int64) (int64, error) {
	var tl int64
	err := t.st.QueryRow(ctx, qFence, []any{rev}, &tl)
	return tl, err
}

func sqlLimit(limit int64) int64 {
	if limit <= 0 {
		return -1
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

func (t *txn) Write(ctx context.Context, rows []backends.LogRow) error {
	for _, r := range rows {
		if _, err := t.st.Exec(ctx, qInsertLog, r.Rev, r.Sub, r.Key, r.Deleted, r.CreateRev, r.PrevRev, r.Version, r.Lease, r.Value); err != nil {
			return fmt.Errorf("append revision %d.%d: %w", r.Rev, r.Sub, err)
		}
		var err error
		if r.Deleted {
			_, err = t.st.Exec(ctx, qDeleteCurrent, r.Key)
		} else {
			_, err = t.st.Exec(ctx, qUpsertCurrent, r.Key, r.CreateRev, r.Rev, r.Sub, r.Version, r.Lease)
		}
		if err != nil {
			return fmt.Errorf("apply revision %d.%d: %w", r.Rev, r.Sub, err)
		}
	}
	return nil
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
	rows, err := t.st.Query(ctx, qHistory, afterRev, afterSub, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	return backends.ScanLogRows(rows)
}

func nowMillis() int64 { return time.Now().UnixMilli() }

func (t *txn) LeaseInsert(ctx context.Context, id, ttl int64) (bool, error) {
	res, err := t.st.Exec(ctx, qLeaseInsert, id, ttl, nowMillis()+ttl*1000)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

func (t *txn) LeaseGet(ctx context.Context, id int64) (ttl, remaining int64, found bool, err error) {
	var expiry int64
	err = t.st.QueryRow(ctx, qLeaseGet, []any{id}, &ttl, &expiry)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, 0, false, nil
	}
	if err != nil {
		return 0, 0, false, err
	}
	return ttl, expiry - nowMillis(), true, nil
}

func (t *txn) LeaseRenew(ctx context.Context, id int64) (int64, bool, error) {
	var ttl int64
	err := t.st.QueryRow(ctx, qLeaseRenew, []any{id, nowMillis()}, &ttl)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, false, nil
	}
	return ttl, err == nil, err
}

func (t *txn) LeaseExtendAll(ctx context.Context) (int64, error) {
	res, err := t.st.Exec(ctx, qLeaseExtend, nowMillis())
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
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
	return t.queryIDs(ctx, qLeaseExpired, nowMillis(), limit)
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
	return t.changed(t.st.Exec(ctx, qAlarmInsert, int64(member), alarm))
}

func (t *txn) AlarmDelete(ctx context.Context, member uint64, alarm int32) (bool, error) {
	return t.changed(t.st.Exec(ctx, qAlarmDelete, int64(member), alarm))
}

// changed reports whether a statement changed a row.
func (t *txn) changed(res sql.Result, err error) (bool, error) {
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

// The cleanup's statements (backends.CompactTx) run on the writer's txn.

func (t *txn) CleanedTo(ctx context.Context) (int64, error) {
	var rev int64
	err := t.st.QueryRow(ctx, qCleanedTo, nil, &rev)
	return rev, err
}

func (t *txn) SetCleanedTo(ctx context.Context, rev int64) error {
	_, err := t.st.Exec(ctx, qSetCleanedTo, rev)
	return err
}

func (t *txn) StepEnd(ctx context.Context, from, upTo int64, limit int) (int64, error) {
	var rev int64
	err := t.st.QueryRow(ctx, qStepEnd, []any{from, upTo, limit}, &rev)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	return rev, err
}

func (t *txn) DeleteSuperseded(ctx context.Context, compact, from, to int64) (int64, error) {
	var n int64
	for _, q := range []string{qDeleteSuperseded, qDeleteTombstones} {
		res, err := t.st.Exec(ctx, q, compact, from, to)
		if err != nil {
			return 0, err
		}
		m, err := res.RowsAffected()
		if err != nil {
			return 0, err
		}
		n += m
	}
	return n, nil
}

// OpenDB opens the SQLite database file at path with kvsql's SQLite driver
// as a plain database/sql handle, for reading another program's database
// (kvsql migrate reads kine's state.db). It creates nothing and runs no
// migration.
func OpenDB(path string) (*sql.DB, error) {
	db, err := sql.Open(driverName, plainDSN(path))
	if err != nil {
		return nil, fmt.Errorf("sqlite: open %s: %w", path, err)
	}
	return db, nil
}

func (t *txn) LeaseRows(ctx context.Context, afterID int64, limit int) ([]backends.Lease, error) {
	rows, err := t.st.Query(ctx, qLeaseRows, afterID, limit, nowMillis())
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	return backends.ScanLeases(rows)
}
