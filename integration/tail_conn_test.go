package integration

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/kvsql/kvsql/backends"
	"github.com/kvsql/kvsql/backends/mysql"
)

// The watch tailer reads every commit of every instance; under load it must
// not queue for a pooled connection behind client requests. These tests
// take every connection the pool may open and check that the tailer's read
// still answers while an ordinary read cannot get a connection.

func TestTailChangesOwnConnectionPostgres(t *testing.T) {
	url := freshPostgresURL(t)
	sep := "?"
	if strings.Contains(url, "?") {
		sep = "&"
	}
	st, src := openPostgres(t, url+sep+"pool_max_conns=2")
	_ = src.Close()
	t.Cleanup(func() { _ = st.Close() })
	ctx := context.Background()
	checkTailOwnConnection(t, st, func() func() {
		var held []func()
		for range 2 {
			c, err := st.Pool().Acquire(ctx)
			if err != nil {
				t.Fatalf("acquire: %v", err)
			}
			held = append(held, c.Release)
		}
		return func() {
			for _, r := range held {
				r()
			}
		}
	})
}

func TestTailChangesOwnConnectionMySQL(t *testing.T) {
	st, err := mysql.Open(context.Background(), mysql.Config{DSN: freshMySQLEndpoint(t), MaxOpenConns: 2})
	if err != nil {
		t.Fatalf("open mysql backend: %v", err)
	}
	t.Cleanup(func() { _ = st.Close() })
	ctx := context.Background()
	checkTailOwnConnection(t, st, func() func() {
		// The tailer keeps one of the two; take the other.
		c, err := st.DB().Conn(ctx)
		if err != nil {
			t.Fatalf("conn: %v", err)
		}
		return func() { _ = c.Close() }
	})
}

// checkTailOwnConnection writes a key, exhausts the pool with holdAll and
// reads the change through TailChanges.
func checkTailOwnConnection(t *testing.T, be backends.Backend, holdAll func() (release func())) {
	t.Helper()
	ctx := context.Background()
	// The tailer's first read takes its connection.
	if _, err := be.TailChanges(ctx, 0, 10); err != nil {
		t.Fatalf("first tail read: %v", err)
	}
	resp, err := be.Txn(ctx, &pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{
		RequestPut: &pb.PutRequest{Key: []byte("tail/a"), Value: []byte("v")}}}}})
	if err != nil {
		t.Fatalf("put: %v", err)
	}
	rev := resp.Header.Revision
	release := holdAll()
	defer release()

	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if _, err := be.Changes(short, rev-1, 10); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Changes with the pool exhausted: got err %v, want a deadline error (is the pool really exhausted?)", err)
	}
	tctx, tcancel := context.WithTimeout(ctx, 10*time.Second)
	defer tcancel()
	evs, err := be.TailChanges(tctx, rev-1, 10)
	if err != nil {
		t.Fatalf("TailChanges with the pool exhausted: %v", err)
	}
	if len(evs) != 1 || string(evs[0].Kv.Key) != "tail/a" || evs[0].Kv.ModRevision != rev {
		t.Fatalf("TailChanges = %v, want the put of tail/a at %d", evs, rev)
	}
}
