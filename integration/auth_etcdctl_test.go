package integration

// etcdctl's auth commands against the kvsql binary and a real etcd: the
// same script, the same output.

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
)

const (
	errUserEmpty  = "Error: etcdserver: user name is empty"
	errDenied     = "Error: etcdserver: permission denied"
	errAuthFailed = "Error: etcdserver: authentication failed, invalid user ID or password"
)

// authTargets are a kvsql process and an etcd with the same auth flags.
func authTargets(kvsqlArgs []string, etcdOpts serverOptions) []ctlTarget {
	return []ctlTarget{
		{"kvsql", func(t *testing.T) string {
			return startKVSQLProc(t, append([]string{"--bcrypt-cost=4"}, kvsqlArgs...)...).Addr
		}},
		{"etcd", func(t *testing.T) string {
			etcdOpts.BcryptCost = 4
			return startEtcd(t, etcdOpts).Endpoint
		}},
	}
}

// tenantScript sets up root and two tenants each confined to its prefix,
// enables auth, and checks what each may do.
var tenantScript = []ctlStep{
	step("User root created\n", "user", "add", "root:rootpw"),
	step("Role root is granted to user root\n", "user", "grant-role", "root", "root"),
	step("Role t1 created\n", "role", "add", "t1"),
	step("Role t1 updated\n", "role", "grant-permission", "t1", "readwrite", "/t1/", "--prefix"),
	step("Role t1 updated\n", "role", "grant-permission", "t1", "read", "/shared/", "--prefix"),
	step("Role t2 created\n", "role", "add", "t2"),
	step("Role t2 updated\n", "role", "grant-permission", "t2", "readwrite", "/t2/", "--prefix"),
	step("User u1 created\n", "user", "add", "u1:pw1"),
	step("Role t1 is granted to user u1\n", "user", "grant-role", "u1", "t1"),
	step("User u2 created\n", "user", "add", "u2:pw2"),
	step("Role t2 is granted to user u2\n", "user", "grant-role", "u2", "t2"),
	step("OK\n", "put", "/shared/motd", "hello"),
	step("Authentication Enabled\n", "auth", "enable"),

	stepErr(errUserEmpty, "put", "/t1/a", "x"),
	stepErr(errUserEmpty, "get", "/t1/a"),
	step("OK\n", "--user=u1:pw1", "put", "/t1/a", "1"),
	step("OK\n", "--user=u1:pw1", "put", "/t1/b", "2"),
	step("/t1/a\n1\n/t1/b\n2\n", "--user=u1:pw1", "get", "/t1/", "--prefix"),
	step("/shared/motd\nhello\n", "--user=u1:pw1", "get", "/shared/motd"),
	stepErr(errDenied, "--user=u1:pw1", "put", "/shared/motd", "x"),
	stepErr(errDenied, "--user=u1:pw1", "put", "/t2/a", "x"),
	stepErr(errDenied, "--user=u1:pw1", "get", "/t2/a"),
	stepErr(errDenied, "--user=u1:pw1", "get", "", "--from-key"),
	stepErr(errDenied, "--user=u1:pw1", "del", "/t2/", "--prefix"),
	step("OK\n", "--user=u2:pw2", "put", "/t2/a", "2"),
	stepErr(errDenied, "--user=u2:pw2", "get", "/t1/", "--prefix"),
	{args: []string{"--user=u1:pw1", "txn", "-i"},
		stdin: "value(\"/t1/a\") = \"1\"\n\nput /t1/c 3\n\nput /t2/c 3\n\n",
		want:  "compares:\nsuccess requests (get, put, del):\nfailure requests (get, put, del):\n",
		err:   errDenied},
	{args: []string{"--user=u1:pw1", "txn", "-i"},
		stdin: "value(\"/t1/a\") = \"1\"\n\nput /t1/c 3\n\nget /t1/a\n\n",
		want:  "compares:\nsuccess requests (get, put, del):\nfailure requests (get, put, del):\nSUCCESS\n\nOK\n"},
	stepErr(errAuthFailed, "--user=u1:wrong", "get", "/t1/a"),
	stepErr(errAuthFailed, "--user=nobody:x", "get", "/t1/a"),
	stepErr(errDenied, "--user=u1:pw1", "user", "list"),
	stepErr(errDenied, "--user=u1:pw1", "role", "add", "t3"),
	step("root\nu1\nu2\n", "--user=root:rootpw", "user", "list"),
	step("t1\nt2\n", "--user=root:rootpw", "role", "list"),
	step("User: u1\nRoles: t1\n", "--user=u1:pw1", "user", "get", "u1"),
	stepErr(errDenied, "--user=u1:pw1", "user", "get", "u2"),
	step("Role t1\nKV Read:\n\t[/shared/, /shared0) (prefix /shared/)\n\t[/t1/, /t10) (prefix /t1/)\nKV Write:\n\t[/t1/, /t10) (prefix /t1/)\n", "--user=u1:pw1", "role", "get", "t1"),
	stepErr(errDenied, "--user=u1:pw1", "role", "get", "t2"),
	step("Authentication Status: true\nAuthRevision: 12\n", "--user=root:rootpw", "auth", "status"),
	stepErr("Error: etcdserver: invalid auth management", "--user=root:rootpw", "user", "delete", "root"),
	step("Permission of range [/t1/, /t10) is revoked from role t1\n", "--user=root:rootpw", "role", "revoke-permission", "t1", "/t1/", "--prefix"),
	stepErr(errDenied, "--user=u1:pw1", "get", "/t1/a"),
	step("Role t1 updated\n", "--user=root:rootpw", "role", "grant-permission", "t1", "readwrite", "/t1/", "--prefix"),
	{args: []string{"--user=root:rootpw", "user", "passwd", "u1", "--interactive=false"}, stdin: "pw1-new\n", want: "Password updated\n"},
	stepErr(errAuthFailed, "--user=u1:pw1", "get", "/t1/a"),
	step("/t1/a\n1\n", "--user=u1:pw1-new", "get", "/t1/a"),
	step("Role t2 is revoked from user u2\n", "--user=root:rootpw", "user", "revoke-role", "u2", "t2"),
	stepErr(errDenied, "--user=u2:pw2", "get", "/t2/a"),
	step("User u2 deleted\n", "--user=root:rootpw", "user", "delete", "u2"),
	stepErr(errAuthFailed, "--user=u2:pw2", "get", "/t2/a"),
	step("Authentication Disabled\n", "--user=root:rootpw", "auth", "disable"),
	step("/t1/a\n1\n", "get", "/t1/a"),
	step("Authentication Status: false\nAuthRevision: 18\n", "auth", "status"),
}

