package main

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	gomysql "github.com/go-sql-driver/mysql"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/kvsql/kvsql/backends"
	"github.com/kvsql/kvsql/backends/mysql"
	"github.com/kvsql/kvsql/backends/sqlite"
	"github.com/kvsql/kvsql/migrate"
	"github.com/kvsql/kvsql/snapshot"
)

// progressEvery is how often a long restore or migration reports on stderr.
const progressEvery = 2 * time.Second

// toolFlags are the database flags of kvsql's subcommands, with the same
// names, meanings and environment variables as the server's.
type toolFlags struct {
	endpoint string
	dataDir  string
}

func (t *toolFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&t.endpoint, "endpoint", "", "the kvsql database URL, as for the server: sqlite://PATH, postgres://... or mysql://... (default: sqlite://<data-dir>/state.db)")
	fs.StringVar(&t.dataDir, "data-dir", "kvsql-data", "directory of the embedded SQLite database, when --endpoint is not given")
}

// parseTool parses a subcommand's flags and its one FILE argument, which
// may come before or after the flags.
func parseTool(fs *flag.FlagSet, args []string, wantFile bool) (string, error) {
	if err := applyEnv(fs); err != nil {
		return "", err
	}
	var file string
	if wantFile && len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		file, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		return "", err
	}
	rest := fs.Args()
	if wantFile && file == "" && len(rest) > 0 {
		file, rest = rest[0], rest[1:]
	}
	if len(rest) > 0 {
		return "", fmt.Errorf("unexpected argument %q", rest[0])
	}
	if wantFile && file == "" {
		fs.Usage()
		return "", errors.New("name the snapshot FILE")
	}
	return file, nil
}

// openTarget opens the kvsql database a subcommand works on. Nothing is
// served: the notify source is not started.
func openTarget(ctx context.Context, t *toolFlags, stderr io.Writer) (backends.Backend, error) {
	c := &config{endpoint: t.endpoint, dataDir: t.dataDir, notifyMode: "poll"}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	be, _, err := openBackend(ctx, c, log, nil)
	return be, err
}

// progressPrinter prints a progress line on w at most every progressEvery.
type progressPrinter struct {
	w    io.Writer
	what string
	last time.Time
}

func (p *progressPrinter) report(done, rev, lastRev int64) {
	if time.Since(p.last) < progressEvery {
		return
	}
	p.last = time.Now()
	pct := 100.0
	if lastRev > 0 {
		pct = 100 * float64(rev) / float64(lastRev)
	}
	fmt.Fprintf(p.w, "kvsql: %s %d versions, revision %d of %d (%.0f%%)\n", p.what, done, rev, lastRev, pct)
}

func runSnapshot(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	usage := func() {
		fmt.Fprint(stderr, `Usage:
  kvsql snapshot save FILE [--endpoint URL | --data-dir DIR]
      write the database as an etcd snapshot file (with its SHA-256, as
      etcdctl snapshot save does), from one database snapshot; etcdutl
      snapshot restore turns it into an etcd data directory
  kvsql snapshot restore FILE [--endpoint URL | --data-dir DIR] [--skip-hash-check]
      load an etcd snapshot file (from etcdctl snapshot save against etcd
      or kvsql) into an empty kvsql database, keeping revisions, versions,
      the compact revision and leases
`)
	}
	if len(args) == 0 || (args[0] != "save" && args[0] != "restore") {
		usage()
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "-help") {
			return flag.ErrHelp
		}
		return errors.New("snapshot: want save or restore")
	}
	fs := flag.NewFlagSet("kvsql snapshot "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	var tf toolFlags
	tf.register(fs)
	skipHash := false
	if args[0] == "restore" {
		fs.BoolVar(&skipHash, "skip-hash-check", false, "accept a file without a SHA-256 (a db file copied from an etcd data directory) and do not verify one")
	}
	fs.Usage = func() { usage(); fmt.Fprintln(stderr, "\nFlags:"); fs.PrintDefaults() }
	file, err := parseTool(fs, args[1:], true)
	if err != nil {
		return err
	}
	if args[0] == "restore" {
		// before the target is opened (and, for SQLite, created)
		if _, err := os.Stat(file); err != nil {
			return fmt.Errorf("snapshot restore: %w", err)
		}
	}
	be, err := openTarget(ctx, &tf, stderr)
	if err != nil {
		return err
	}
	defer be.Close()
	start := time.Now()
	if args[0] == "save" {
		return snapshotSave(ctx, be, file, stdout, start)
	}
	loader, ok := be.(backends.Loader)
	if !ok {
		return errors.New("this backend cannot bulk-load")
	}
	p := &progressPrinter{w: stderr, what: "restored", last: start}
	info, err := snapshot.Restore(ctx, file, loader, snapshot.RestoreOptions{
		SkipHashCheck: skipHash,
		Progress:      func(pr snapshot.Progress) { p.report(pr.Versions, pr.Revision, pr.LastRevision) },
	})
	if errors.Is(err, backends.ErrNotEmpty) {
		return fmt.Errorf("snapshot restore: the target %w; restore only into a new, empty database (another --data-dir, or a new PostgreSQL/MySQL database)", err)
	}
	if err != nil {
		return fmt.Errorf("snapshot restore %s: %w", file, err)
	}
	fmt.Fprintf(stdout, "restored %s: revision %d, compact revision %d, %d versions, %d leases, %d users, %d roles in %s\n",
		file, info.Revision, info.Compact, info.Versions, info.Leases, info.Users, info.Roles, time.Since(start).Round(time.Millisecond))
	return nil
}

