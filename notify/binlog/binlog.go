// Package binlog is the MySQL/MariaDB notify source: the instance follows
// the server's binary log as a replica (go-mysql's BinlogSyncer, with its
// own server_id). Every kvsql write transaction updates the kv_meta row, so
// the row event for kv_meta carries the commit's revision and the XID event
// after it marks the commit: Next returns that revision.
//
// The binlog is only a wake-up. Each (re)connection starts at the server's
// current binlog position and Next returns 0 at once, so that the tailer
// re-reads kv_log from its own cursor: nothing is lost when the connection
// drops or when binlogs the instance would have needed were purged while it
// was away.
package binlog

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/binary"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-mysql-org/go-mysql/mysql"
	"github.com/go-mysql-org/go-mysql/replication"
	gomysql "github.com/go-sql-driver/mysql"

	"github.com/kvsql/kvsql/internal/dbnet"
	"github.com/kvsql/kvsql/notify"
)

const (
	// heartbeatPeriod is how often the server sends a heartbeat on an
	// idle replication stream; readTimeout is how long the stream may stay
	// silent before it counts as dead.
	heartbeatPeriod = time.Second
	readTimeout     = 5 * time.Second
)

// Config configures a Source.
type Config struct {
	// Driver holds the address, credentials and TLS settings to use.
	Driver *gomysql.Config
	// DB is used for status queries (flavor, binlog position).
	DB *sql.DB
	// ServerID identifies this replica; 0 picks a random one. Every
	// instance on one server needs its own.
	ServerID uint32
	Logger   *slog.Logger
}

// Source is a notify.Source on the binary log. Next must not be called
// concurrently.
type Source struct {
	cfg    Config
	log    *slog.Logger
	schema string

	mu       sync.Mutex // guards syncer (Close may run during Next)
	syncer   *replication.BinlogSyncer
	streamer *replication.BinlogStreamer
	pending  int64 // revision seen in the current transaction
}

var _ notify.Source = (*Source)(nil)

// New returns a Source. Call Check first to fail early on a misconfigured server.
func New(cfg Config) *Source {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.ServerID == 0 {
		var b [4]byte
		_, _ = rand.Read(b[:])
		// Stay clear of the small IDs people give their real replicas.
		cfg.ServerID = 1<<30 | binary.BigEndian.Uint32(b[:])>>2
	}
	return &Source{cfg: cfg, log: log, schema: cfg.Driver.DBName}
}

// Check verifies that the server writes a binary log kvsql can follow and
// that the user may read it, and names exactly what to change otherwise.
func Check(ctx context.Context, db *sql.DB) error {
	var logBin, format, image string
	if err := db.QueryRowContext(ctx, `SELECT @@log_bin, @@binlog_format, @@binlog_row_image`).Scan(&logBin, &format, &image); err != nil {
		return fmt.Errorf("binlog: read server settings: %w", err)
	}
	var problems []string
	if logBin != "1" && !strings.EqualFold(logBin, "ON") {
		problems = append(problems, "the binary log is off: start the server with log-bin (RDS/Aurora: enable automated backups or binlog replication; Cloud SQL: enable point-in-time recovery)")
	}
	if !strings.EqualFold(format, "ROW") {
		problems = append(problems, fmt.Sprintf("binlog_format is %s: set binlog_format=ROW (RDS/Aurora: in the DB parameter group)", format))
	}
	if !strings.EqualFold(image, "FULL") {
		problems = append(problems, fmt.Sprintf("binlog_row_image is %s: set binlog_row_image=FULL", image))
	}
	if err := checkGrants(ctx, db); err != nil {
		problems = append(problems, err.Error())
	}
	if len(problems) > 0 {
		return fmt.Errorf("binlog: this server cannot feed kvsql's watches: %s; or run kvsql with --notify=poll", strings.Join(problems, "; "))
	}
	return nil
}

func checkGrants(ctx context.Context, db *sql.DB) error {
	rows, err := db.QueryContext(ctx, `SHOW GRANTS`)
	if err != nil {
		return fmt.Errorf("cannot read the user's grants: %w", err)
	}
	defer rows.Close()
	var all strings.Builder
	for rows.Next() {
		var g string
		if err := rows.Scan(&g); err != nil {
			return err
		}
		all.WriteString(strings.ToUpper(g))
		all.WriteByte('\n')
	}
	grants := all.String()
	if strings.Contains(grants, "ALL PRIVILEGES ON *.*") {
		return nil
	}
	var missing []string
	if !strings.Contains(grants, "REPLICATION SLAVE") && !strings.Contains(grants, "REPLICATION REPLICA") {
		missing = append(missing, "REPLICATION SLAVE")
	}
	if !strings.Contains(grants, "REPLICATION CLIENT") && !strings.Contains(grants, "BINLOG MONITOR") {
		missing = append(missing, "REPLICATION CLIENT")
	}
	if len(missing) > 0 {
		return fmt.Errorf("the user lacks %s: GRANT %s ON *.* TO the kvsql user", strings.Join(missing, " and "), strings.Join(missing, ", "))
	}
	return nil
}

