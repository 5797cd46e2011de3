package k8s

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/kvsql/kvsql/backends"
	"github.com/kvsql/kvsql/backends/mysql"
	"github.com/kvsql/kvsql/backends/postgres"
	"github.com/kvsql/kvsql/backends/sqlite"
	"github.com/kvsql/kvsql/integration/k8s/etcdtest"
	"github.com/kvsql/kvsql/internal/testdb"
	"github.com/kvsql/kvsql/kvserver"
	"github.com/kvsql/kvsql/notify"
	"github.com/kvsql/kvsql/notify/binlog"
	"github.com/kvsql/kvsql/notify/local"
	"github.com/kvsql/kvsql/notify/pgnotify"
)

// serverOptions are the server settings a test needs.
type serverOptions struct {
	// ProgressNotifyInterval, if set, is the server's watch progress
	// notification interval (etcd's --experimental-watch-progress-notify-interval).
	ProgressNotifyInterval time.Duration
}

// backend starts a fresh, empty etcd-API server for one test, stops it at
// cleanup and returns its client endpoint.
type backend struct {
	name  string
	start func(t *testing.T, opts serverOptions) string
}

// allBackends is etcd, the reference, followed by kvsql on each database.
var allBackends = []backend{
	{"etcd", startEtcd},
	{"sqlite", startSQLite},
	{"postgres", startPostgres},
	{"mariadb", startMariaDB},
}

// selectedBackends honours $K8S_BACKENDS (comma-separated names), so that
// one backend can be run alone.
func selectedBackends() []backend {
	sel := os.Getenv("K8S_BACKENDS")
	if sel == "" {
		return allBackends
	}
	var out []backend
	for _, b := range allBackends {
		for _, n := range strings.Split(sel, ",") {
			if strings.TrimSpace(n) == b.name {
				out = append(out, b)
			}
		}
	}
	return out
}

// startEtcd starts the reference etcd (etcdtest.Start).
func startEtcd(t *testing.T, opts serverOptions) string {
	return etcdtest.Start(t, opts.ProgressNotifyInterval)
}

// startSQLite starts kvsql in-process on SQLite in a temp dir.
func startSQLite(t *testing.T, opts serverOptions) string {
	t.Helper()
	src := local.New()
	be, err := sqlite.Open(context.Background(), sqlite.Config{
		Path:   filepath.Join(t.TempDir(), "state.db"),
		Engine: backends.EngineConfig{OnCommit: src.Publish},
	})
	if err != nil {
		t.Fatalf("open sqlite: %v", err)
	}
	return serveKVSQL(t, be, src, opts)
}

// startPostgres starts kvsql on a fresh database of a throwaway PostgreSQL.
func startPostgres(t *testing.T, opts serverOptions) string {
	t.Helper()
	st, err := postgres.Open(context.Background(), postgres.Config{URL: testdb.FreshPostgresURL(t)})
	if err != nil {
		t.Fatalf("open postgres backend: %v", err)
	}
	src := pgnotify.New(st.Pool(), postgres.NotifyChannel, nil)
	t.Cleanup(func() { _ = src.Close() })
	return serveKVSQL(t, st, src, opts)
}

// startMariaDB starts kvsql on a fresh database of a throwaway MariaDB.
func startMariaDB(t *testing.T, opts serverOptions) string {
	t.Helper()
	st, err := mysql.Open(context.Background(), mysql.Config{DSN: testdb.FreshMySQLEndpoint(t)})
	if err != nil {
		t.Fatalf("open mysql backend: %v", err)
	}
	if err := binlog.Check(context.Background(), st.DB()); err != nil {
		_ = st.Close()
		t.Fatalf("binlog check: %v", err)
	}
	src := binlog.New(binlog.Config{Driver: st.DriverConfig(), DB: st.DB()})
	t.Cleanup(func() { _ = src.Close() })
	return serveKVSQL(t, st, src, opts)
}

// serveKVSQL serves be on a free loopback port until the test ends.
func serveKVSQL(t *testing.T, be backends.Backend, src notify.Source, opts serverOptions) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ep := "http://" + lis.Addr().String()
	srv, err := kvserver.New(kvserver.Config{
		Backend:                be,
		Notify:                 src,
		ClientURLs:             []string{ep},
		ProgressNotifyInterval: opts.ProgressNotifyInterval,
		LeaseCheckInterval:     100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(srv.GRPCOptions()...)
	srv.Register(gs)
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- srv.Run(ctx) }()
	serveDone := make(chan error, 1)
	go func() { serveDone <- gs.Serve(lis) }()
	t.Cleanup(func() {
		srv.Shutdown()
		gs.GracefulStop()
		<-serveDone
		cancel()
		// A test that ends at once may cancel Run while it is still
		// starting up; Run then returns the cancellation.
		if err := <-runDone; err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("kvserver.Run: %v", err)
		}
		if err := be.Close(); err != nil {
			t.Errorf("close backend: %v", err)
		}
	})
	return ep
}
