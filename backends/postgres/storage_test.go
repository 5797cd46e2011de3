package postgres

import (
	"bytes"
	"context"
	"crypto/rand"
	"testing"

	"github.com/jackc/pgx/v5"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/kvsql/kvsql/backends"
	"github.com/kvsql/kvsql/internal/testdb"
)

// TestSmallValuesStayInline: a put of a Kubernetes-sized value (2 KiB,
// incompressible) writes its value into kv_log's own row, not into TOAST
// chunks (schema/010); a value larger than a page still goes out of line.
// Both read back whole. The cost docs/operations.md names is pinned too: a
// value under 8 KB is stored uncompressed even when it compresses well.
func TestSmallValuesStayInline(t *testing.T) {
	ctx := context.Background()
	st, c := openWithConn(t)
	chunks := func() int64 {
		t.Helper()
		var toast string
		if err := c.QueryRow(ctx, `SELECT reltoastrelid::regclass::text FROM pg_class WHERE oid = 'kv_log'::regclass`).Scan(&toast); err != nil {
			t.Fatal(err)
		}
		var n int64
		if err := c.QueryRow(ctx, `SELECT count(*) FROM `+toast).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	putValue := func(key string, v []byte) []byte {
		t.Helper()
		if _, err := st.Txn(ctx, &pb.TxnRequest{Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{
			RequestPut: &pb.PutRequest{Key: []byte(key), Value: v}}}}}); err != nil {
			t.Fatal(err)
		}
		return v
	}
	put := func(key string, size int) []byte {
		t.Helper()
		v := make([]byte, size)
		_, _ = rand.Read(v)
		return putValue(key, v)
	}
	get := func(key string, want []byte) {
		t.Helper()
		r, err := st.Range(ctx, &pb.RangeRequest{Key: []byte(key)})
		if err != nil {
			t.Fatal(err)
		}
		if len(r.Kvs) != 1 || !bytes.Equal(r.Kvs[0].Value, want) {
			t.Errorf("%s read back %d keys, or a different value", key, len(r.Kvs))
		}
	}
	small := put("/registry/pods/default/small", 2048)
	if n := chunks(); n != 0 {
		t.Errorf("a 2 KiB value took %d TOAST chunks, want it stored in kv_log's row", n)
	}
	get("/registry/pods/default/small", small)
	large := put("/registry/configmaps/default/large", 64<<10)
	if n := chunks(); n == 0 {
		t.Error("a 64 KiB value is not in TOAST chunks")
	}
	get("/registry/configmaps/default/large", large)

	text := putValue("/registry/configmaps/default/text", bytes.Repeat([]byte("abcd"), 1024))
	var stored int64
	if err := c.QueryRow(ctx, `SELECT pg_column_size(value) FROM kv_log WHERE key = $1`, []byte("/registry/configmaps/default/text")).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if stored < int64(len(text)) {
		t.Errorf("a compressible 4 KiB value is stored in %d bytes: compressed, which docs/operations.md says it is not", stored)
	}
	get("/registry/configmaps/default/text", text)
}

// openWithConn opens a Store on a fresh database and a connection of its
// own to that database, both closed at cleanup.
func openWithConn(t *testing.T) (*Store, *pgx.Conn) {
	t.Helper()
	return openWithConnConfig(t, backends.EngineConfig{})
}

// openWithConnConfig is openWithConn with the Store's engine configured by
// cfg.
func openWithConnConfig(t *testing.T, cfg backends.EngineConfig) (*Store, *pgx.Conn) {
	t.Helper()
	ctx := context.Background()
	st, err := Open(ctx, Config{URL: testdb.FreshPostgresURL(t), Engine: cfg})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	c, err := pgx.Connect(ctx, st.Pool().Config().ConnConfig.ConnString())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(ctx) })
	return st, c
}
