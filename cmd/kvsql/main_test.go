package main

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestEnvName(t *testing.T) {
	t.Parallel()
	if got := envName("data-dir"); got != "KVSQL_DATA_DIR" {
		t.Fatalf("envName(data-dir) = %q", got)
	}
}

func TestFlagsReadEnvironmentAndFlagsWin(t *testing.T) {
	t.Setenv("KVSQL_NAME", "from-env")
	t.Setenv("KVSQL_MAX_TXN_OPS", "7")
	c, err := parseFlags([]string{"--max-txn-ops", "9"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.name != "from-env" || c.maxTxnOps != 9 {
		t.Fatalf("name=%q maxTxnOps=%d; want from-env and 9", c.name, c.maxTxnOps)
	}
}

func TestBadEnvironmentValueNamesTheVariable(t *testing.T) {
	t.Setenv("KVSQL_MAX_TXN_OPS", "many")
	_, err := parseFlags(nil, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "KVSQL_MAX_TXN_OPS") {
		t.Fatalf("got %v, want an error naming KVSQL_MAX_TXN_OPS", err)
	}
}

// TestDescribeEndpointHidesPassword: the endpoint as shown in messages
// never holds its password, in any form the drivers parse, and is not shown
// at all when it does not parse.
func TestDescribeEndpointHidesPassword(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ ep, want string }{
		{"postgres://kv:secret@db:5432/kv", "postgres://kv@db:5432/kv"},
		{"postgresql://kv@db/kv?password=secret&sslmode=disable", "postgres://kv@db:5432/kv"},
		{"postgres://kv:secret@db:54x2/kv", "(not shown"},
		{"mysql://kv:secret@tcp(db:3306)/kv", "mysql://kv@tcp(db:3306)/kv"},
		{"mysql://kv:secret@tcp(db:3306/kv", "(not shown"},
	} {
		got := describeEndpoint(tc.ep)
		if strings.Contains(got, "secret") || !strings.HasPrefix(got, tc.want) {
			t.Errorf("describeEndpoint(%q) = %q, want %q...", tc.ep, got, tc.want)
		}
	}
}

// TestScrubDropsErrorsWithSecrets: an error whose text holds anything that
// may be the endpoint's password is replaced; others pass.
func TestScrubDropsErrorsWithSecrets(t *testing.T) {
	t.Parallel()
	for _, ep := range []string{
		"postgres://kv:secret@db:54x2/kv",
		"postgres://kv:sec%2Fret@db/kv",
		"postgres://kv@db/kv?sslpassword=secret",
		"host=db password='secret'",
		"mysql://kv:secret@tcp(db)/kv",
	} {
		leak := errors.New("driver says: " + strings.ReplaceAll(ep, "%2F", "/"))
		if got := scrub(leak, ep).Error(); strings.Contains(got, "secret") || strings.Contains(got, "sec/ret") {
			t.Errorf("scrub(%q) kept the secret: %s", ep, got)
		}
	}
	ok := errors.New("dial tcp 127.0.0.1:1: connect: connection refused")
	if got := scrub(ok, "postgres://kv:secret@127.0.0.1:1/kv"); !errors.Is(got, ok) {
		t.Errorf("scrub replaced a harmless error: %v", got)
	}
}

func TestWritePipeliningTakesAutoOnOrOff(t *testing.T) {
	t.Parallel()
	err := run(context.Background(), []string{"--write-pipelining=yes"}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "--write-pipelining") || !strings.Contains(err.Error(), "auto, on or off") {
		t.Fatalf("run with --write-pipelining=yes: %v; want an error naming the flag and its values", err)
	}
}
