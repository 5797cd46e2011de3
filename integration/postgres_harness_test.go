package integration

import (
	"context"
	"syscall"
	"testing"

	"github.com/kvsql/kvsql/backends"
	"github.com/kvsql/kvsql/backends/postgres"
	"github.com/kvsql/kvsql/internal/testdb"
	"github.com/kvsql/kvsql/notify/pgnotify"
)

// pgServer is a throwaway PostgreSQL cluster (see testdb.Postgres).
type pgServer struct{ *testdb.Postgres }

// skipOrFail skips a test that needs a missing database, but fails it on CI,
// where every database must be present.
func skipOrFail(t testing.TB, err error) {
	t.Helper()
	testdb.SkipOrFail(t, err)
}

// newPGServer initialises and starts a cluster.
func newPGServer() (*pgServer, error) {
	p, err := testdb.NewPostgres()
	if err != nil {
		return nil, err
	}
	return &pgServer{p}, nil
}

// start runs postgres and waits until it accepts connections.
func (p *pgServer) start() error { return p.Start() }

// stop stops the server with sig (SIGINT: fast shutdown, SIGQUIT:
// immediate, like a crash) and waits for it to exit.
func (p *pgServer) stop(sig syscall.Signal) { p.Stop(sig) }

func (p *pgServer) url(db string) string { return p.URL(db) }

func (p *pgServer) destroy() { p.Destroy() }

// ownPostgres starts a PostgreSQL cluster for this test alone (so that it
// may stop it) and returns it with the URL of an empty database on it.
func ownPostgres(t *testing.T) (*pgServer, string) {
	t.Helper()
	p, err := newPGServer()
	if err != nil {
		skipOrFail(t, err)
	}
	t.Cleanup(p.destroy)
	return p, freshPostgresURLOn(t, p)
}

// freshPostgresURL returns the URL of a new, empty database: on
// $TEST_POSTGRES_URL's server if set, else on the shared throwaway cluster.
func freshPostgresURL(t testing.TB) string {
	t.Helper()
	return testdb.FreshPostgresURL(t)
}

// openPostgres opens a kvsql postgres backend and its notify source.
func openPostgres(t testing.TB, url string) (*postgres.Store, *pgnotify.Source) {
	t.Helper()
	st, err := postgres.Open(context.Background(), postgres.Config{URL: url})
	if err != nil {
		t.Fatalf("open postgres backend: %v", err)
	}
	return st, pgnotify.New(st.Pool(), postgres.NotifyChannel, nil)
}

// startPostgres starts kvsql on a fresh PostgreSQL database.
func startPostgres(t testing.TB, opts serverOptions) server {
	t.Helper()
	st, src := openPostgres(t, freshPostgresURL(t))
	t.Cleanup(func() { _ = src.Close() })
	return serveKVSQL(t, st, src, opts)
}

var _ backends.Backend = (*postgres.Store)(nil)
