package apiserver

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kvsql/kvsql/internal/testdb"
)

// pki is a throwaway CA issuing kvsql's server certificates and the
// client certificates whose common name is an etcd user.
type pki struct {
	t      *testing.T
	dir    string
	ca     *x509.Certificate
	key    *ecdsa.PrivateKey
	caFile string
	serial int64
	issued map[string][2]string // cn -> certificate and key files
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kvsql tenants test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	p := &pki{t: t, dir: t.TempDir(), ca: ca, key: key, serial: 1, issued: map[string][2]string{}}
	p.caFile = p.write("ca.crt", "CERTIFICATE", der)
	return p
}

func (p *pki) write(name, typ string, der []byte) string {
	path := filepath.Join(p.dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		p.t.Fatal(err)
	}
	return path
}

// cert issues a certificate for cn (also for 127.0.0.1 as a server when
// server is set), once, and returns its certificate and key files.
func (p *pki) cert(cn string, server bool) (string, string) {
	if f, ok := p.issued[cn]; ok {
		return f[0], f[1]
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		p.t.Fatal(err)
	}
	p.serial++
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(p.serial), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.key)
	if err != nil {
		p.t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		p.t.Fatal(err)
	}
	f := [2]string{p.write(cn+".crt", "CERTIFICATE", der), p.write(cn+".key", "EC PRIVATE KEY", kder)}
	p.issued[cn] = f
	return f[0], f[1]
}

// client returns an etcd client on url authenticating with cn's
// certificate.
func (p *pki) client(url, cn string) *clientv3.Client {
	p.t.Helper()
	certFile, keyFile := p.cert(cn, false)
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		p.t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(p.ca)
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: []string{url}, DialTimeout: 5 * time.Second, Logger: zap.NewNop(),
		TLS: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12},
	})
	if err != nil {
		p.t.Fatal(err)
	}
	p.t.Cleanup(func() { _ = cli.Close() })
	return cli
}

