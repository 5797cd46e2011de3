package integration

// TLS on the client URLs with etcd's own transport (TLSInfo): gRPC and
// HTTP on one https:// port, certificate rotation without a restart,
// client certificate auth, CRLs, allowed CNs, the split HTTP URLs, and the
// flags that kvsql refuses.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/kvsql/kvsql/backends"
	"github.com/kvsql/kvsql/backends/sqlite"
	"github.com/kvsql/kvsql/kvserver"
	"github.com/kvsql/kvsql/notify/local"
)

// tlsListener is one client listener for startSQLiteTLS.
type tlsListener struct {
	secure, httpOnly bool
}

// startSQLiteTLS serves kvsql on SQLite with etcd's TLSInfo on one
// listener per spec, and returns their base URLs.
func startSQLiteTLS(t testing.TB, info *transport.TLSInfo, specs ...tlsListener) []string {
	t.Helper()
	src := local.New()
	be, err := sqlite.Open(context.Background(), sqlite.Config{
		Path:   filepath.Join(t.TempDir(), "state.db"),
		Engine: backends.EngineConfig{OnCommit: src.Publish},
	})
	if err != nil {
		t.Fatal(err)
	}
	var fc kvserver.FrontendConfig
	fc.TLS = info
	var urls []string
	for _, sp := range specs {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		scheme := "http://"
		if sp.secure {
			scheme = "https://"
		}
		urls = append(urls, scheme+l.Addr().String())
		fc.Listeners = append(fc.Listeners, kvserver.ClientListener{Listener: l, Secure: sp.secure, HTTPOnly: sp.httpOnly})
	}
	serveFrontend(t, be, src, serverOptions{}, fc, urls[0])
	return urls
}

