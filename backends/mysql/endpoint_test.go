package mysql

import (
	"strings"
	"testing"
)

func TestSplitTLSParams(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		dsn, want string
		p         tlsParams
	}{
		{"kv:pw@tcp(db:3306)/kv", "kv:pw@tcp(db:3306)/kv", tlsParams{}},
		{"kv:pw@tcp(db:3306)/kv?timeout=5s", "kv:pw@tcp(db:3306)/kv?timeout=5s", tlsParams{}},
		{"kv:pw@tcp(db:3306)/kv?tls=true", "kv:pw@tcp(db:3306)/kv?tls=true", tlsParams{mode: "true", hasMode: true}},
		{"kv:pw@tcp(db:3306)/kv?tls-ca=/etc/ca.pem", "kv:pw@tcp(db:3306)/kv", tlsParams{ca: "/etc/ca.pem"}},
		{"kv:p?w@tcp(db:3306)/kv?timeout=5s&tls=verify-full&tls-cert=/c.pem&tls-key=%2Fk.pem", "kv:p?w@tcp(db:3306)/kv?timeout=5s",
			tlsParams{cert: "/c.pem", key: "/k.pem", mode: "verify-full", hasMode: true}},
	} {
		got, p, err := splitTLSParams(tc.dsn)
		if err != nil || got != tc.want || p != tc.p {
			t.Errorf("splitTLSParams(%q) = %q, %+v, %v; want %q, %+v", tc.dsn, got, p, err, tc.want, tc.p)
		}
	}
}

// TestParseEndpointTLS: kvsql's TLS parameters become a registered
// tls.Config that verifies the endpoint's host; without them the driver's
// own tls values apply; a non-verifying mode with a CA is refused.
func TestParseEndpointTLS(t *testing.T) {
	t.Parallel()
	cfg, err := ParseEndpoint("mysql://kv:pw@tcp(127.0.0.1:3306)/kv?tls=verify-full&timeout=5s")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.TLS == nil || cfg.TLS.InsecureSkipVerify || cfg.TLS.ServerName != "127.0.0.1" || cfg.Timeout.String() != "5s" || cfg.Passwd != "pw" {
		t.Fatalf("tls=verify-full: TLS %+v, timeout %v", cfg.TLS, cfg.Timeout)
	}
	cfg, err = ParseEndpoint("mysql://kv@tcp(db:3306)/kv?tls=skip-verify")
	if err != nil || cfg.TLS == nil || !cfg.TLS.InsecureSkipVerify {
		t.Fatalf("tls=skip-verify: %+v %v", cfg, err)
	}
	if _, err := ParseEndpoint("mysql://kv@tcp(db:3306)/kv?tls=skip-verify&tls-ca=/x/ca.pem"); err == nil || !strings.Contains(err.Error(), "need tls=verify-full") {
		t.Fatalf("tls=skip-verify with tls-ca: %v, want a refusal", err)
	}
	if _, err := ParseEndpoint("mysql://kv@tcp(db:3306)/kv?tls-ca=/does/not/exist.pem"); err == nil || !strings.Contains(err.Error(), "tls-ca") {
		t.Fatalf("missing CA file: %v, want an error naming tls-ca", err)
	}
}
