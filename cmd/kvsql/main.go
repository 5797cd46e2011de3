// Command kvsql serves etcd's v3 API with its state in a SQL database.
// Run `kvsql --help` for the flags; each also reads a KVSQL_* environment
// variable (--data-dir: KVSQL_DATA_DIR).
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/crypto/bcrypt"
	"golang.org/x/sync/errgroup"

	"github.com/kvsql/kvsql/backends"
	"github.com/kvsql/kvsql/backends/mysql"
	"github.com/kvsql/kvsql/backends/postgres"
	"github.com/kvsql/kvsql/backends/sqlite"
	"github.com/kvsql/kvsql/kvserver"
	"github.com/kvsql/kvsql/notify"
	"github.com/kvsql/kvsql/notify/binlog"
	"github.com/kvsql/kvsql/notify/local"
	"github.com/kvsql/kvsql/notify/pgnotify"
	"github.com/kvsql/kvsql/notify/poll"
)

// Version is kvsql's own version, set at build time with
// -ldflags "-X main.Version=...".
var Version = "0.1.0-dev"

// shutdownGrace is how long in-flight requests get after the first signal.
const shutdownGrace = 5 * time.Second

type config struct {
	listenURLs     string
	listenHTTPURLs string
	advertiseURLs  string
	name           string
	dataDir        string
	endpoint       string
	maxReqBytes    int
	maxTxnOps      int
	rangeBytes     int64
	progressEvery  time.Duration
	notifyMode     string
	pollInterval   time.Duration
	safetyPoll     time.Duration
	stmtTimeout    time.Duration
	sessionTimeout time.Duration
	compactSleep   time.Duration
	pipeline       string
	serverID       uint
	metricsURLs    string
	enablePprof    bool
	certFile       string
	keyFile        string
	caFile         string
	clientCert     bool
	crlFile        string
	allowedCN      string
	allowedHost    string
	autoTLS        bool
	forward        bool
	authToken      string
	authTokenTTL   uint
	bcryptCost     uint
	authRefresh    time.Duration
	quotaBytes     int64
	warnApply      time.Duration
	logLevel       string
	logFormat      string
	version        bool
}

func main() {
	// The first SIGINT/SIGTERM starts a graceful stop; a second one exits at
	// once. One channel, never unregistered, so that no signal falls in a
	// gap between the two.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		<-sigs
		cancel()
		<-sigs
		fmt.Fprintln(os.Stderr, "kvsql: second signal, exiting now")
		os.Exit(1)
	}()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "kvsql:", err)
		os.Exit(1)
	}
}

