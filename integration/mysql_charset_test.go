package integration

import (
	"context"
	"strings"
	"testing"

	"github.com/kvsql/kvsql/backends/mysql"
)

// TestMySQLCharsetCannotInject: an endpoint asking for a multibyte character
// set (gbk) must not let key bytes end the string literal of the write
// connections' statements, whose arguments are escaped into the text.
func TestMySQLCharsetCannotInject(t *testing.T) {
	t.Parallel()
	ep := freshMySQLEndpoint(t)
	sep := "?"
	if strings.Contains(ep, "?") {
		sep = "&"
	}
	st, src := openMySQL(t, ep+sep+"charset=gbk")
	t.Cleanup(func() { _ = src.Close() })
	c := newClient(t, serveKVSQL(t, st, src, serverOptions{}))
	ctx := context.Background()
	for _, k := range []string{"k\xbf') -- ", "k\xbf'\"\\", "\xbf\x5c\x27", "k\x00\xff\xbf'"} {
		v := "v" + k
		if _, err := c.Put(ctx, k, v); err != nil {
			t.Fatalf("put %q: %v", k, err)
		}
		resp, err := c.Get(ctx, k)
		if err != nil || len(resp.Kvs) != 1 || string(resp.Kvs[0].Key) != k || string(resp.Kvs[0].Value) != v {
			t.Fatalf("get %q = %v, %v; want the same bytes back", k, resp, err)
		}
	}
	db, _ := mysqlSQL(t, ep)
	defer db.Close()
	var n int
	if err := db.QueryRow(`SELECT COUNT(*) FROM kv_current`).Scan(&n); err != nil || n != 4 {
		t.Fatalf("kv_current holds %d rows (%v), want 4", n, err)
	}
}

// TestMySQLEndpointRefusesCharsetVariables: session variables that would
// change the character set after kvsql set it are refused with a message.
func TestMySQLEndpointRefusesCharsetVariables(t *testing.T) {
	t.Parallel()
	ep := freshMySQLEndpoint(t)
	sep := "?"
	if strings.Contains(ep, "?") {
		sep = "&"
	}
	_, err := openMySQLErr(ep + sep + "character_set_client=gbk")
	if err == nil || !strings.Contains(err.Error(), "character_set_client") {
		t.Fatalf("open with character_set_client=gbk: %v; want a refusal naming it", err)
	}
}

// openMySQLErr opens (and closes again) a MySQL backend, returning Open's error.
func openMySQLErr(ep string) (*mysql.Store, error) {
	st, err := mysql.Open(context.Background(), mysql.Config{DSN: ep})
	if err == nil {
		_ = st.Close()
	}
	return st, err
}
