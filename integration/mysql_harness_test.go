package integration

import (
	"context"
	"database/sql"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/kvsql/kvsql/backends/mysql"
	"github.com/kvsql/kvsql/internal/testdb"
	"github.com/kvsql/kvsql/notify/binlog"
)

// myServer is a throwaway MariaDB (or MySQL) server with the binary log on
// in ROW format (see testdb.MariaDB).
type myServer struct{ *testdb.MariaDB }

// newMyServer initialises and starts a server; extra are mariadbd options
// that replace the binlog defaults (for misconfiguration tests).
func newMyServer(extra ...string) (*myServer, error) {
	m, err := testdb.NewMariaDB(extra...)
	if err != nil {
		return nil, err
	}
	return &myServer{m}, nil
}

func (m *myServer) socket() string { return m.Socket() }

func (m *myServer) start() error { return m.Start() }

// stop sends sig (SIGTERM: clean shutdown, SIGKILL: crash) and waits.
func (m *myServer) stop(sig syscall.Signal) { m.Stop(sig) }

func (m *myServer) destroy() { m.Destroy() }

// dsn returns a kvsql endpoint for database db as user.
func (m *myServer) dsn(userName, db string) string { return m.DSN(userName, db) }

func (m *myServer) createDB(name string) error { return m.CreateDB(name) }

// ownMariaDB starts a MariaDB server for this test alone (so that it may
// stop it; extra replaces the default server flags) with an empty
// database, and returns the server and the kvsql endpoint of that database.
func ownMariaDB(t testing.TB, extra ...string) (*myServer, string) {
	t.Helper()
	m, err := newMyServer(extra...)
	if err != nil {
		skipOrFail(t, err)
	}
	t.Cleanup(m.destroy)
	if err := m.createDB("kv"); err != nil {
		t.Fatal(err)
	}
	return m, m.dsn("kvsql", "kv")
}

var sharedMy = sync.OnceValues(func() (*myServer, error) {
	m, err := testdb.SharedMariaDB()
	if err != nil {
		return nil, err
	}
	return &myServer{m}, nil
})

// myDBCounter numbers databases that tests create on sharedMy themselves.
var myDBCounter atomic.Int64

// freshMySQLEndpoint returns an endpoint for a new, empty database: on
// $TEST_MYSQL_DSN's server (user:pass@tcp(host:port)/) if set, else on the
// shared throwaway server.
func freshMySQLEndpoint(t testing.TB) string {
	t.Helper()
	return testdb.FreshMySQLEndpoint(t)
}

// mysqlSQL opens a plain database/sql handle on a kvsql MySQL endpoint (the
// caller closes it) and returns the database name.
func mysqlSQL(t testing.TB, endpoint string) (*sql.DB, string) {
	t.Helper()
	cfg, err := mysql.ParseEndpoint(endpoint)
	if err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("mysql", cfg.FormatDSN())
	if err != nil {
		t.Fatal(err)
	}
	return db, cfg.DBName
}

// openMySQL opens a kvsql MySQL backend and its binlog source.
func openMySQL(t testing.TB, endpoint string) (*mysql.Store, *binlog.Source) {
	t.Helper()
	st, err := mysql.Open(context.Background(), mysql.Config{DSN: endpoint})
	if err != nil {
		t.Fatalf("open mysql backend: %v", err)
	}
	if err := binlog.Check(context.Background(), st.DB()); err != nil {
		_ = st.Close()
		t.Fatalf("binlog check: %v", err)
	}
	return st, binlog.New(binlog.Config{Driver: st.DriverConfig(), DB: st.DB()})
}

// startMySQL starts kvsql on a fresh MariaDB database.
func startMySQL(t testing.TB, opts serverOptions) server {
	t.Helper()
	st, src := openMySQL(t, freshMySQLEndpoint(t))
	t.Cleanup(func() { _ = src.Close() })
	return serveKVSQL(t, st, src, opts)
}