// envName maps a flag name to its environment variable: data-dir -> KVSQL_DATA_DIR.
func envName(flagName string) string {
	return "KVSQL_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

func parseFlags(args []string, stderr io.Writer) (*config, error) {
	c := &config{}
	fs := flag.NewFlagSet("kvsql", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.listenURLs, "listen-client-urls", "http://127.0.0.1:2379", "comma-separated URLs to serve clients on (http:// plain, https:// TLS): etcd's gRPC API and, on the same port, HTTP (/health, /livez, /readyz, /version, /metrics and the JSON gateway under /v3/)")
	fs.StringVar(&c.listenHTTPURLs, "listen-client-http-urls", "", "comma-separated URLs to serve the HTTP endpoints on instead of --listen-client-urls, which then serve only gRPC (as etcd's flag: gRPC over TLS is faster on a listener of its own)")
	fs.StringVar(&c.advertiseURLs, "advertise-client-urls", "", "comma-separated client URLs to report in MemberList (default: --listen-client-urls)")
	fs.StringVar(&c.name, "name", "default", "this member's name")
	fs.StringVar(&c.metricsURLs, "listen-metrics-urls", "", "comma-separated http:// URLs to serve Prometheus metrics on, at /metrics (default: none)")
	fs.BoolVar(&c.enablePprof, "enable-pprof", false, "serve Go's runtime profiles (net/http/pprof) at /debug/pprof/ on the --listen-metrics-urls listeners, as etcd's --enable-pprof does on its client URLs")
	fs.StringVar(&c.dataDir, "data-dir", "kvsql-data", "directory for the embedded SQLite database")
	fs.StringVar(&c.endpoint, "endpoint", "", "database URL; the scheme picks the backend: sqlite://PATH (default: sqlite://<data-dir>/state.db) or postgres://USER:PASS@HOST:PORT/DB?sslmode=... or mysql://USER:PASS@tcp(HOST:PORT)/DB")
	fs.StringVar(&c.notifyMode, "notify", "auto", "how watches learn of commits: auto (the database's change stream: in-process for SQLite, LISTEN/NOTIFY for PostgreSQL, the binlog for MySQL) or poll (read the log every --notify-poll-interval; for PgBouncer in transaction mode and other poolers where LISTEN cannot work, or MySQL servers whose binlog cannot be read)")
	fs.UintVar(&c.serverID, "mysql-server-id", 0, "MySQL: the replica server_id this instance follows the binlog with; unique per instance (0: random)")
	fs.DurationVar(&c.pollInterval, "notify-poll-interval", 100*time.Millisecond, "with --notify=poll: how often to read the log")
	fs.DurationVar(&c.safetyPoll, "watch-safety-poll", kvserver.DefaultSafetyPoll, "how often watches re-read the log even without a notification (a safety net; never needed for correctness after a reconnect)")
	fs.DurationVar(&c.stmtTimeout, "db-statement-timeout", 0, "PostgreSQL: statement_timeout for kvsql's statements (0: the server's default)")
	fs.DurationVar(&c.sessionTimeout, "db-session-timeout", backends.DefaultSessionTimeout, "PostgreSQL/MySQL: how long the database waits for this instance's session that holds the write lock or the leader lock and went silent (the instance froze or lost its network) before ending it, so that the other instances take over (whole seconds on MySQL)")
	fs.IntVar(&c.maxReqBytes, "max-request-bytes", kvserver.DefaultMaxRequestBytes, "maximum client request size in bytes")
	fs.IntVar(&c.maxTxnOps, "max-txn-ops", kvserver.DefaultMaxTxnOps, "maximum operations per txn branch")
	fs.Int64Var(&c.rangeBytes, "max-range-bytes-in-flight", kvserver.DefaultMaxRangeBytesInFlight, "bytes of Range results (encoded) the server reads and holds at once; a large Range that would exceed it waits for others to finish (the oldest always proceeds, so a larger one is served alone); the process needs up to about twice this in memory for them")
	fs.StringVar(&c.pipeline, "write-pipelining", "auto", "on: prepare each group-commit batch while the one before it commits, without the write lock, and commit it with one checked round trip (a batch another instance's write made stale runs again under the lock); off: every batch reads its keys under the lock; auto: on for SQLite, off for PostgreSQL and MySQL (on a machine whose CPUs the database shares, their extra read costs more than the overlap gains; see docs/benchmarks.md)")
	fs.DurationVar(&c.compactSleep, "compaction-sleep-interval", backends.DefaultCompactSleep, "how long compaction's cleanup of the freed history waits between two of its steps (each up to 1000 log rows, its own transaction), so that writes running meanwhile keep their share of CPU and disk (etcd's flag of that name; 0: no wait)")
	fs.DurationVar(&c.progressEvery, "watch-progress-notify-interval", kvserver.DefaultProgressNotifyInterval, "how often watches with progress_notify get a progress notification")
	fs.StringVar(&c.certFile, "cert-file", "", "TLS certificate for https:// client URLs, read again at every new connection (replace the file to rotate it)")
	fs.StringVar(&c.keyFile, "key-file", "", "TLS key for --cert-file")
	fs.StringVar(&c.caFile, "trusted-ca-file", "", "CA bundle that signs client certificates; as in etcd, setting it makes https:// client URLs require a client certificate signed by it")
	fs.BoolVar(&c.clientCert, "client-cert-auth", false, "require a client certificate signed by --trusted-ca-file on every client URL (all must be https://); with auth enabled, a request without a token authenticates as the user named by the certificate's common name")
	fs.StringVar(&c.crlFile, "client-crl-file", "", "DER-encoded certificate revocation list (X.509 CRL); a client certificate it lists is refused; read again at every new connection")
	fs.StringVar(&c.allowedCN, "client-cert-allowed-cn", "", "comma-separated common names a client certificate must have one of")
	fs.StringVar(&c.allowedHost, "client-cert-allowed-hostname", "", "comma-separated hostnames or IPs a client certificate must be valid for one of")
	fs.BoolVar(&c.autoTLS, "auto-tls", false, "serve https:// client URLs with a generated self-signed certificate (in <data-dir>/fixtures/client; clients cannot verify it)")
	fs.BoolVar(&c.forward, "forward-writes", true, "PostgreSQL/MySQL with several instances: send writes to the instance holding the leader lock (at its first advertised client URL) so that every instance's writes share one group commit and fsync; without a ready connection to it, an instance writes directly. An https:// leader is verified with --trusted-ca-file (default: the system's roots) and shown --cert-file/--key-file as client certificate")
	fs.Int64Var(&c.quotaBytes, "quota-backend-bytes", 0, "refuse writes with etcd's \"database space exceeded\" and raise the NOSPACE alarm when the size in use of kvsql's tables would reach this many bytes (0: etcd's default, 2 GiB; negative: no quota)")
	fs.DurationVar(&c.warnApply, "warning-apply-duration", kvserver.DefaultWarningApplyDuration, "log requests that take longer than this (etcd's \"apply request took too long\")")
	fs.StringVar(&c.authToken, "auth-token", kvserver.DefaultAuthToken, "the tokens Authenticate hands out, as etcd's flag: simple (random, kept in the database so every instance accepts them) or jwt,pub-key=FILE,priv-key=FILE,sign-method=RS256|RS384|RS512|PS256|...|ES256|...|EdDSA|HS256|...[,ttl=5m] (signed; every instance needs the same keys)")
	fs.UintVar(&c.authTokenTTL, "auth-token-ttl", uint(kvserver.DefaultAuthTokenTTL/time.Second), "seconds a simple token stays valid after its last use")
	fs.UintVar(&c.bcryptCost, "bcrypt-cost", uint(bcrypt.DefaultCost), "bcrypt cost of stored password hashes (4..31)")
	fs.DurationVar(&c.authRefresh, "auth-refresh-interval", kvserver.DefaultAuthRefreshInterval, "several instances: how often each checks the database for user, role and permission changes made through another; such a change binds every instance's reads within this interval (writes at once)")
	fs.StringVar(&c.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&c.logFormat, "log-format", "text", "text or json")
	fs.BoolVar(&c.version, "version", false, "print the version and exit")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "kvsql %s: the etcd v3 API (etcd %s) on a SQL database.\n\nUsage: kvsql [flags]\n       kvsql snapshot save|restore FILE [flags]     (kvsql snapshot --help)\n       kvsql migrate --from kine+SCHEME://... [flags]  (kvsql migrate --help)\n\nEvery flag also reads the environment variable KVSQL_<FLAG> (for --data-dir: KVSQL_DATA_DIR); a flag given on the command line wins.\n\nFlags:\n", Version, kvserver.EtcdVersion)
		fs.PrintDefaults()
	}
	if err := applyEnv(fs); err != nil {
		return nil, err
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (flags start with --)", fs.Arg(0))
	}
	if c.bcryptCost < uint(bcrypt.MinCost) || c.bcryptCost > uint(bcrypt.MaxCost) {
		return nil, fmt.Errorf("--bcrypt-cost %d: want %d..%d", c.bcryptCost, bcrypt.MinCost, bcrypt.MaxCost)
	}
	if err := kvserver.CheckAuthToken(c.authToken); err != nil {
		return nil, err
	}
	if c.enablePprof && c.metricsURLs == "" {
		return nil, errors.New("--enable-pprof serves on the metrics listeners: set --listen-metrics-urls too")
	}
	return c, nil
}

