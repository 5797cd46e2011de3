package testdb

import (
	"context"
	"testing"

	"github.com/jackc/pgx/v5"
)

// TestPostgresCrashLeavesNothingRunning: Crash is a machine dying, so when
// it returns no process of the server may run on, not even a backend
// in the middle of a transaction. Killing only the postmaster fails this:
// its children each run in a session of their own and outlive it.
func TestPostgresCrashLeavesNothingRunning(t *testing.T) {
	p, err := NewPostgres()
	if err != nil {
		SkipOrFail(t, err)
	}
	defer p.Destroy()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, p.URL("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "BEGIN; CREATE TABLE t (k int); INSERT INTO t VALUES (1)"); err != nil {
		t.Fatal(err)
	}
	var backend int
	if err := conn.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&backend); err != nil {
		t.Fatal(err)
	}
	p.mu.Lock()
	postmaster := p.proc.Pid
	p.mu.Unlock()
	kids := childrenOf(postmaster)
	if len(kids) < 2 {
		t.Fatalf("the postmaster (pid %d) has children %v: want its background processes and our backend", postmaster, kids)
	}
	found := false
	for _, k := range kids {
		found = found || k == backend
	}
	if !found {
		t.Fatalf("our backend (pid %d) is not among the postmaster's children %v", backend, kids)
	}

	p.Crash()
	for _, pid := range append(kids, postmaster) {
		if alive(pid) {
			t.Errorf("process %d of the server still runs after Crash", pid)
		}
	}
	if _, err := conn.Exec(ctx, "COMMIT"); err == nil {
		t.Error("a transaction committed after Crash")
	}
}
