package integration

// Secrets in --endpoint never reach the output of the kvsql binary: its
// startup errors for endpoints that do not parse or cannot connect, its
// logs at debug level while serving PostgreSQL and MySQL, and its pprof
// endpoints.

import (
	"database/sql"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kvsql/kvsql/backends/mysql"
)

// secretForms are the ways a password may show in output.
func secretForms(secret string) []string {
	return []string{secret, strings.ReplaceAll(secret, "/", "%2F"), strings.ReplaceAll(secret, "/", "")}
}

// TestSecretsNeverShownAtStart: endpoints that do not parse (in every
// shape the issue lists: URL, ?password=, key=value, MySQL DSNs) or whose
// database cannot be reached make kvsql exit with an error that names
// --endpoint and holds no part of the password, given as a flag or in
// KVSQL_ENDPOINT.
func TestSecretsNeverShownAtStart(t *testing.T) {
	t.Parallel()
	const secret = "s3cr/et"
	for _, ep := range []string{
		"postgres://kv:s3cret@db:54x2/kv",
		"postgres://kv:s3cr/et@127.0.0.1:1/kv",
		"postgres://kv:s3cr%2Fet@127.0.0.1:1/kv",
		"postgresql://kv@127.0.0.1:1/kv?password=s3cr/et",
		"postgres://kv@127.0.0.1:1/kv?sslmode=disable&password=s3cret",
		"postgres://kv:s3cret@127.0.0.1:1/kv?sslmode=bogus",
		"postgres://kv@db:54x2/kv?password=s3cret",
		"host=127.0.0.1 port=1 user=kv password=s3cret",
		"host=db password='s3cr/et' user=kv",
		"mysql://kv:s3cret@tcp(127.0.0.1:1)/kv",
		"mysql://kv:s3cr/et@tcp(127.0.0.1:1)/kv",
		"mysql://kv:s3cret@tcp(127.0.0.1:1/kv",
		"mysql://kv:s3cret@127.0.0.1:1/kv",
		"mysql://kv:s3cret@tcp(127.0.0.1:1)/kv?timeout=xx",
		"mysql://kv:s3cret@tcp(127.0.0.1:1)/kv?tls=skip-verify&tls-ca=/nonexistent",
		"kv:s3cret@db://kv",
	} {
		for _, viaEnv := range []bool{false, true} {
			args := []string{"--listen-client-urls=http://127.0.0.1:0", "--data-dir=" + filepath.Join(t.TempDir(), "d"), "--log-level=debug"}
			var env []string
			if viaEnv {
				env = []string{"KVSQL_ENDPOINT=" + ep}
			} else {
				args = append(args, "--endpoint="+ep)
			}
			out, errOut, code := runKVSQL(t, env, args...)
			if code == 0 {
				t.Errorf("%q: exit 0, want a refusal", ep)
				continue
			}
			for _, s := range append(secretForms(secret), "s3cret") {
				if strings.Contains(out+errOut, s) {
					t.Errorf("%q (env %v): the output shows the password %q:\n%s", ep, viaEnv, s, out+errOut)
				}
			}
			if !strings.Contains(errOut, "endpoint") {
				t.Errorf("%q: the error does not say it is about the endpoint:\n%s", ep, errOut)
			}
		}
	}
}

// TestSecretsNeverShownWhileServing: kvsql serving PostgreSQL and MySQL
// endpoints with passwords, at debug level, with pprof on: no log line,
// no pprof answer and no error shows the password, and
// /debug/pprof/cmdline is not served.
func TestSecretsNeverShownWhileServing(t *testing.T) {
	t.Parallel()
	const secret = "t0pS3cretPW"
	// PostgreSQL (trust authentication: the password is in the URL only).
	pgURL := strings.Replace(freshPostgresURL(t), "postgres://kvsql@", "postgres://kvsql:"+secret+"@", 1)
	pgURL += "&sslpassword=" + secret
	// MySQL, a user with this password.
	my, err := sharedMy()
	if err != nil {
		skipOrFail(t, err)
	}
	dbName := fmt.Sprintf("kvsql_secret_%d", myDBCounter.Add(1))
	root, err := sql.Open("mysql", "root@unix("+my.socket()+")/")
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		"CREATE DATABASE " + dbName,
		"CREATE USER 'kvpw'@'%' IDENTIFIED BY '" + secret + "'",
		"GRANT ALL PRIVILEGES ON *.* TO 'kvpw'@'%'",
	} {
		if _, err := root.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	_ = root.Close()
	cfg, err := mysql.ParseEndpoint(my.dsn("kvsql", dbName))
	if err != nil {
		t.Fatal(err)
	}
	myURL := fmt.Sprintf("mysql://kvpw:%s@tcp(%s)/%s", secret, cfg.Addr, dbName)
	check, err := sql.Open("mysql", fmt.Sprintf("kvpw:%s@tcp(%s)/%s", secret, cfg.Addr, dbName))
	if err != nil {
		t.Fatal(err)
	}
	if err := check.Ping(); err != nil {
		t.Fatalf("the password user cannot connect: %v", err)
	}
	_ = check.Close()

	for name, ep := range map[string]string{"postgres": pgURL, "mysql": myURL} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			metrics := procFreeAddr(t)
			p := startKVSQLProc(t, "--endpoint="+ep, "--listen-metrics-urls=http://"+metrics, "--enable-pprof")
			watchOnePut(t, p.client(t), "secret/"+name)
			for _, path := range []string{"/debug/pprof/cmdline", "/debug/pprof/goroutine?debug=2", "/debug/pprof/", "/metrics"} {
				resp, err := http.Get("http://" + metrics + path)
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if path == "/debug/pprof/cmdline" && resp.StatusCode != http.StatusNotFound {
					t.Errorf("GET %s: %d, want 404", path, resp.StatusCode)
				}
				if strings.Contains(string(body), secret) {
					t.Errorf("GET %s shows the password", path)
				}
			}
			for _, path := range []string{"/health", "/v3/maintenance/status"} {
				method := http.MethodGet
				if strings.HasPrefix(path, "/v3/") {
					method = http.MethodPost
				}
				if _, body := httpDo(t, method, "http://"+p.Addr+path, "{}"); strings.Contains(body, secret) {
					t.Errorf("%s shows the password", path)
				}
			}
			p.signal(syscall.SIGTERM)
			p.wait(30 * time.Second)
			if logs := p.allLog.String(); strings.Contains(logs, secret) {
				t.Errorf("the logs show the password:\n%s", logs)
			} else if !strings.Contains(logs, "level=DEBUG") {
				t.Errorf("no debug logs to check:\n%s", logs)
			}
		})
	}

}