// applyEnv sets every flag of fs from its KVSQL_* environment variable, if
// set; call it before fs.Parse, so that command-line flags override it.
func applyEnv(fs *flag.FlagSet) error {
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		if v, ok := os.LookupEnv(envName(f.Name)); ok && envErr == nil {
			if err := f.Value.Set(v); err != nil {
				envErr = fmt.Errorf("%s=%q: %w", envName(f.Name), v, err)
			}
		}
	})
	return envErr
}

func newLogger(c *config, w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", c.logLevel)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch c.logFormat {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", c.logFormat)
}

// openBackend picks the backend from the endpoint URL's scheme.
func openBackend(ctx context.Context, c *config, log *slog.Logger, obs backends.Observer) (backends.Backend, notify.Source, error) {
	ep := c.endpoint
	if ep == "" {
		ep = "sqlite://" + filepath.Join(c.dataDir, sqlite.DefaultFile)
	}
	scheme, rest, ok := strings.Cut(ep, "://")
	if !ok {
		hint := ""
		if strings.Contains(ep, "=") {
			hint = " (a key=value connection string is not accepted: write it as a postgres:// URL)"
		}
		return nil, nil, fmt.Errorf("--endpoint is not a URL%s: want sqlite://PATH, postgres://USER:PASS@HOST:PORT/DB or mysql://USER:PASS@tcp(HOST:PORT)/DB; the value is not shown, as it may hold a password", hint)
	}
	if !schemeRE.MatchString(scheme) {
		return nil, nil, errors.New("--endpoint does not start with a scheme: want sqlite://, postgres:// or mysql://; the value is not shown, as it may hold a password")
	}
	switch scheme {
	case "sqlite":
		path, _, _ := strings.Cut(rest, "?")
		if path == "" {
			return nil, nil, errors.New("--endpoint sqlite:// needs a file path, e.g. sqlite://kvsql-data/state.db")
		}
		src := local.New()
		be, err := sqlite.Open(ctx, sqlite.Config{
			Path:   path,
			Engine: backends.EngineConfig{Logger: log.With("component", "sqlite"), OnCommit: src.Publish, Observer: obs, CompactSleep: c.compactSleep, SerialWrites: c.pipeline == "off"},
		})
		if err != nil {
			return nil, nil, err
		}
		if c.notifyMode == "poll" {
			return be, poll.Source{Interval: c.pollInterval}, nil
		}
		return be, src, nil
	case "postgres", "postgresql":
		st, err := postgres.Open(ctx, postgres.Config{
			URL:              ep,
			StatementTimeout: c.stmtTimeout,
			SessionTimeout:   c.sessionTimeout,
			Engine:           backends.EngineConfig{Logger: log.With("component", "postgres"), Observer: obs, CompactSleep: c.compactSleep, SerialWrites: c.pipeline != "on"},
		})
		if err != nil {
			return nil, nil, fmt.Errorf("%w (endpoint %s)", err, describeEndpoint(ep))
		}
		if c.notifyMode == "poll" {
			return st, poll.Source{Interval: c.pollInterval}, nil
		}
		return st, pgnotify.New(st.Pool(), postgres.NotifyChannel, log.With("component", "pgnotify")), nil
	case "mysql":
		st, err := mysql.Open(ctx, mysql.Config{DSN: ep, SessionTimeout: c.sessionTimeout, Engine: backends.EngineConfig{Logger: log.With("component", "mysql"), Observer: obs, CompactSleep: c.compactSleep, SerialWrites: c.pipeline != "on"}})
		if err != nil {
			return nil, nil, fmt.Errorf("%w (endpoint %s)", err, describeEndpoint(ep))
		}
		if c.notifyMode == "poll" {
			return st, poll.Source{Interval: c.pollInterval}, nil
		}
		if err := binlog.Check(ctx, st.DB()); err != nil {
			_ = st.Close()
			return nil, nil, err
		}
		return st, binlog.New(binlog.Config{Driver: st.DriverConfig(), DB: st.DB(), ServerID: uint32(c.serverID), Logger: log.With("component", "binlog")}), nil
	}
	return nil, nil, fmt.Errorf("--endpoint: unknown scheme %q; supported: sqlite://, postgres://, mysql://", scheme)
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "snapshot":
			return runSnapshot(ctx, args[1:], stdout, stderr)
		case "migrate":
			return runMigrate(ctx, args[1:], stdout, stderr)
		}
	}
	c, err := parseFlags(args, stderr)
	if err != nil {
		return err
	}
	if c.version {
		fmt.Fprintf(stdout, "kvsql %s\netcd API %s\n", Version, kvserver.EtcdVersion)
		return nil
	}
	log, err := newLogger(c, stderr)
	if err != nil {
		return err
	}
	if c.notifyMode != "auto" && c.notifyMode != "poll" {
		return fmt.Errorf("--notify %q: want auto or poll", c.notifyMode)
	}
	if c.pipeline != "auto" && c.pipeline != "on" && c.pipeline != "off" {
		return fmt.Errorf("--write-pipelining %q: want auto, on or off", c.pipeline)
	}
	urls, err := parseClientURLs(c)
	if err != nil {
		return err
	}
	tlsInfo, err := clientTLS(c, urls)
	if err != nil {
		return err
	}
	fwdTLS, err := forwardTLS(tlsInfo)
	if err != nil {
		return err
	}
	if tlsInfo != nil {
		tlsInfo.HandshakeFailure = func(conn *tls.Conn, err error) {
			log.Warn("rejected connection on client endpoint", "remote", conn.RemoteAddr().String(), "err", err)
		}
	}
	lns, err := listenClients(urls)
	if err != nil {
		return err
	}
	closeListeners := func() {
		for _, l := range lns {
			_ = l.Close()
		}
	}
	// Every client URL serves /metrics, so the registry always exists.
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := kvserver.NewMetrics(reg)
	metricsHandler := promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
	metricsAddrs, err := parseMetricsURLs(c.metricsURLs)
	if err != nil {
		closeListeners()
		return err
	}
	metricsSrv, err := kvserver.ListenMetrics(kvserver.MetricsServerConfig{
		Addrs: metricsAddrs, Metrics: metricsHandler, Pprof: c.enablePprof, Logger: log,
	})
	if err != nil {
		closeListeners()
		return err
	}
	defer metricsSrv.Close()
	be, src, err := openBackend(ctx, c, log, metrics)
	if err != nil {
		closeListeners()
		return scrub(err, c.endpoint)
	}
	defer func() {
		if err := be.Close(); err != nil {
			log.Error("closing the database", "err", err)
		}
	}()
	advertise := c.advertiseURLs
	if advertise == "" {
		advertise = c.listenURLs
	}
	srv, err := kvserver.New(kvserver.Config{
		Backend:                be,
		Notify:                 src,
		Logger:                 log,
		Name:                   c.name,
		ClientURLs:             strings.Split(advertise, ","),
		MaxRequestBytes:        c.maxReqBytes,
		MaxTxnOps:              c.maxTxnOps,
		MaxRangeBytesInFlight:  c.rangeBytes,
		ProgressNotifyInterval: c.progressEvery,
		SafetyPoll:             c.safetyPoll,
		Metrics:                metrics,
		ForwardWrites:          c.forward,
		ForwardTLS:             fwdTLS,
		AuthToken:              c.authToken,
		AuthTokenTTL:           time.Duration(c.authTokenTTL) * time.Second,
		BcryptCost:             int(c.bcryptCost),
		ClientCertAuth:         c.clientCert,
		AuthRefreshInterval:    c.authRefresh,
		QuotaBackendBytes:      c.quotaBytes,
		WarningApplyDuration:   c.warnApply,
	})
	if err != nil {
		closeListeners()
		return err
	}
	srv.HandleHealth(metricsSrv.Mux()) // etcd's metrics URLs answer health probes too
	front, err := srv.NewFrontend(kvserver.FrontendConfig{Listeners: lns, TLS: tlsInfo, Metrics: metricsHandler})
	if err != nil {
		closeListeners()
		return err
	}

	runCtx, cancelRun := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelRun()
	g, gctx := errgroup.WithContext(runCtx)
	g.Go(func() error { return srv.Run(gctx) })
	served := make(chan error, 1)
	go func() { served <- front.Serve() }()
	for i, l := range lns {
		log.Info("serving etcd v3 API", "addr", l.Addr().String(), "url", urls[i].raw, "tls", l.Secure, "http_only", l.HTTPOnly)
	}
	log.Info("kvsql started", "version", Version, "etcd_api", kvserver.EtcdVersion, "name", c.name)

	var serveErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case <-gctx.Done():
	case serveErr = <-served:
		served <- serveErr
	}
	srv.Shutdown()
	graceCtx, cancelGrace := context.WithTimeout(context.Background(), shutdownGrace)
	front.Stop(graceCtx)
	cancelGrace()
	if err := <-served; err != nil && serveErr == nil {
		serveErr = err
	}
	cancelRun()
	if err := g.Wait(); err != nil {
		return err
	}
	if serveErr != nil {
		return fmt.Errorf("serving clients: %w", serveErr)
	}
	log.Info("stopped")
	return nil
}
