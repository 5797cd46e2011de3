package integration

import (
	"context"
	"crypto/rand"
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

// TestStatusSizesAndDefragment: on every backend, after data is written,
// deleted and compacted away, Status reports less in use than allocated
// (PostgreSQL once reported the same number for both), and less in use
// than while the data was there; Defragment succeeds, and on SQLite it
// gives the free pages back: the allocated size drops to what is in use.
func TestStatusSizesAndDefragment(t *testing.T) {
	t.Parallel()
	for _, b := range kvsqlBackends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			c := newClient(t, b.start(t, serverOptions{}))
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			ep := c.Endpoints()[0]
			value := make([]byte, 8<<10)
			var last int64
			for i := range 600 {
				_, _ = rand.Read(value)
				resp, err := c.Put(ctx, fmt.Sprintf("sizes/%04d", i), string(value))
				if err != nil {
					t.Fatal(err)
				}
				last = resp.Header.Revision
			}
			var full *clientv3.StatusResponse
			pollUntil(t, 60*time.Second, "Status sees the data in use", func() bool {
				var err error
				full, err = c.Status(ctx, ep)
				if err != nil {
					t.Fatal(err)
				}
				return full.DbSizeInUse >= 600*8<<10
			})
			del, err := c.Delete(ctx, "sizes/", clientv3.WithPrefix())
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.Compact(ctx, del.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
				t.Fatal(err)
			}
			var emptied *clientv3.StatusResponse
			pollUntil(t, 60*time.Second, "Status reports the deleted data as no longer in use", func() bool {
				var err error
				emptied, err = c.Status(ctx, ep)
				if err != nil {
					t.Fatal(err)
				}
				return emptied.DbSizeInUse < emptied.DbSize && emptied.DbSizeInUse < full.DbSizeInUse/2
			})
			t.Logf("full: size %d in use %d; after delete+compact (rev %d): size %d in use %d", full.DbSize, full.DbSizeInUse, last, emptied.DbSize, emptied.DbSizeInUse)
			if _, err := c.Defragment(ctx, ep); err != nil {
				t.Fatalf("Defragment: %v", err)
			}
			defragged, err := c.Status(ctx, ep)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("after defragment: size %d in use %d", defragged.DbSize, defragged.DbSizeInUse)
			if defragged.DbSizeInUse > defragged.DbSize {
				t.Errorf("after defragment: in use %d > size %d", defragged.DbSizeInUse, defragged.DbSize)
			}
			if b.name == "sqlite" {
				if defragged.DbSize >= emptied.DbSize/2 || defragged.DbSize != defragged.DbSizeInUse {
					t.Errorf("SQLite defragment: size %d -> %d (in use %d): want the free pages given back", emptied.DbSize, defragged.DbSize, defragged.DbSizeInUse)
				}
			}
			if _, err := c.Put(ctx, "after-defrag", "x"); err != nil {
				t.Errorf("put after defragment: %v", err)
			}
		})
	}
}
