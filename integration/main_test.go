package integration

import (
	"fmt"
	"os"
	"testing"

	"github.com/kvsql/kvsql/internal/testdb"
)

// toolDir holds binaries built for this test run (the kvsql binary, and
// etcdctl when $ETCDCTL is not set); TestMain removes it at the end.
var toolDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "kvsql-integration-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		os.Exit(2)
	}
	toolDir = dir
	code := testdb.Main(m)
	_ = os.RemoveAll(dir)
	os.Exit(code)
}
