package postgres

import (
	"os"
	"testing"

	"github.com/kvsql/kvsql/internal/testdb"
)

// TestMain removes the shared throwaway database servers' files afterwards.
func TestMain(m *testing.M) { os.Exit(testdb.Main(m)) }
