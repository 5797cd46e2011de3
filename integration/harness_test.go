// Package integration tests kvsql end to end: real servers on loopback,
// driven by go.etcd.io/etcd/client/v3, etcdctl and an in-process etcd to
// compare against.
package integration

import (
	"context"
	"net"
	"net/url"
	"path/filepath"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"

	"github.com/kvsql/kvsql/backends"
	"github.com/kvsql/kvsql/backends/sqlite"
	"github.com/kvsql/kvsql/kvserver"
	"github.com/kvsql/kvsql/notify/local"
)

// server is a running etcd-API server under test.
type server struct {
	Endpoint string
}

// serverOptions tune a kvsql started by a starter.
type serverOptions struct {
	MaxRequestBytes        int
	MaxTxnOps              int
	ProgressNotifyInterval time.Duration
	// SafetyPoll, if set, replaces the tailer's safety poll interval; tests
	// of a change stream set it high so that only the stream delivers.
	SafetyPoll time.Duration
	// AuthToken, AuthTokenTTL (seconds) and BcryptCost are etcd's
	// --auth-token, --auth-token-ttl and --bcrypt-cost (0: defaults).
	AuthToken    string
	AuthTokenTTL uint
	BcryptCost   int
	// AuthRefreshInterval, if set, replaces --auth-refresh-interval.
	AuthRefreshInterval time.Duration
	// RawGRPC makes the differential runner speak plain gRPC, without
	// clientv3's interceptors (they retry auth errors, logging in again).
	RawGRPC bool
	// MaxRangeBytesInFlight, if set, replaces the budget of Range results
	// in flight.
	MaxRangeBytesInFlight int64
}

// starter starts a fresh, empty server for one test and stops it at cleanup.
type starter func(t testing.TB, opts serverOptions) server

// startSQLite starts kvsql in-process on SQLite in a temp dir.
func startSQLite(t testing.TB, opts serverOptions) server {
	t.Helper()
	be, src := openSQLite(t)
	return serveKVSQL(t, be, src, opts)
}

// openSQLite opens a fresh SQLite backend in a temp dir with its change
// source.
func openSQLite(t testing.TB) (backends.Backend, *local.Source) {
	t.Helper()
	src := local.New()
	be, err := sqlite.Open(context.Background(), sqlite.Config{
		Path:   filepath.Join(t.TempDir(), "state.db"),
		Engine: backends.EngineConfig{OnCommit: src.Publish},
	})
	if err != nil {
		t.Fatalf("open sqlite: %v", err)
	}
	return be, src
}

// serveKVSQL serves be on a free loopback port until the test ends.
func serveKVSQL(t testing.TB, be backends.Backend, src interface {
	Next(context.Context, int64) (int64, error)
}, opts serverOptions) server {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ep := "http://" + lis.Addr().String()
	return serveFrontend(t, be, src, opts, kvserver.FrontendConfig{Listeners: []kvserver.ClientListener{{Listener: lis}}}, ep)
}