// TestEtcdctlAuth: root and tenant users with prefix permissions, enable
// and disable, wrong passwords, changed passwords, deleted users, with
// simple tokens.
func TestEtcdctlAuth(t *testing.T) {
	t.Parallel()
	runScriptOn(t, authTargets(nil, serverOptions{}), tenantScript)
}

// writeRSAKeys writes an RSA key pair as PEM files and returns etcd's
// --auth-token value for them.
func writeRSAKeys(t testing.TB, signMethod string) string {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	privFile, pubFile := filepath.Join(dir, "jwt.key"), filepath.Join(dir, "jwt.pub")
	if err := os.WriteFile(privFile, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pubFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o600); err != nil {
		t.Fatal(err)
	}
	return "jwt,pub-key=" + pubFile + ",priv-key=" + privFile + ",sign-method=" + signMethod + ",ttl=5m"
}

// TestEtcdctlAuthJWT: the tenant script with JWT tokens (RS256 and PS256
// keys from files, etcd's flag syntax).
func TestEtcdctlAuthJWT(t *testing.T) {
	t.Parallel()
	for _, method := range []string{"RS256", "PS256"} {
		t.Run(method, func(t *testing.T) {
			t.Parallel()
			spec := writeRSAKeys(t, method)
			runScriptOn(t, authTargets([]string{"--auth-token=" + spec}, serverOptions{AuthToken: spec}), tenantScript)
		})
	}
}

// TestEtcdctlAuthTokenExpiry: with --auth-token-ttl=1, a simple token
// unused for longer is refused; etcdctl's client then logs in again by
// itself, so a txn whose input arrives after the token expired still
// succeeds, on kvsql as on etcd. (That the server refuses the expired
// token is checked exactly in TestDiffAuthSimpleTokenExpiry.)
func TestEtcdctlAuthTokenExpiry(t *testing.T) {
	t.Parallel()
	setup := []ctlStep{
		step("User root created\n", "user", "add", "root:rootpw"),
		step("Role root is granted to user root\n", "user", "grant-role", "root", "root"),
		step("Authentication Enabled\n", "auth", "enable"),
	}
	metrics := "" // kvsql's metrics listener
	targets := []ctlTarget{
		{"kvsql", func(t *testing.T) string {
			metrics = procFreeAddr(t)
			return startKVSQLProc(t, "--bcrypt-cost=4", "--auth-token-ttl=1", "--listen-metrics-urls=http://"+metrics).Addr
		}},
		{"etcd", func(t *testing.T) string { return startEtcd(t, serverOptions{BcryptCost: 4, AuthTokenTTL: 1}).Endpoint }},
	}
	for _, target := range targets {
		t.Run(target.name, func(t *testing.T) {
			c := newCtl(t, target.start(t))
			for _, s := range setup {
				c.ok(t, s.args...)
			}
			// etcdctl logs in, then reads the txn from stdin, which
			// arrives three TTLs later.
			pr, pw := io.Pipe()
			cmd := c.command(t.Context(), "", "--user=root:rootpw", "txn", "-i")
			cmd.Stdin = pr
			var out, errOut strings.Builder
			cmd.Stdout, cmd.Stderr = &out, &errOut
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			time.Sleep(3 * time.Second) // let the token expire: the point of the test
			if _, err := io.WriteString(pw, "\nput late yes\n\n\n"); err != nil {
				t.Fatal(err)
			}
			_ = pw.Close()
			if err := cmd.Wait(); err != nil {
				t.Fatalf("etcdctl txn after the token expired: %v\n%s", err, errOut.String())
			}
			if !strings.HasSuffix(out.String(), "SUCCESS\n\nOK\n") {
				t.Fatalf("etcdctl txn: %q", out.String())
			}
			if got := c.ok(t, "--user=root:rootpw", "get", "late", "--print-value-only"); got != "yes\n" {
				t.Fatalf("get late: %q", got)
			}
			if target.name == "kvsql" {
				// The txn came with the expired token and was refused;
				// the client logged in again and sent it once more.
				refused := metricValue(t, metrics, `grpc_server_handled_total{grpc_code="Unauthenticated",grpc_method="Txn",grpc_service="etcdserverpb.KV",grpc_type="unary"}`)
				logins := metricValue(t, metrics, `grpc_server_handled_total{grpc_code="OK",grpc_method="Authenticate",grpc_service="etcdserverpb.Auth",grpc_type="unary"}`)
				if refused != 1 || logins != 3 {
					t.Fatalf("kvsql refused %v txns as unauthenticated and answered %v logins; want 1 and 3 (txn, its retry, get)", refused, logins)
				}
			}
		})
	}
}

