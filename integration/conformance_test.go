package integration

import (
	"context"
	"testing"

	"github.com/kvsql/kvsql/backends"
	"github.com/kvsql/kvsql/backends/backendtest"
	"github.com/kvsql/kvsql/backends/mysql"
	"github.com/kvsql/kvsql/backends/postgres"
)

// The backend conformance suite on the server databases (SQLite runs it in
// backends/sqlite).

func openPostgresBackend(tb testing.TB) backends.Backend {
	return openPostgresAt(tb, freshPostgresURL(tb), backends.EngineConfig{})
}

func openMySQLBackend(tb testing.TB) backends.Backend {
	st, src := openMySQL(tb, freshMySQLEndpoint(tb))
	_ = src.Close()
	tb.Cleanup(func() { _ = st.Close() })
	return st
}

func TestConformancePostgres(t *testing.T) {
	backendtest.Run(t, openPostgresBackend)
	backendtest.RunTuned(t, func(tb testing.TB, cfg backends.EngineConfig) backends.Backend {
		return openPostgresAt(tb, freshPostgresURL(tb), cfg)
	})
}

func TestSharedDatabasePostgres(t *testing.T) {
	backendtest.RunShared(t, func(tb testing.TB) func(cfg backends.EngineConfig) backends.Backend {
		url := freshPostgresURL(tb)
		return func(cfg backends.EngineConfig) backends.Backend { return openPostgresAt(tb, url, cfg) }
	})
}

// openPostgresAt opens an engine configured by cfg on the database at url,
// closed at cleanup.
func openPostgresAt(tb testing.TB, url string, cfg backends.EngineConfig) backends.Backend {
	st, err := postgres.Open(context.Background(), postgres.Config{URL: url, Engine: cfg})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = st.Close() })
	return st
}

func TestConformanceMySQL(t *testing.T) {
	backendtest.Run(t, openMySQLBackend)
	backendtest.RunTuned(t, func(tb testing.TB, cfg backends.EngineConfig) backends.Backend {
		return openMySQLAt(tb, freshMySQLEndpoint(tb), cfg)
	})
}

func TestSharedDatabaseMySQL(t *testing.T) {
	backendtest.RunShared(t, func(tb testing.TB) func(cfg backends.EngineConfig) backends.Backend {
		dsn := freshMySQLEndpoint(tb)
		return func(cfg backends.EngineConfig) backends.Backend { return openMySQLAt(tb, dsn, cfg) }
	})
}

// openMySQLAt opens an engine configured by cfg on the database at dsn,
// closed at cleanup.
func openMySQLAt(tb testing.TB, dsn string, cfg backends.EngineConfig) backends.Backend {
	st, err := mysql.Open(context.Background(), mysql.Config{DSN: dsn, Engine: cfg})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = st.Close() })
	return st
}

func BenchmarkPostgres(b *testing.B) { backendtest.Bench(b, openPostgresBackend) }

func BenchmarkMySQL(b *testing.B) { backendtest.Bench(b, openMySQLBackend) }
