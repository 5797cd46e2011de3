package integration

import (
	"testing"

	"github.com/kvsql/kvsql/backends"
	"github.com/kvsql/kvsql/backends/backendtest"
)

// The backend conformance suite on the server databases (SQLite runs it in
// backends/sqlite).

func openPostgresBackend(tb testing.TB) backends.Backend {
	st, src := openPostgres(tb, freshPostgresURL(tb))
	_ = src.Close()
	tb.Cleanup(func() { _ = st.Close() })
	return st
}

func openMySQLBackend(tb testing.TB) backends.Backend {
	st, src := openMySQL(tb, freshMySQLEndpoint(tb))
	_ = src.Close()
	tb.Cleanup(func() { _ = st.Close() })
	return st
}

func TestConformancePostgres(t *testing.T) { backendtest.Run(t, openPostgresBackend) }

func TestConformanceMySQL(t *testing.T) { backendtest.Run(t, openMySQLBackend) }

func BenchmarkPostgres(b *testing.B) { backendtest.Bench(b, openPostgresBackend) }

func BenchmarkMySQL(b *testing.B) { backendtest.Bench(b, openMySQLBackend) }