func snapshotSave(ctx context.Context, be backends.Backend, file string, stdout io.Writer, start time.Time) error {
	src, ok := be.(backends.Snapshotter)
	if !ok {
		return errors.New("this backend cannot take snapshots")
	}
	dir := filepath.Dir(file)
	f, err := snapshot.Create(ctx, src, dir)
	if err != nil {
		return fmt.Errorf("snapshot save: %w", err)
	}
	defer f.Close()
	part := file + ".part"
	out, err := os.OpenFile(part, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("snapshot save: %w", err)
	}
	err = f.WriteFile(out)
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(part, file)
	}
	if err != nil {
		_ = os.Remove(part)
		return fmt.Errorf("snapshot save %s: %w", file, err)
	}
	fmt.Fprintf(stdout, "saved %s: revision %d, compact revision %d, %d versions, %d leases, %d bytes in %s\n",
		file, f.Revision, f.Compact, f.Versions, f.Leases, f.Size, time.Since(start).Round(time.Millisecond))
	return nil
}

func runMigrate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("kvsql migrate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var tf toolFlags
	tf.register(fs)
	var from string
	fs.StringVar(&from, "from", "", "the kine database to copy: kine+sqlite://PATH (k3s: /var/lib/rancher/k3s/server/db/state.db), kine+postgres://USER:PASS@HOST:PORT/DB?sslmode=... or kine+mysql://USER:PASS@tcp(HOST:PORT)/DB")
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: kvsql migrate --from kine+SCHEME://... [--endpoint URL | --data-dir DIR]

Copies the state of a kine database (k3s's datastore) into an empty kvsql
database: every kept change of every key with kine's revisions, the compact
and current revisions, and the leases of live keys. Stop kine (every k3s
server) first.

Flags:
`)
		fs.PrintDefaults()
	}
	if _, err := parseTool(fs, args, false); err != nil {
		return err
	}
	if from == "" {
		fs.Usage()
		return errors.New("migrate: --from names the kine database")
	}
	src, flavor, shown, err := openKine(from)
	if err != nil {
		return err
	}
	defer src.Close()
	if err := src.PingContext(ctx); err != nil {
		return fmt.Errorf("migrate: connect to %s: %w", shown, scrub(err, from))
	}
	be, err := openTarget(ctx, &tf, stderr)
	if err != nil {
		return err
	}
	defer be.Close()
	loader, ok := be.(backends.Loader)
	if !ok {
		return errors.New("this backend cannot bulk-load")
	}
	start := time.Now()
	p := &progressPrinter{w: stderr, what: "copied", last: start}
	info, err := migrate.FromKine(ctx, src, flavor, loader, func(pr migrate.Progress) { p.report(pr.Rows, pr.Revision, pr.LastRevision) })
	if errors.Is(err, backends.ErrNotEmpty) {
		return fmt.Errorf("migrate: the target %w; migrate only into a new, empty database (another --data-dir, or a new PostgreSQL/MySQL database)", err)
	}
	if err != nil {
		return fmt.Errorf("migrate from %s: %w", shown, scrub(err, from))
	}
	fmt.Fprintf(stdout, "migrated %s: revision %d, compact revision %d, %d changes, %d leases (%d kine-internal rows skipped) in %s\n",
		shown, info.Revision, info.Compact, info.Rows, info.Leases, info.Skipped, time.Since(start).Round(time.Millisecond))
	return nil
}

// openKine opens the database --from names with the driver its scheme
// picks. It returns the database, its flavor and the URL to show (without
// a password).
func openKine(from string) (*sql.DB, migrate.Flavor, string, error) {
	scheme, rest, ok := strings.Cut(from, "://")
	if !ok {
		return nil, 0, "", errors.New("--from: want a kine+sqlite://PATH, kine+postgres:// or kine+mysql:// URL")
	}
	switch scheme {
	case "kine+sqlite":
		path, _, _ := strings.Cut(rest, "?")
		if _, err := os.Stat(path); err != nil {
			return nil, 0, "", fmt.Errorf("--from: kine's SQLite database: %w", err)
		}
		db, err := sqlite.OpenDB(path)
		if err != nil {
			return nil, 0, "", err
		}
		return db, migrate.SQLite, from, nil
	case "kine+postgres", "kine+postgresql":
		u := "postgres://" + rest
		cfg, err := pgx.ParseConfig(u)
		if err != nil {
			return nil, 0, "", fmt.Errorf("--from kine+%s does not parse; want kine+postgres://USER:PASSWORD@HOST:PORT/DB with sslmode and other settings in the query", describeEndpoint(u))
		}
		return stdlib.OpenDB(*cfg), migrate.Postgres, "kine+" + describeEndpoint(u), nil
	case "kine+mysql":
		u := "mysql://" + rest
		cfg, err := mysql.ParseEndpoint(u)
		if err != nil {
			return nil, 0, "", fmt.Errorf("--from: %w", scrub(err, u))
		}
		conn, err := gomysql.NewConnector(cfg)
		if err != nil {
			return nil, 0, "", fmt.Errorf("--from %s: %w", describeEndpoint(u), scrub(err, u))
		}
		return sql.OpenDB(conn), migrate.MySQL, "kine+" + describeEndpoint(u), nil
	}
	return nil, 0, "", fmt.Errorf("--from: unknown scheme %q; want kine+sqlite://, kine+postgres:// or kine+mysql://", scheme)
}