func (s *Source) connect(ctx context.Context) error {
	var version string
	if err := s.cfg.DB.QueryRowContext(ctx, `SELECT VERSION()`).Scan(&version); err != nil {
		return err
	}
	flavor := mysql.MySQLFlavor
	if strings.Contains(strings.ToLower(version), "mariadb") {
		flavor = mysql.MariaDBFlavor
	}
	pos, err := s.position(ctx, flavor, version)
	if err != nil {
		return err
	}
	host, port, err := net.SplitHostPort(s.cfg.Driver.Addr)
	if err != nil {
		return fmt.Errorf("binlog: address %q: %w", s.cfg.Driver.Addr, err)
	}
	p, _ := strconv.Atoi(port)
	syncer := replication.NewBinlogSyncer(replication.BinlogSyncerConfig{
		ServerID:         s.cfg.ServerID,
		Flavor:           flavor,
		Host:             host,
		Port:             uint16(p),
		User:             s.cfg.Driver.User,
		Password:         s.cfg.Driver.Passwd,
		TLSConfig:        s.cfg.Driver.TLS,
		Logger:           s.log,
		DisableRetrySync: true, // we reconnect ourselves, and re-read kv_log
		// The server sends a heartbeat every second when it has nothing
		// else to send; a stream quiet for longer than readTimeout is
		// dead (a server or network gone silent) and is reconnected.
		HeartbeatPeriod: heartbeatPeriod,
		ReadTimeout:     readTimeout,
		Dialer:          dbnet.Dial,
	})
	streamer, err := syncer.StartSync(pos)
	if err != nil {
		syncer.Close()
		return err
	}
	s.mu.Lock()
	s.syncer, s.streamer, s.pending = syncer, streamer, 0
	s.mu.Unlock()
	s.log.Debug("following binlog", "file", pos.Name, "pos", pos.Pos, "server_id", s.cfg.ServerID)
	return nil
}

// position reads the server's current binlog file and offset.
func (s *Source) position(ctx context.Context, flavor, version string) (mysql.Position, error) {
	q := "SHOW MASTER STATUS"
	if flavor == mysql.MariaDBFlavor {
		if c, err := mysql.CompareServerVersions(version, "10.5.2"); err == nil && c >= 0 {
			q = "SHOW BINLOG STATUS"
		}
	} else if c, err := mysql.CompareServerVersions(version, "8.4.0"); err == nil && c >= 0 {
		q = "SHOW BINARY LOG STATUS"
	}
	rows, err := s.cfg.DB.QueryContext(ctx, q)
	if err != nil {
		return mysql.Position{}, fmt.Errorf("binlog: %s: %w", q, err)
	}
	defer rows.Close()
	cols, _ := rows.Columns()
	if !rows.Next() {
		return mysql.Position{}, fmt.Errorf("binlog: %s returned nothing: is log-bin on?", q)
	}
	vals := make([]sql.RawBytes, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	if err := rows.Scan(ptrs...); err != nil {
		return mysql.Position{}, err
	}
	off, err := strconv.ParseUint(string(vals[1]), 10, 32)
	if err != nil {
		return mysql.Position{}, fmt.Errorf("binlog: bad position %q: %w", vals[1], err)
	}
	return mysql.Position{Name: string(vals[0]), Pos: uint32(off)}, nil
}

func (s *Source) drop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.syncer != nil {
		s.syncer.Close()
	}
	s.syncer, s.streamer = nil, nil
}

// Next implements notify.Source.
func (s *Source) Next(ctx context.Context, after int64) (int64, error) {
	s.mu.Lock()
	streamer := s.streamer
	s.mu.Unlock()
	if streamer == nil {
		if err := s.connect(ctx); err != nil {
			return 0, fmt.Errorf("binlog: follow: %w", err)
		}
		return 0, nil // re-read kv_log: commits before this position are there
	}
	for {
		ev, err := streamer.GetEvent(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return 0, ctx.Err()
			}
			s.drop()
			return 0, fmt.Errorf("binlog: stream lost: %w", err)
		}
		switch e := ev.Event.(type) {
		case *replication.RowsEvent:
			if rev, ok := s.metaRevision(e); ok {
				s.pending = rev
			}
		case *replication.XIDEvent:
			if rev := s.pending; rev > 0 {
				s.pending = 0
				if rev > after {
					return rev, nil
				}
			}
		}
	}
}

// metaRevision extracts the new revision from an update of kv_meta.
func (s *Source) metaRevision(e *replication.RowsEvent) (int64, bool) {
	if e.Table == nil || string(e.Table.Table) != "kv_meta" || string(e.Table.Schema) != s.schema || len(e.Rows) == 0 {
		return 0, false
	}
	row := e.Rows[len(e.Rows)-1] // for an update, the last row is the after image
	if len(row) < 2 {
		return 0, false
	}
	switch v := row[1].(type) {
	case int64:
		return v, true
	case uint64:
		return int64(v), true
	case int32:
		return int64(v), true
	}
	return 0, false
}

// Close stops following the binlog.
func (s *Source) Close() error {
	s.drop()
	return nil
}
