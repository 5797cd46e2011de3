package integration

// TLS to the database with full verification, against throwaway servers
// that accept only TLS: PostgreSQL (sslmode=verify-full, sslrootcert) and
// MariaDB (kvsql's tls=verify-full, tls-ca, tls-cert, tls-key), the binlog
// replication connection included.

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kvsql/kvsql/backends/mysql"
	"github.com/kvsql/kvsql/backends/postgres"
	"github.com/kvsql/kvsql/internal/testdb"
)

// watchOnePut puts key through c and waits for its event on a watch made
// before, and returns the put's revision.
func watchOnePut(t *testing.T, c *clientv3.Client, key string) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	wch := c.Watch(ctx, key)
	put, err := c.Put(ctx, key, "v")
	if err != nil {
		t.Fatal(err)
	}
	select {
	case wr := <-wch:
		if len(wr.Events) != 1 || wr.Events[0].Kv.ModRevision != put.Header.Revision {
			t.Fatalf("watch: %+v, want the put at revision %d", wr, put.Header.Revision)
		}
	case <-ctx.Done():
		t.Fatal("the watch event did not arrive")
	}
	return put.Header.Revision
}

// TestPostgresTLSVerifyFull: against a PostgreSQL that accepts TCP only
// over TLS, sslmode=verify-full with the wrong CA is refused, and with the
// right one kvsql serves writes and watches (the pool, the LISTEN and the
// tailer connections all over TLS).
func TestPostgresTLSVerifyFull(t *testing.T) {
	t.Parallel()
	ca, other := newTestCA(t, "pg-ca"), newTestCA(t, "other-ca")
	cert := ca.server("pg-server")
	p, err := testdb.NewPostgresTLS(cert.CertPEM, cert.KeyPEM)
	if err != nil {
		skipOrFail(t, err)
	}
	t.Cleanup(p.Destroy)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	if _, err := postgres.Open(ctx, postgres.Config{URL: p.URL("postgres")}); err == nil || !strings.Contains(err.Error(), "no encryption") {
		t.Fatalf("without TLS: %v, want the server to refuse (pg_hba: no encryption)", err)
	}
	_, err = postgres.Open(ctx, postgres.Config{URL: p.TLSURL("postgres", other.CAFile)})
	if err == nil || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
		t.Fatalf("verify-full with the wrong CA: %v, want a certificate verification error", err)
	}
	url := p.TLSURL("postgres", ca.CAFile)
	st, src := openPostgres(t, url)
	t.Cleanup(func() { _ = src.Close() })
	kv := serveKVSQL(t, st, src, serverOptions{SafetyPoll: time.Hour})
	watchOnePut(t, newClient(t, kv), "pg-tls")

	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var withTLS, without int
	if err := conn.QueryRow(ctx, `SELECT count(*) FILTER (WHERE s.ssl), count(*) FILTER (WHERE NOT s.ssl)
		FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE a.datname = 'postgres' AND a.client_addr IS NOT NULL`).Scan(&withTLS, &without); err != nil {
		t.Fatal(err)
	}
	if without != 0 || withTLS < 3 {
		t.Fatalf("connections to the database: %d over TLS, %d without; want every one (at least pool, LISTEN, tailer) over TLS", withTLS, without)
	}
}

// TestMySQLTLSVerifyFull: against a MariaDB whose user may connect only
// over TLS (REQUIRE SSL), kvsql's tls=verify-full with tls-ca refuses the
// wrong CA and works with the right one, watch events arriving through the
// binlog replication connection (the safety poll is off); a user that
// needs a client certificate (REQUIRE X509) connects with tls-cert and
// tls-key.
func TestMySQLTLSVerifyFull(t *testing.T) {
	t.Parallel()
	ca, other := newTestCA(t, "my-ca"), newTestCA(t, "other-ca")
	cert := ca.server("my-server")
	caPEM, err := os.ReadFile(ca.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	m, err := testdb.NewMariaDBTLS(cert.CertPEM, cert.KeyPEM, caPEM)
	if err != nil {
		skipOrFail(t, err)
	}
	t.Cleanup(m.Destroy)
	if err := m.CreateDB("kvtls"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	base := m.DSN("kvtls", "kvtls")

	if _, err := mysql.Open(ctx, mysql.Config{DSN: base}); err == nil || !strings.Contains(err.Error(), "Access denied") {
		t.Fatalf("without TLS: %v, want the server to refuse the REQUIRE SSL user", err)
	}
	if _, err := mysql.Open(ctx, mysql.Config{DSN: base + "?tls=verify-full&tls-ca=" + other.CAFile}); err == nil || !strings.Contains(err.Error(), "certificate signed by unknown authority") {
		t.Fatalf("verify-full with the wrong CA: %v, want a certificate verification error", err)
	}
	endpoint := base + "?tls=verify-full&tls-ca=" + ca.CAFile
	st, src := openMySQL(t, endpoint)
	t.Cleanup(func() { _ = src.Close() })
	kv := serveKVSQL(t, st, src, serverOptions{SafetyPoll: time.Hour})
	c := newClient(t, kv)
	for i := range 3 {
		watchOnePut(t, c, fmt.Sprintf("my-tls/%d", i))
	}
	var name, cipher string
	if err := st.DB().QueryRowContext(ctx, "SHOW SESSION STATUS LIKE 'Ssl_cipher'").Scan(&name, &cipher); err != nil || cipher == "" {
		t.Fatalf("Ssl_cipher on kvsql's connection: %q %v, want a cipher", cipher, err)
	}

	// A client certificate, for a user that requires one.
	root, err := sql.Open("mysql", "root@unix("+m.Socket()+")/")
	if err != nil {
		t.Fatal(err)
	}
	defer root.Close()
	for _, q := range []string{"CREATE USER 'kvx509'@'%' REQUIRE X509", "GRANT ALL PRIVILEGES ON *.* TO 'kvx509'@'%'", "CREATE DATABASE kvx509"} {
		if _, err := root.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	x509Base := m.DSN("kvx509", "kvx509") + "?tls-ca=" + ca.CAFile
	if _, err := mysql.Open(ctx, mysql.Config{DSN: x509Base}); err == nil || !strings.Contains(err.Error(), "Access denied") {
		t.Fatalf("REQUIRE X509 user without a client certificate: %v, want Access denied", err)
	}
	clientCert := ca.client("my-client", "kvx509")
	st2, err := mysql.Open(ctx, mysql.Config{DSN: x509Base + "&tls-cert=" + clientCert.CertFile + "&tls-key=" + clientCert.KeyFile})
	if err != nil {
		t.Fatalf("REQUIRE X509 user with tls-cert/tls-key: %v", err)
	}
	_ = st2.Close()
}