// tlsClient is a clientv3 client for endpoint that trusts ca and presents
// cert (if any).
func tlsClient(t testing.TB, endpoint string, ca *testCA, cert *issued) *clientv3.Client {
	t.Helper()
	tc := &tls.Config{RootCAs: ca.pool(), MinVersion: tls.VersionTLS12}
	if cert != nil {
		tc.Certificates = []tls.Certificate{cert.TLS(t)}
	}
	c, err := clientv3.New(clientv3.Config{Endpoints: []string{endpoint}, TLS: tc, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// putErr puts a key through c and returns the error (bounded in time).
func putErr(c *clientv3.Client) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := c.Put(ctx, "tls", "v")
	return err
}

// httpsGet GETs url with a fresh connection (HTTP/2 unless http1), trusting
// ca and presenting cert (if any), and returns status and body.
func httpsGet(t testing.TB, url string, ca *testCA, cert *issued, http1 bool) (int, string, error) {
	t.Helper()
	tc := &tls.Config{RootCAs: ca.pool(), MinVersion: tls.VersionTLS12}
	if cert != nil {
		tc.Certificates = []tls.Certificate{cert.TLS(t)}
	}
	tr := &http.Transport{TLSClientConfig: tc, ForceAttemptHTTP2: !http1, DisableKeepAlives: true}
	if http1 {
		tc.NextProtos = []string{"http/1.1"}
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// TestTLSGRPCAndHTTPOnOnePort: on one https:// port with client
// certificate auth, clientv3 (gRPC) and HTTPS (HTTP/2 and HTTP/1.1:
// /health and the JSON gateway) work with a client certificate, and both
// are refused without one.
func TestTLSGRPCAndHTTPOnOnePort(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t, "ca")
	srv, cli := ca.server("server"), ca.client("client", "alice")
	url := startSQLiteTLS(t, &transport.TLSInfo{CertFile: srv.CertFile, KeyFile: srv.KeyFile, TrustedCAFile: ca.CAFile, ClientCertAuth: true}, tlsListener{secure: true})[0]

	c := tlsClient(t, url, ca, &cli)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	wch := c.Watch(ctx, "tls")
	if err := putErr(c); err != nil {
		t.Fatalf("clientv3 over TLS with a client certificate: %v", err)
	}
	if wr := <-wch; len(wr.Events) != 1 {
		t.Fatalf("watch over TLS: %+v", wr)
	}
	for _, http1 := range []bool{false, true} {
		code, body, err := httpsGet(t, url+"/health", ca, &cli, http1)
		if err != nil || code != http.StatusOK || body != `{"health":"true","reason":""}` {
			t.Errorf("GET /health over TLS (http1=%v): %d %q %v", http1, code, body, err)
		}
	}
	// The gateway over HTTPS with a client certificate.
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.pool(), Certificates: []tls.Certificate{cli.TLS(t)}}, ForceAttemptHTTP2: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Post(url+"/v3/kv/range", "application/json", strings.NewReader(`{"key": "dGxz"}`))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"dg=="`) || resp.ProtoMajor != 2 {
		t.Errorf("POST /v3/kv/range over TLS: %s %d %s", resp.Proto, resp.StatusCode, body)
	}

	// Without a client certificate: refused on both.
	if err := putErr(tlsClient(t, url, ca, nil)); err == nil {
		t.Error("clientv3 without a client certificate: Put succeeded")
	}
	if code, _, err := httpsGet(t, url+"/health", ca, nil, false); err == nil {
		t.Errorf("GET /health without a client certificate: %d, want a refused handshake", code)
	}
}

// TestTLSCertificateRotation: replacing the certificate and key files on
// disk makes the next connection see the new certificate, without a
// restart; connections made before keep working.
func TestTLSCertificateRotation(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t, "ca")
	first := ca.server("server")
	url := startSQLiteTLS(t, &transport.TLSInfo{CertFile: first.CertFile, KeyFile: first.KeyFile}, tlsListener{secure: true})[0]
	addr := strings.TrimPrefix(url, "https://")
	served := func() *x509.Certificate {
		t.Helper()
		conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: ca.pool(), ServerName: "127.0.0.1", NextProtos: []string{"h2"}})
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0]
	}
	if got := served().SerialNumber; got.Cmp(first.Serial) != 0 {
		t.Fatalf("serves serial %v, want %v", got, first.Serial)
	}
	before := tlsClient(t, url, ca, nil)
	if err := putErr(before); err != nil {
		t.Fatal(err)
	}

	second := ca.issue("rotated", "kvsql-server-2", []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, true)
	replaceFile(t, first.KeyFile, second.KeyPEM)
	replaceFile(t, first.CertFile, second.CertPEM)
	if got := served().SerialNumber; got.Cmp(second.Serial) != 0 {
		t.Fatalf("after rotation serves serial %v, want the new %v", got, second.Serial)
	}
	if err := putErr(tlsClient(t, url, ca, nil)); err != nil {
		t.Fatalf("new client after rotation: %v", err)
	}
	if err := putErr(before); err != nil {
		t.Fatalf("client connected before rotation: %v", err)
	}
}

// TestTLSRevokedClientCertificate: a client certificate listed in
// --client-crl-file is refused on gRPC and HTTP while another one works;
// the CRL is read again for each connection, so revoking the second one
// later refuses its next connection.
func TestTLSRevokedClientCertificate(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t, "ca")
	srv := ca.server("server")
	revoked, good := ca.client("revoked", "mallory"), ca.client("good", "alice")
	crl := ca.crl(filepath.Join(t.TempDir(), "crl.der"), revoked.Serial)
	url := startSQLiteTLS(t, &transport.TLSInfo{CertFile: srv.CertFile, KeyFile: srv.KeyFile, TrustedCAFile: ca.CAFile, ClientCertAuth: true, CRLFile: crl}, tlsListener{secure: true})[0]

	if err := putErr(tlsClient(t, url, ca, &good)); err != nil {
		t.Fatalf("valid client certificate: %v", err)
	}
	if code, _, err := httpsGet(t, url+"/health", ca, &good, false); err != nil || code != http.StatusOK {
		t.Fatalf("valid client certificate, GET /health: %d %v", code, err)
	}
	if err := putErr(tlsClient(t, url, ca, &revoked)); err == nil {
		t.Error("revoked client certificate: Put succeeded")
	}
	if code, _, err := httpsGet(t, url+"/health", ca, &revoked, false); err == nil {
		t.Errorf("revoked client certificate: GET /health answered %d", code)
	}
	ca.crl(crl, revoked.Serial, good.Serial)
	if code, _, err := httpsGet(t, url+"/health", ca, &good, false); err == nil {
		t.Errorf("client certificate revoked at run time: GET /health answered %d", code)
	}
	if err := putErr(tlsClient(t, url, ca, &good)); err == nil {
		t.Error("client certificate revoked at run time: a new client's Put succeeded")
	}
}

// TestTLSAllowedCN: with allowed CNs, a certificate with another CN is
// refused on gRPC and HTTP; one with an allowed CN works.
func TestTLSAllowedCN(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t, "ca")
	srv := ca.server("server")
	allowed, other := ca.client("allowed", "kube-apiserver"), ca.client("other", "someone-else")
	url := startSQLiteTLS(t, &transport.TLSInfo{CertFile: srv.CertFile, KeyFile: srv.KeyFile, TrustedCAFile: ca.CAFile, ClientCertAuth: true, AllowedCNs: []string{"kube-apiserver"}}, tlsListener{secure: true})[0]
	if err := putErr(tlsClient(t, url, ca, &allowed)); err != nil {
		t.Fatalf("allowed CN: %v", err)
	}
	if code, _, err := httpsGet(t, url+"/health", ca, &allowed, true); err != nil || code != http.StatusOK {
		t.Fatalf("allowed CN, GET /health: %d %v", code, err)
	}
	if err := putErr(tlsClient(t, url, ca, &other)); err == nil {
		t.Error("CN not allowed: Put succeeded")
	}
	if code, _, err := httpsGet(t, url+"/health", ca, &other, true); err == nil {
		t.Errorf("CN not allowed: GET /health answered %d", code)
	}
}

// TestTLSSplitHTTPURLs: with an HTTP-only URL (etcd's
// --listen-client-http-urls), the client URL serves gRPC only (TLS by
// gRPC itself, with the client certificate checks) and the HTTP URL serves
// HTTP only.
func TestTLSSplitHTTPURLs(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t, "ca")
	srv := ca.server("server")
	good, other := ca.client("good", "kube-apiserver"), ca.client("other", "nobody")
	urls := startSQLiteTLS(t, &transport.TLSInfo{CertFile: srv.CertFile, KeyFile: srv.KeyFile, TrustedCAFile: ca.CAFile, ClientCertAuth: true, AllowedCNs: []string{"kube-apiserver"}},
		tlsListener{secure: true}, tlsListener{secure: true, httpOnly: true})
	if err := putErr(tlsClient(t, urls[0], ca, &good)); err != nil {
		t.Fatalf("gRPC on the client URL: %v", err)
	}
	if err := putErr(tlsClient(t, urls[0], ca, &other)); err == nil {
		t.Error("gRPC-only TLS listener let a CN that is not allowed in")
	}
	if code, _, err := httpsGet(t, urls[1]+"/health", ca, &good, false); err != nil || code != http.StatusOK {
		t.Errorf("GET /health on the HTTP URL: %d %v", code, err)
	}
	if code, _, err := httpsGet(t, urls[0]+"/health", ca, &good, true); err == nil && code == http.StatusOK {
		t.Error("the gRPC-only client URL answered GET /health")
	}
	if err := putErr(tlsClient(t, urls[1], ca, &good)); err == nil {
		t.Error("the HTTP-only URL served gRPC")
	}
}

// TestProcessTLSFlags: the kvsql binary refuses TLS flags that would have
// no effect or leave a way around client certificates, naming the flag
// and what to do; with https:// URLs it serves clientv3 and curl with
// client certificates through the flags, and refuses a revoked one.
func TestProcessTLSFlags(t *testing.T) {
	t.Parallel()
	ca := newTestCA(t, "ca")
	srv, good, revoked := ca.server("server"), ca.client("good", "kube-apiserver"), ca.client("revoked", "kube-apiserver")
	crl := ca.crl(filepath.Join(t.TempDir(), "crl.der"), revoked.Serial)
	cert := []string{"--cert-file=" + srv.CertFile, "--key-file=" + srv.KeyFile}
	auth := append([]string{"--trusted-ca-file=" + ca.CAFile, "--client-cert-auth"}, cert...)
	plain, secure := "--listen-client-urls=http://127.0.0.1:0", "--listen-client-urls=https://127.0.0.1:0"
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"client-cert-auth on http", append([]string{plain}, auth...), []string{"--cert-file needs an https:// client URL", "http://127.0.0.1:0"}},
		{"client-cert-auth alone on http", []string{plain, "--client-cert-auth"}, []string{"--client-cert-auth needs an https:// client URL"}},
		{"cert on http", append([]string{plain}, cert...), []string{"--cert-file needs an https:// client URL"}},
		{"crl on http", []string{plain, "--client-crl-file=" + crl}, []string{"--client-crl-file needs an https:// client URL"}},
		{"client-cert-auth beside http", append([]string{"--listen-client-urls=https://127.0.0.1:0,http://127.0.0.1:0"}, auth...), []string{"--client-cert-auth checks client certificates", "http://127.0.0.1:0", "without one"}},
		{"trusted-ca beside http", append([]string{"--listen-client-urls=https://127.0.0.1:0,http://127.0.0.1:0", "--trusted-ca-file=" + ca.CAFile}, cert...), []string{"--trusted-ca-file (which, as in etcd, requires client certificates)"}},
		{"client-cert-auth without CA", append([]string{secure, "--client-cert-auth"}, cert...), []string{"--client-cert-auth needs --trusted-ca-file"}},
		{"crl without client auth", append([]string{secure, "--client-crl-file=" + crl}, cert...), []string{"--client-crl-file applies to client certificates"}},
		{"allowed cn and hostname", append([]string{secure, "--client-cert-allowed-cn=a", "--client-cert-allowed-hostname=b"}, auth...), []string{"exclude each other"}},
		{"missing cert file", []string{secure, "--cert-file=/nonexistent/cert.pem", "--key-file=/nonexistent/key.pem"}, []string{"client TLS", "/nonexistent/cert.pem"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, errOut, code := runKVSQL(t, nil, append([]string{"--data-dir=" + filepath.Join(t.TempDir(), "d")}, tc.args...)...)
			if code == 0 {
				t.Fatalf("exit 0, want a refusal; stderr %q", errOut)
			}
			for _, w := range tc.want {
				if !strings.Contains(errOut, w) {
					t.Errorf("stderr does not contain %q:\n%s", w, errOut)
				}
			}
		})
	}

	// Served through the flags: client certificate auth, CRL, allowed CN.
	p := startKVSQLProcURL(t, "https", append(auth, "--client-crl-file="+crl, "--client-cert-allowed-cn=kube-apiserver")...)
	url := "https://" + p.Addr
	if err := putErr(tlsClient(t, url, ca, &good)); err != nil {
		t.Fatalf("clientv3 with a valid certificate: %v", err)
	}
	if err := putErr(tlsClient(t, url, ca, &revoked)); err == nil {
		t.Error("clientv3 with a revoked certificate: Put succeeded")
	}
	if code, body, err := httpsGet(t, url+"/health", ca, &good, false); err != nil || code != http.StatusOK {
		t.Errorf("GET /health: %d %q %v", code, body, err)
	}
	// --auto-tls: a generated certificate in the data dir.
	auto := startKVSQLProcURL(t, "https", "--auto-tls")
	if _, err := os.Stat(filepath.Join(auto.DataDir, "fixtures", "client", "cert.pem")); err != nil {
		t.Errorf("--auto-tls certificate: %v", err)
	}
	ac, err := clientv3.New(clientv3.Config{Endpoints: []string{"https://" + auto.Addr}, TLS: &tls.Config{InsecureSkipVerify: true}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer ac.Close()
	if err := putErr(ac); err != nil {
		t.Errorf("--auto-tls: %v", err)
	}
	if curl, err := exec.LookPath("curl"); err == nil {
		out, err := exec.Command(curl, "-sS", "--max-time", "30", "--cacert", ca.CAFile, "--cert", good.CertFile, "--key", good.KeyFile, url+"/health").CombinedOutput()
		if err != nil || string(out) != `{"health":"true","reason":""}` {
			t.Errorf("curl https /health: %v %s", err, out)
		}
		if out, err := exec.Command(curl, "-sS", "--max-time", "30", "--cacert", ca.CAFile, url+"/health").CombinedOutput(); err == nil {
			t.Errorf("curl https /health without a client certificate succeeded: %s", out)
		}
	}
}
