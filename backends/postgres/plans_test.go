package postgres

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/kvsql/kvsql/backends"
)

// TestGrowthRefreshesPlans: once the revision has doubled from the first
// commit's (and reached firstAnalyzeRev), the store analyzes kv_current and
// kv_log, so that plans cached while the tables were small are made again
// (plans.go); before that it does not. With either writer: serial (the
// binary's default here) and pipelined.
func TestGrowthRefreshesPlans(t *testing.T) {
	for _, serial := range []bool{true, false} {
		t.Run(fmt.Sprintf("serial=%v", serial), func(t *testing.T) {
			t.Parallel()
			testGrowthRefreshesPlans(t, serial)
		})
	}
}

func testGrowthRefreshesPlans(t *testing.T, serial bool) {
	ctx := context.Background()
	st, c := openWithConnConfig(t, backends.EngineConfig{SerialWrites: serial})
	analyzed := func() bool {
		t.Helper()
		var n int
		if err := c.QueryRow(ctx, `SELECT count(*) FROM pg_stat_user_tables
			WHERE relname IN ('kv_current', 'kv_log') AND last_analyze IS NOT NULL`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n == 2
	}
	// Puts from 16 writers, so that they share group commits, until the
	// store's revision reaches rev.
	putUntil := func(rev int64) {
		t.Helper()
		var wg sync.WaitGroup
		errs := make(chan error, 16)
		for w := range 16 {
			wg.Go(func() {
				for i := 0; ; i++ {
					resp, err := st.Txn(ctx, &pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{
						RequestPut: &pb.PutRequest{Key: fmt.Appendf(nil, "/registry/pods/w%d/%d", w, i), Value: []byte("v")}}}}})
					if err != nil {
						errs <- err
						return
					}
					if resp.Header.Revision >= rev {
						return
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
	}
	putUntil(firstAnalyzeRev - 100)
	// A refresh started by mistake would have had time to finish.
	time.Sleep(500 * time.Millisecond)
	if analyzed() {
		t.Fatalf("the tables were analyzed below revision %d", firstAnalyzeRev)
	}
	putUntil(firstAnalyzeRev + 50)
	for deadline := time.Now().Add(30 * time.Second); !analyzed(); {
		if time.Now().After(deadline) {
			t.Fatalf("kv_current and kv_log not analyzed after the revision passed %d", firstAnalyzeRev)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
