package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestStatusAfterChurn calls Maintenance.Status — which kube-apiserver
// polls for its storage-size metric — after enough writes, deletes and a
// compaction that the database holds free space. MariaDB reports InnoDB
// free space (DATA_FREE) larger than a table's data and indexes, and the
// in-use size was once computed as an unsigned subtraction that failed.
func TestStatusAfterChurn(t *testing.T) {
	for _, b := range kvsqlBackends {
		t.Run(b.name, func(t *testing.T) {
			c := newClient(t, b.start(t, serverOptions{}))
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			value := strings.Repeat("x", 8<<10)
			var last int64
			for round := range 2 {
				for i := range 400 {
					resp, err := c.Put(ctx, fmt.Sprintf("churn/%04d", i), value)
					if err != nil {
						t.Fatalf("round %d put %d: %v", round, i, err)
					}
					last = resp.Header.Revision
				}
			}
			if _, err := c.Delete(ctx, "churn/", clientv3.WithPrefix()); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Compact(ctx, last, clientv3.WithCompactPhysical()); err != nil {
				t.Fatal(err)
			}
			st, err := c.Status(ctx, c.Endpoints()[0])
			if err != nil {
				t.Fatalf("Status after churn: %v", err)
			}
			if st.DbSize <= 0 || st.DbSizeInUse < 0 || st.DbSizeInUse > st.DbSize {
				t.Fatalf("Status: dbSize %d, dbSizeInUse %d; want 0 <= in use <= size, size > 0", st.DbSize, st.DbSizeInUse)
			}
			t.Logf("dbSize %d, dbSizeInUse %d", st.DbSize, st.DbSizeInUse)
		})
	}
}
