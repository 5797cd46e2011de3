package sqlite_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/kvsql/kvsql/backends"
	"github.com/kvsql/kvsql/backends/backendtest"
	"github.com/kvsql/kvsql/backends/sqlite"
)

func open(tb testing.TB) backends.Backend {
	return openAt(tb, filepath.Join(tb.TempDir(), "state.db"), backends.EngineConfig{})
}

func TestConformance(t *testing.T) {
	backendtest.Run(t, open)
	backendtest.RunTuned(t, func(tb testing.TB, cfg backends.EngineConfig) backends.Backend {
		return openAt(tb, filepath.Join(tb.TempDir(), "state.db"), cfg)
	})
}

// TestSharedFile runs the cases of several instances on one database on
// two engines opening one file, which SQLite's own locking serialises as it
// would two processes.
func TestSharedFile(t *testing.T) {
	backendtest.RunShared(t, func(tb testing.TB) func(cfg backends.EngineConfig) backends.Backend {
		path := filepath.Join(tb.TempDir(), "state.db")
		return func(cfg backends.EngineConfig) backends.Backend { return openAt(tb, path, cfg) }
	})
}

// openAt opens an engine configured by cfg on the database file at path,
// closed at cleanup (a failed Close fails the test).
func openAt(tb testing.TB, path string, cfg backends.EngineConfig) backends.Backend {
	be, err := sqlite.Open(context.Background(), sqlite.Config{Path: path, Engine: cfg})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := be.Close(); err != nil {
			tb.Error(err)
		}
	})
	return be
}

func BenchmarkSQLite(b *testing.B) { backendtest.Bench(b, open) }
