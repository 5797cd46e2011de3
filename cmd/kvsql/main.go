// Command kvsql serves etcd's v3 API with its state in a SQL database.
// Run `kvsql --help` for the flags; each also reads a KVSQL_* environment
// variable (--data-dir: KVSQL_DATA_DIR).
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

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
	listenURLs    string
	advertiseURLs string
	name          string
	dataDir       string
	endpoint      string
	maxReqBytes   int
	maxTxnOps     int
	rangeBytes    int64
	progressEvery time.Duration
	notifyMode    string
	pollInterval  time.Duration
	safetyPoll    time.Duration
	stmtTimeout   time.Duration
	serverID      uint
	metricsURLs   string
	enablePprof   bool
	certFile      string
	keyFile       string
	caFile        string
	clientCert    bool
	forward       bool
	logLevel      string
	logFormat     string
	version       bool
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
	fs.StringVar(&c.listenURLs, "listen-client-urls", "http://127.0.0.1:2379", "comma-separated URLs to serve clients on (http:// plain, https:// TLS)")
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
	fs.IntVar(&c.maxReqBytes, "max-request-bytes", kvserver.DefaultMaxRequestBytes, "maximum client request size in bytes")
	fs.IntVar(&c.maxTxnOps, "max-txn-ops", kvserver.DefaultMaxTxnOps, "maximum operations per txn branch")
	fs.Int64Var(&c.rangeBytes, "max-range-bytes-in-flight", kvserver.DefaultMaxRangeBytesInFlight, "bytes of Range results (encoded) the server reads and holds at once; a large Range that would exceed it waits for others to finish (the oldest always proceeds, so a larger one is served alone); the process needs up to about twice this in memory for them")
	fs.DurationVar(&c.progressEvery, "watch-progress-notify-interval", kvserver.DefaultProgressNotifyInterval, "how often watches with progress_notify get a progress notification")
	fs.StringVar(&c.certFile, "cert-file", "", "TLS certificate for https:// listeners")
	fs.StringVar(&c.keyFile, "key-file", "", "TLS key for https:// listeners")
	fs.StringVar(&c.caFile, "trusted-ca-file", "", "CA bundle to verify client certificates")
	fs.BoolVar(&c.clientCert, "client-cert-auth", false, "require a client certificate signed by --trusted-ca-file")
	fs.BoolVar(&c.forward, "forward-writes", true, "PostgreSQL/MySQL with several instances: send writes to the instance holding the leader lock (at its first advertised client URL) so that every instance's writes share one group commit and fsync; without a ready connection to it, an instance writes directly. An https:// leader is verified with --trusted-ca-file (default: the system's roots) and shown --cert-file/--key-file as client certificate")
	fs.StringVar(&c.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&c.logFormat, "log-format", "text", "text or json")
	fs.BoolVar(&c.version, "version", false, "print the version and exit")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "kvsql %s: the etcd v3 API (etcd %s) on a SQL database.\n\nUsage: kvsql [flags]\n\nEvery flag also reads the environment variable KVSQL_<FLAG> (for --data-dir: KVSQL_DATA_DIR); a flag given on the command line wins.\n\nFlags:\n", Version, kvserver.EtcdVersion)
		fs.PrintDefaults()
	}
	// Environment first, so that command-line flags override it.
	var envErr error
	fs.VisitAll(func(f *flag.Flag) {
		if v, ok := os.LookupEnv(envName(f.Name)); ok && envErr == nil {
			if err := f.Value.Set(v); err != nil {
				envErr = fmt.Errorf("%s=%q: %w", envName(f.Name), v, err)
			}
		}
	})
	if envErr != nil {
		return nil, envErr
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q (flags start with --)", fs.Arg(0))
	}
	if c.enablePprof && c.metricsURLs == "" {
		return nil, errors.New("--enable-pprof serves on the metrics listeners: set --listen-metrics-urls too")
	}
	return c, nil
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
func openBackend(ctx context.Context, c *config, log *slog.Logger, onBatch func(int, time.Duration, error)) (backends.Backend, notify.Source, error) {
	ep := c.endpoint
	if ep == "" {
		ep = "sqlite://" + filepath.Join(c.dataDir, sqlite.DefaultFile)
	}
	scheme, rest, ok := strings.Cut(ep, "://")
	if !ok {
		return nil, nil, fmt.Errorf("--endpoint %q: want a URL such as sqlite:///var/lib/kvsql/state.db", redact(ep))
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
			Engine: backends.EngineConfig{Logger: log.With("component", "sqlite"), OnCommit: src.Publish, OnBatch: onBatch},
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
			Engine:           backends.EngineConfig{Logger: log.With("component", "postgres"), OnBatch: onBatch},
		})
		if err != nil {
			return nil, nil, fmt.Errorf("%w (endpoint %s)", err, redact(ep))
		}
		if c.notifyMode == "poll" {
			return st, poll.Source{Interval: c.pollInterval}, nil
		}
		return st, pgnotify.New(st.Pool(), postgres.NotifyChannel, log.With("component", "pgnotify")), nil
	case "mysql":
		st, err := mysql.Open(ctx, mysql.Config{DSN: ep, Engine: backends.EngineConfig{Logger: log.With("component", "mysql"), OnBatch: onBatch}})
		if err != nil {
			return nil, nil, fmt.Errorf("%w (endpoint %s)", err, redactMySQL(ep))
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

// redact hides a password in a URL-like string.
func redact(s string) string {
	if u, err := url.Parse(s); err == nil && u.User != nil {
		if _, has := u.User.Password(); has {
			u.User = url.UserPassword(u.User.Username(), "xxxxx")
			return u.String()
		}
	}
	return s
}

// redactMySQL hides the password of a mysql://user:pass@tcp(...)/db endpoint.
func redactMySQL(s string) string {
	rest := strings.TrimPrefix(s, "mysql://")
	at := strings.LastIndex(rest, "@")
	if at < 0 {
		return s
	}
	user, _, hasPass := strings.Cut(rest[:at], ":")
	if !hasPass {
		return s
	}
	return "mysql://" + user + ":xxxxx" + rest[at:]
}

func tlsConfig(c *config) (*tls.Config, error) {
	if c.certFile == "" || c.keyFile == "" {
		return nil, errors.New("an https:// listener needs --cert-file and --key-file")
	}
	cert, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		return nil, fmt.Errorf("load --cert-file/--key-file: %w", err)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if tc.ClientCAs, err = trustedCAs(c); err != nil {
		return nil, err
	}
	if c.clientCert {
		if tc.ClientCAs == nil {
			return nil, errors.New("--client-cert-auth needs --trusted-ca-file")
		}
		tc.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return tc, nil
}

// trustedCAs loads --trusted-ca-file (nil if it is not set).
func trustedCAs(c *config) (*x509.CertPool, error) {
	if c.caFile == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(c.caFile)
	if err != nil {
		return nil, fmt.Errorf("read --trusted-ca-file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("--trusted-ca-file %s holds no PEM certificate", c.caFile)
	}
	return pool, nil
}

// forwardTLSConfig is the client side of TLS for writes forwarded to an
// https:// leader: it trusts --trusted-ca-file (or the system's roots) and
// presents this instance's certificate, which a leader with
// --client-cert-auth requires.
func forwardTLSConfig(c *config) (*tls.Config, error) {
	roots, err := trustedCAs(c)
	if err != nil {
		return nil, err
	}
	tc := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	if c.certFile != "" && c.keyFile != "" {
		cert, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
		if err != nil {
			return nil, fmt.Errorf("load --cert-file/--key-file: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

type listener struct {
	net.Listener
	tls *tls.Config
}

func listen(c *config) ([]listener, error) {
	var out []listener
	for _, raw := range strings.Split(c.listenURLs, ",") {
		u, err := url.Parse(strings.TrimSpace(raw))
		if err != nil || u.Host == "" {
			return nil, fmt.Errorf("--listen-client-urls %q: want http://host:port or https://host:port", raw)
		}
		var tc *tls.Config
		switch u.Scheme {
		case "http":
		case "https":
			if tc, err = tlsConfig(c); err != nil {
				return nil, err
			}
		default:
			return nil, fmt.Errorf("--listen-client-urls %q: scheme must be http or https", raw)
		}
		l, err := net.Listen("tcp", u.Host)
		if err != nil {
			for _, o := range out {
				_ = o.Close()
			}
			return nil, fmt.Errorf("listen on %s: %w", u.Host, err)
		}
		out = append(out, listener{Listener: l, tls: tc})
	}
	return out, nil
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
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
	lns, err := listen(c)
	if err != nil {
		return err
	}
	var metrics *kvserver.Metrics
	var metricsSrv []*http.Server
	var onBatch func(int, time.Duration, error)
	if c.metricsURLs != "" {
		reg := prometheus.NewRegistry()
		reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
		metrics = kvserver.NewMetrics(reg)
		onBatch = metrics.OnBatch
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		if c.enablePprof {
			mux.HandleFunc("/debug/pprof/", pprof.Index)
			mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
			mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
			mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
			mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		}
		for _, raw := range strings.Split(c.metricsURLs, ",") {
			u, err := url.Parse(strings.TrimSpace(raw))
			if err != nil || u.Scheme != "http" || u.Host == "" {
				return fmt.Errorf("--listen-metrics-urls %q: want http://host:port", raw)
			}
			ml, err := net.Listen("tcp", u.Host)
			if err != nil {
				return fmt.Errorf("listen for metrics on %s: %w", u.Host, err)
			}
			hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
			metricsSrv = append(metricsSrv, hs)
			go func() { _ = hs.Serve(ml) }()
			log.Info("serving metrics", "addr", ml.Addr().String())
		}
		defer func() {
			for _, hs := range metricsSrv {
				_ = hs.Close()
			}
		}()
	}
	be, src, err := openBackend(ctx, c, log, onBatch)
	if err != nil {
		for _, l := range lns {
			_ = l.Close()
		}
		return err
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
	fwdTLS, err := forwardTLSConfig(c)
	if err != nil {
		return err
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
	})
	if err != nil {
		return err
	}

	runCtx, cancelRun := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelRun()
	g, gctx := errgroup.WithContext(runCtx)
	g.Go(func() error { return srv.Run(gctx) })
	var grpcServers []*grpc.Server
	for _, l := range lns {
		opts := srv.GRPCOptions()
		if l.tls != nil {
			opts = append(opts, grpc.Creds(credentials.NewTLS(l.tls)))
		}
		gs := grpc.NewServer(opts...)
		srv.Register(gs)
		grpcServers = append(grpcServers, gs)
		g.Go(func() error { return gs.Serve(l.Listener) })
		log.Info("serving etcd v3 API", "addr", l.Addr().String(), "tls", l.tls != nil)
	}
	log.Info("kvsql started", "version", Version, "etcd_api", kvserver.EtcdVersion, "name", c.name)

	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case <-gctx.Done():
	}
	srv.Shutdown()
	stopped := make(chan struct{})
	go func() {
		for _, gs := range grpcServers {
			gs.GracefulStop()
		}
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(shutdownGrace):
		log.Warn("in-flight requests did not finish in time; closing them")
		for _, gs := range grpcServers {
			gs.Stop()
		}
		<-stopped
	}
	cancelRun()
	if err := g.Wait(); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return err
	}
	log.Info("stopped")
	return nil
}