// startEtcdTLS starts etcd serving https with client certificate auth.
func startEtcdTLS(t *testing.T, pki *testPKI, opts serverOptions) string {
	t.Helper()
	cfg := etcdConfig(t, opts)
	cert, key := pki.cert("etcd-server", true)
	cfg.ClientTLSInfo = transport.TLSInfo{CertFile: cert, KeyFile: key, TrustedCAFile: pki.CAFile, ClientCertAuth: true}
	u := cfg.ListenClientUrls[0]
	u.Scheme = "https"
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = append(cfg.ListenClientUrls[:0:0], u), append(cfg.AdvertiseClientUrls[:0:0], u)
	t.Cleanup(runEtcd(t, cfg).Close)
	return u.String()
}

// TestEtcdctlAuthCertCN: with --client-cert-auth, a request without a
// token authenticates as its client certificate's common name: a tenant
// user without a password (user add --no-password) reaches its prefix
// only, a certificate of an unknown user gets nothing, and a password
// still wins over the certificate.
func TestEtcdctlAuthCertCN(t *testing.T) {
	t.Parallel()
	pki := newTestPKI(t)
	rootCert, rootKey := pki.cert("root", false)
	u1Cert, u1Key := pki.cert("u1", false)
	strangerCert, strangerKey := pki.cert("stranger", false)
	as := func(cert, key string, args ...string) []string {
		return append([]string{"--cacert=" + pki.CAFile, "--cert=" + cert, "--key=" + key}, args...)
	}
	root := func(args ...string) []string { return as(rootCert, rootKey, args...) }
	u1 := func(args ...string) []string { return as(u1Cert, u1Key, args...) }
	script := []ctlStep{
		step("User root created\n", root("user", "add", "root:rootpw")...),
		step("Role root is granted to user root\n", root("user", "grant-role", "root", "root")...),
		step("Role t1 created\n", root("role", "add", "t1")...),
		step("Role t1 updated\n", root("role", "grant-permission", "t1", "readwrite", "/t1/", "--prefix")...),
		step("User u1 created\n", root("user", "add", "u1", "--no-password")...),
		step("Role t1 is granted to user u1\n", root("user", "grant-role", "u1", "t1")...),
		step("Authentication Enabled\n", root("auth", "enable")...),
		step("OK\n", u1("put", "/t1/a", "1")...),
		step("/t1/a\n1\n", u1("get", "/t1/", "--prefix")...),
		stepErr(errDenied, u1("put", "/t2/a", "x")...),
		stepErr(errDenied, u1("get", "", "--from-key")...),
		stepErr(errDenied, u1("user", "list")...),
		step("root\nu1\n", root("user", "list")...),
		step("OK\n", root("put", "/t2/a", "2")...),
		stepErr(errDenied, as(strangerCert, strangerKey, "get", "/t1/a")...),
		// A user without a password cannot log in with one.
		stepErr("Error: rpc error: code = Unknown desc = auth: authentication failed, password was given for no password user", u1("--user=u1:x", "get", "/t1/a")...),
		step("/t1/a\n1\n", as(strangerCert, strangerKey, "--user=root:rootpw", "get", "/t1/a")...),
		step("Authentication Disabled\n", root("auth", "disable")...),
	}
	runScriptOn(t, []ctlTarget{
		{"kvsql", func(t *testing.T) string {
			cert, key := pki.cert("kvsql-server", true)
			p := startKVSQLProcURL(t, "https", "--bcrypt-cost=4",
				"--cert-file="+cert, "--key-file="+key, "--trusted-ca-file="+pki.CAFile, "--client-cert-auth")
			return "https://" + p.Addr
		}},
		{"etcd", func(t *testing.T) string { return startEtcdTLS(t, pki, serverOptions{BcryptCost: 4}) }},
	}, script)
}
