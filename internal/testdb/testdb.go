// Package testdb starts throwaway PostgreSQL and MariaDB servers for tests:
// each runs in a temp dir on a free loopback port as a child of the test
// process and dies with it. It is shared by the integration tests and by
// separate test modules in this repository (integration/k8s).
package testdb

import (
	"net"
	"os"
	"sync"
	"testing"
)

var (
	exitMu sync.Mutex // guards exits
	exits  []func()
)

// atExit registers a shared server's cleanup for Main.
func atExit(f func()) {
	exitMu.Lock()
	defer exitMu.Unlock()
	exits = append(exits, f)
}

// Main runs a test binary's tests and then destroys the shared servers
// they started (their processes die with the test binary, but their data
// directories would stay behind, hundreds of megabytes each run). Call it
// from TestMain: os.Exit(testdb.Main(m)).
func Main(m *testing.M) int {
	code := m.Run()
	exitMu.Lock()
	defer exitMu.Unlock()
	for _, f := range exits {
		f()
	}
	exits = nil
	return code
}

// SkipOrFail skips a test that needs a missing database, but fails it on
// CI, where every database must be present.
func SkipOrFail(t testing.TB, err error) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatalf("required on CI: %v", err)
	}
	t.Skip(err)
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