// serveFrontend serves be on fc's listeners until the test ends; ep is the
// advertised client URL.
func serveFrontend(t testing.TB, be backends.Backend, src interface {
	Next(context.Context, int64) (int64, error)
}, opts serverOptions, fc kvserver.FrontendConfig, ep string) server {
	t.Helper()
	srv, err := kvserver.New(kvserver.Config{
		Backend:                be,
		Notify:                 src,
		ClientURLs:             []string{ep},
		MaxRequestBytes:        opts.MaxRequestBytes,
		MaxTxnOps:              opts.MaxTxnOps,
		ProgressNotifyInterval: opts.ProgressNotifyInterval,
		SafetyPoll:             opts.SafetyPoll,
		MaxRangeBytesInFlight:  opts.MaxRangeBytesInFlight,
		LeaseCheckInterval:     100 * time.Millisecond,
		ForwardWrites:          true, // the binary's default
		AuthToken:              opts.AuthToken,
		AuthTokenTTL:           time.Duration(opts.AuthTokenTTL) * time.Second,
		BcryptCost:             opts.BcryptCost,
		AuthRefreshInterval:    opts.AuthRefreshInterval,
	})
	if err != nil {
		t.Fatal(err)
	}
	// Served as the binary serves it: gRPC and HTTP on one port.
	front, err := srv.NewFrontend(fc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- srv.Run(ctx) }()
	serveDone := make(chan error, 1)
	go func() { serveDone <- front.Serve() }()
	t.Cleanup(func() {
		srv.Shutdown()
		front.Stop(context.Background())
		if err := <-serveDone; err != nil {
			t.Errorf("serve: %v", err)
		}
		cancel()
		if err := <-runDone; err != nil {
			t.Errorf("kvserver.Run: %v", err)
		}
		if err := be.Close(); err != nil {
			t.Errorf("close backend: %v", err)
		}
	})
	return server{Endpoint: ep}
}

// startEtcd starts a real single-member etcd in-process in a temp dir.
func startEtcd(t testing.TB, opts serverOptions) server {
	t.Helper()
	cfg := etcdConfig(t, opts)
	t.Cleanup(runEtcd(t, cfg).Close)
	return server{Endpoint: cfg.ListenClientUrls[0].String()}
}

// etcdConfig configures a single-member etcd in a temp dir on free
// loopback ports.
func etcdConfig(t testing.TB, opts serverOptions) *embed.Config {
	t.Helper()
	cfg := embed.NewConfig()
	cfg.Dir = t.TempDir()
	cfg.Logger = "zap"
	cfg.LogLevel = "error"
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.NewNop())
	free := func() url.URL {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		return url.URL{Scheme: "http", Host: l.Addr().String()}
	}
	cu, pu := free(), free()
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{cu}, []url.URL{cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{pu}, []url.URL{pu}
	cfg.InitialCluster = cfg.Name + "=" + pu.String()
	if opts.MaxRequestBytes > 0 {
		cfg.MaxRequestBytes = uint(opts.MaxRequestBytes)
	}
	if opts.MaxTxnOps > 0 {
		cfg.MaxTxnOps = uint(opts.MaxTxnOps)
	}
	if opts.ProgressNotifyInterval > 0 {
		cfg.WatchProgressNotifyInterval = opts.ProgressNotifyInterval
	}
	if opts.AuthToken != "" {
		cfg.AuthToken = opts.AuthToken
	}
	if opts.AuthTokenTTL > 0 {
		cfg.AuthTokenTTL = opts.AuthTokenTTL
	}
	if opts.BcryptCost > 0 {
		cfg.BcryptCost = uint(opts.BcryptCost)
	}
	return cfg
}

// runEtcd starts etcd with cfg (again, after a Close, on the same data) and
// waits until it is ready.
func runEtcd(t testing.TB, cfg *embed.Config) *embed.Etcd {
	t.Helper()
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatalf("start etcd: %v", err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		e.Close()
		t.Fatal("etcd did not become ready")
	}
	return e
}

// newClient returns a clientv3 client for s, closed at cleanup.
func newClient(t testing.TB, s server) *clientv3.Client {
	t.Helper()
	c, err := clientv3.New(clientv3.Config{
		Endpoints:   []string{s.Endpoint},
		DialTimeout: 5 * time.Second,
		Logger:      zap.NewNop(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// clientsFor returns a client for each server, closed at cleanup.
func clientsFor(t testing.TB, servers []server) []*clientv3.Client {
	t.Helper()
	var clients []*clientv3.Client
	for _, s := range servers {
		clients = append(clients, newClient(t, s))
	}
	return clients
}

// kvsqlBackends lists the backends every backend-agnostic suite runs on.
var kvsqlBackends = []struct {
	name  string
	start starter
}{
	{"sqlite", startSQLite},
	{"postgres", startPostgres},
	{"mysql", startMySQL},
}
