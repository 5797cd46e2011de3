package integration

// Certificates made in the tests with crypto/x509: a CA, server and client
// certificates it signs, and CRLs.

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"
)

// testCA is a certificate authority for one test.
type testCA struct {
	t       testing.TB
	dir     string
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	CAFile  string // its certificate, PEM
	serials atomic.Int64
}

// newTestCA makes a CA named cn whose files live in a temp dir.
func newTestCA(t testing.TB, cn string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	ca := &testCA{t: t, dir: t.TempDir(), cert: cert, key: key}
	ca.serials.Store(100)
	ca.CAFile = ca.write(cn+"-ca.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	return ca
}

// write writes a file into the CA's dir (readable by the database
// servers' own users) and returns its path.
func (ca *testCA) write(name string, data []byte) string {
	ca.t.Helper()
	path := filepath.Join(ca.dir, name)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		ca.t.Fatal(err)
	}
	if err := os.Chmod(ca.dir, 0o755); err != nil {
		ca.t.Fatal(err)
	}
	return path
}

// issued is a certificate the CA signed, with its files.
type issued struct {
	CertFile, KeyFile string
	CertPEM, KeyPEM   []byte
	Serial            *big.Int
}

// TLS returns the certificate for a tls.Config.
func (i issued) TLS(t testing.TB) tls.Certificate {
	t.Helper()
	c, err := tls.X509KeyPair(i.CertPEM, i.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// server issues a server certificate for 127.0.0.1 and localhost (also
// usable as a client certificate, as etcd's member certificates are).
func (ca *testCA) server(name string) issued {
	return ca.issue(name, "kvsql-server", []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, true)
}

// client issues a client certificate with common name cn.
func (ca *testCA) client(name, cn string) issued {
	return ca.issue(name, cn, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, false)
}

func (ca *testCA) issue(name, cn string, usage []x509.ExtKeyUsage, hosts bool) issued {
	ca.t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		ca.t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(ca.serials.Add(1)),
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:  usage,
	}
	if hosts {
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
		tmpl.DNSNames = []string{"localhost"}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		ca.t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		ca.t.Fatal(err)
	}
	i := issued{
		CertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}),
		Serial:  tmpl.SerialNumber,
	}
	i.CertFile = ca.write(name+".pem", i.CertPEM)
	i.KeyFile = ca.write(name+"-key.pem", i.KeyPEM)
	return i
}

// crl writes a DER CRL (etcd's --client-crl-file format) revoking the
// given serials to path (replacing it) and returns path.
func (ca *testCA) crl(path string, revoked ...*big.Int) string {
	ca.t.Helper()
	tmpl := &x509.RevocationList{
		Number:     big.NewInt(ca.serials.Add(1)),
		ThisUpdate: time.Now().Add(-time.Minute),
		NextUpdate: time.Now().Add(time.Hour),
	}
	for _, s := range revoked {
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries, x509.RevocationListEntry{SerialNumber: s, RevocationTime: time.Now()})
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, ca.cert, ca.key)
	if err != nil {
		ca.t.Fatal(err)
	}
	replaceFile(ca.t, path, der)
	return path
}

// replaceFile replaces path's contents atomically (as certificate
// managers do), so a reader never sees half a file.
func replaceFile(t testing.TB, path string, data []byte) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// pool is a cert pool holding the CA.
func (ca *testCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}
