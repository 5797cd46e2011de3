package main

import (
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

func TestRedactHidesPassword(t *testing.T) {
	t.Parallel()
	got := redact("postgres://user:secret@db:5432/kv")
	if strings.Contains(got, "secret") {
		t.Fatalf("redact left the password in %q", got)
	}
}

func TestRedactMySQLHidesPassword(t *testing.T) {
	t.Parallel()
	got := redactMySQL("mysql://kv:s3cret@tcp(db:3306)/kv")
	if strings.Contains(got, "s3cret") || !strings.Contains(got, "tcp(db:3306)/kv") {
		t.Fatalf("redactMySQL = %q", got)
	}
}