// startKVSQLTLS runs the kvsql binary on endpoint serving https with
// client certificate auth, and waits until it answers.
func startKVSQLTLS(t *testing.T, name, endpoint string, ca *pki) string {
	t.Helper()
	bin, err := kvsqlBinary()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	url := fmt.Sprintf("https://127.0.0.1:%d", freePort(t))
	cert, key := ca.cert(name, true)
	p := startProcess(t, "kvsql "+name, filepath.Join(dir, "kvsql.log"), bin,
		"--name", name, "--listen-client-urls", url, "--data-dir", filepath.Join(dir, "data"), "--endpoint", endpoint,
		"--cert-file", cert, "--key-file", key, "--trusted-ca-file", ca.caFile, "--client-cert-auth", "--log-level", "debug")
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("kvsql %s log (end):\n%s", name, p.tail(4000))
		}
	})
	cli := ca.client(url, "probe")
	deadline := time.Now().Add(60 * time.Second)
	for {
		c, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := cli.Status(c, strings.TrimPrefix(url, "https://"))
		cancel()
		if err == nil {
			return url
		}
		if p.exited() || time.Now().After(deadline) {
			t.Fatalf("kvsql %s did not come up: %v\n%s", name, err, p.tail(4000))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestKubeAPIServerTenants: the Kamaji layout on kvsql. Two kvsql
// instances share one PostgreSQL database and serve https with client
// certificate auth; two tenant control planes each run a kube-apiserver
// whose etcd identity is its client certificate's common name (a user
// without a password whose role reads and writes only its --etcd-prefix).
// Both apiservers become ready and serve; each tenant's data lies under
// its own prefix only; and a tenant's certificate is refused the other
// tenant's keys through either instance.
func TestKubeAPIServerTenants(t *testing.T) {
	bin := kubeBinaries(t)
	ca := newPKI(t)
	ep := testdb.FreshPostgresURL(t)
	urls := []string{startKVSQLTLS(t, "kvsql-1", ep, ca), startKVSQLTLS(t, "kvsql-2", ep, ca)}
	c := ctx(t)

	admin := ca.client(urls[0], "root")
	tenants := []string{"tenant-a", "tenant-b"}
	steps := []func() error{
		func() error { _, err := admin.UserAdd(c, "root", randomHex(t)); return err },
		func() error { _, err := admin.UserGrantRole(c, "root", "root"); return err },
	}
	for _, tn := range tenants {
		prefix := "/" + tn + "/"
		steps = append(steps,
			func() error { _, err := admin.RoleAdd(c, tn); return err },
			func() error {
				_, err := admin.RoleGrantPermission(c, tn, prefix, clientv3.GetPrefixRangeEnd(prefix), clientv3.PermissionType(clientv3.PermReadWrite))
				return err
			},
			func() error {
				_, err := admin.UserAddWithOptions(c, tn, "", &clientv3.UserAddOptions{NoPassword: true})
				return err
			},
			func() error { _, err := admin.UserGrantRole(c, tn, tn); return err },
		)
	}
	steps = append(steps, func() error { _, err := admin.AuthEnable(c); return err })
	for i, step := range steps {
		if err := step(); err != nil {
			t.Fatalf("auth setup step %d: %v", i, err)
		}
	}

	saKey := newServiceAccountKey(t, t.TempDir())
	var apis []*apiServer
	for i, tn := range tenants {
		cert, key := ca.cert(tn, false)
		api := newAPIServer(t, bin, tn, urls[i], saKey, append([]string{
			"--etcd-cafile=" + ca.caFile, "--etcd-certfile=" + cert, "--etcd-keyfile=" + key,
			"--etcd-prefix=/" + tn,
		}, apiserverFlags...)...)
		apis = append(apis, api)
	}
	for i, api := range apis {
		name := "owned-by-" + tenants[i]
		if _, err := api.clientset().CoreV1().ConfigMaps("default").Create(ctx(t), &corev1.ConfigMap{
			ObjectMeta: metav1.ObjectMeta{Name: name}, Data: map[string]string{"tenant": tenants[i]},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatalf("%s: create configmap: %v", api.name, err)
		}
		if got := api.mustKubectl(t, nil, "get", "configmaps", "-n", "default", "-o", "name"); !strings.Contains(got, "configmap/"+name+"\n") || strings.Contains(got, "owned-by-"+tenants[1-i]) {
			t.Fatalf("%s: configmaps %q", api.name, got)
		}
	}

	// A control plane confined to its prefix never needs more: nothing
	// it asked of kvsql was refused.
	for _, api := range apis {
		if log := api.proc.tail(64 << 20); strings.Contains(log, "permission denied") || strings.Contains(log, "user name is empty") {
			t.Errorf("%s was refused something by kvsql:\n%s", api.name, log)
		}
	}

	// Everything each apiserver stored is under its prefix.
	root := ca.client(urls[1], "root")
	all, err := root.Get(c, "", clientv3.WithFromKey(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	per := map[string]int{}
	for _, kv := range all.Kvs {
		k := string(kv.Key)
		owner := ""
		for _, tn := range tenants {
			if strings.HasPrefix(k, "/"+tn+"/") {
				owner = tn
			}
		}
		if owner == "" {
			t.Errorf("key %q is outside every tenant's prefix", k)
		}
		per[owner]++
	}
	for _, tn := range tenants {
		if per[tn] < 10 {
			t.Errorf("%d keys under /%s/, want a control plane's worth", per[tn], tn)
		}
	}
	if _, err := root.Get(c, "/tenant-a/configmaps/default/owned-by-tenant-a"); err != nil {
		t.Fatal(err)
	}
	// Each tenant's certificate reaches its own keys only, through
	// either instance.
	for _, url := range urls {
		a := ca.client(url, "tenant-a")
		if _, err := a.Get(c, "/tenant-a/configmaps/default/owned-by-tenant-a"); err != nil {
			t.Fatalf("tenant-a reads its configmap through %s: %v", url, err)
		}
		if _, err := a.Get(c, "/tenant-b/", clientv3.WithPrefix()); !errors.Is(err, rpctypes.ErrPermissionDenied) {
			t.Fatalf("tenant-a reads tenant-b's keys through %s: %v, want permission denied", url, err)
		}
		if _, err := a.Put(c, "/tenant-b/configmaps/default/planted", "x"); !errors.Is(err, rpctypes.ErrPermissionDenied) {
			t.Fatalf("tenant-a writes under tenant-b's prefix through %s: %v, want permission denied", url, err)
		}
		wctx, cancel := context.WithCancel(c)
		wr := <-a.Watch(wctx, "/tenant-b/", clientv3.WithPrefix(), clientv3.WithCreatedNotify())
		cancel()
		if !wr.Canceled || !strings.Contains(fmt.Sprint(wr.Err()), "permission denied") {
			t.Fatalf("tenant-a watches tenant-b's prefix through %s: %+v", url, wr)
		}
	}
}
