package main

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strings"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.uber.org/zap"

	"github.com/kvsql/kvsql/kvserver"
)

// selfSignedCertValidity is etcd's default --self-signed-cert-validity
// (years) for --auto-tls certificates.
const selfSignedCertValidity = 1

// clientURL is one parsed --listen-client-urls / --listen-client-http-urls entry.
type clientURL struct {
	raw      string
	host     string
	secure   bool
	httpOnly bool
}

// parseClientURLs parses --listen-client-urls and --listen-client-http-urls.
func parseClientURLs(c *config) ([]clientURL, error) {
	var out []clientURL
	seen := map[string]string{}
	for _, set := range []struct {
		flag, list string
		httpOnly   bool
	}{{"--listen-client-urls", c.listenURLs, false}, {"--listen-client-http-urls", c.listenHTTPURLs, true}} {
		if set.list == "" {
			continue
		}
		for _, raw := range strings.Split(set.list, ",") {
			raw = strings.TrimSpace(raw)
			u, err := url.Parse(raw)
			if err != nil || u.Host == "" {
				return nil, fmt.Errorf("%s %q: want http://host:port or https://host:port", set.flag, raw)
			}
			if u.Scheme != "http" && u.Scheme != "https" {
				return nil, fmt.Errorf("%s %q: scheme must be http or https", set.flag, raw)
			}
			if prev, dup := seen[u.Host]; dup && u.Port() != "0" {
				return nil, fmt.Errorf("%s %q: %s is already served by %s", set.flag, raw, u.Host, prev)
			}
			seen[u.Host] = set.flag + " " + raw
			out = append(out, clientURL{raw: raw, host: u.Host, secure: u.Scheme == "https", httpOnly: set.httpOnly})
		}
	}
	if len(out) == 0 {
		return nil, errors.New("--listen-client-urls is empty: give at least one http:// or https:// URL")
	}
	return out, nil
}

// parseMetricsURLs parses --listen-metrics-urls into the addresses to
// listen on (none if it is empty).
func parseMetricsURLs(list string) ([]string, error) {
	if list == "" {
		return nil, nil
	}
	var addrs []string
	for _, raw := range strings.Split(list, ",") {
		u, err := url.Parse(strings.TrimSpace(raw))
		if err != nil || u.Scheme != "http" || u.Host == "" {
			return nil, fmt.Errorf("--listen-metrics-urls %q: want http://host:port", raw)
		}
		addrs = append(addrs, u.Host)
	}
	return addrs, nil
}

// clientTLS turns the TLS flags into etcd's TLSInfo (go.etcd.io/etcd/
// client/pkg/v3/transport), which loads the certificate at every handshake
// (so a rotated one is used at once), requires a client certificate
// signed by --trusted-ca-file when that is set (as etcd does, with or
// without --client-cert-auth), and checks the CRL and allowed CNs or
// hostnames. It refuses flags that would have no effect on these URLs: a
// TLS flag without an https:// URL, and client-certificate checks while an
// http:// URL lets clients in without a certificate. It returns nil when
// no TLS is configured.
func clientTLS(c *config, urls []clientURL) (*transport.TLSInfo, error) {
	var plain, secure []string
	for _, u := range urls {
		if u.secure {
			secure = append(secure, u.raw)
		} else {
			plain = append(plain, u.raw)
		}
	}
	set := tlsFlagsSet(c)
	if len(secure) == 0 {
		if len(set) > 0 {
			return nil, fmt.Errorf("%s needs an https:// client URL, but every --listen-client-urls URL is http:// (%s): serve on https://HOST:PORT, or drop %s", set[0], strings.Join(plain, ","), set[0])
		}
		return nil, nil
	}
	clientAuth := c.clientCert || c.caFile != ""
	if clientAuth && len(plain) > 0 {
		flag := "--client-cert-auth"
		if !c.clientCert {
			flag = "--trusted-ca-file (which, as in etcd, requires client certificates)"
		}
		return nil, fmt.Errorf("%s checks client certificates, but %s is http:// and would let clients in without one: make every client URL https:// (health probes and metrics can use an http:// --listen-metrics-urls)", flag, strings.Join(plain, ","))
	}
	if c.clientCert && c.caFile == "" {
		return nil, errors.New("--client-cert-auth needs --trusted-ca-file, the CA that signs client certificates")
	}
	for _, f := range []struct{ name, val string }{
		{"--client-crl-file", c.crlFile}, {"--client-cert-allowed-cn", c.allowedCN}, {"--client-cert-allowed-hostname", c.allowedHost},
	} {
		if f.val != "" && !clientAuth {
			return nil, fmt.Errorf("%s applies to client certificates: set --client-cert-auth and --trusted-ca-file too", f.name)
		}
	}
	if c.allowedCN != "" && c.allowedHost != "" {
		return nil, errors.New("--client-cert-allowed-cn and --client-cert-allowed-hostname exclude each other (as in etcd): give one")
	}
	info := &transport.TLSInfo{
		CertFile:       c.certFile,
		KeyFile:        c.keyFile,
		TrustedCAFile:  c.caFile,
		ClientCertAuth: c.clientCert,
		CRLFile:        c.crlFile,
	}
	if c.allowedCN != "" {
		info.AllowedCNs = strings.Split(c.allowedCN, ",")
	}
	if c.allowedHost != "" {
		info.AllowedHostnames = strings.Split(c.allowedHost, ",")
	}
	if c.autoTLS {
		if c.certFile != "" || c.keyFile != "" {
			return nil, errors.New("--auto-tls generates its own certificate: drop --cert-file/--key-file, or --auto-tls")
		}
		var hosts []string
		for _, u := range urls {
			if u.secure {
				hosts = append(hosts, u.host)
			}
		}
		self, err := transport.SelfCert(zap.NewNop(), filepath.Join(c.dataDir, "fixtures", "client"), hosts, selfSignedCertValidity)
		if err != nil {
			return nil, fmt.Errorf("--auto-tls: %w", err)
		}
		self.TrustedCAFile, self.ClientCertAuth, self.CRLFile = info.TrustedCAFile, info.ClientCertAuth, info.CRLFile
		self.AllowedCNs, self.AllowedHostnames = info.AllowedCNs, info.AllowedHostnames
		info = &self
	}
	if info.CertFile == "" || info.KeyFile == "" {
		return nil, fmt.Errorf("the https:// client URL %s needs --cert-file and --key-file (or --auto-tls)", secure[0])
	}
	// Load everything once now, so that a bad file stops kvsql at start.
	if _, err := info.ServerConfig(); err != nil {
		return nil, fmt.Errorf("client TLS (--cert-file, --key-file, --trusted-ca-file): %w", err)
	}
	return info, nil
}

// tlsFlagsSet names the client TLS flags that are set.
func tlsFlagsSet(c *config) []string {
	var set []string
	for _, f := range []struct {
		name string
		on   bool
	}{
		{"--cert-file", c.certFile != ""}, {"--key-file", c.keyFile != ""}, {"--trusted-ca-file", c.caFile != ""},
		{"--client-cert-auth", c.clientCert}, {"--client-crl-file", c.crlFile != ""},
		{"--client-cert-allowed-cn", c.allowedCN != ""}, {"--client-cert-allowed-hostname", c.allowedHost != ""},
		{"--auto-tls", c.autoTLS},
	} {
		if f.on {
			set = append(set, f.name)
		}
	}
	return set
}

// forwardTLS is the client side of TLS for writes forwarded to an https://
// leader: it trusts --trusted-ca-file (or the system's roots) and presents
// this instance's certificate (reloaded at every handshake), which a leader
// with client certificate auth requires. With --auto-tls it does not
// verify the leader, as etcd's clients of self-signed certificates do not
// (forwarding still checks the leader's member and cluster IDs).
func forwardTLS(info *transport.TLSInfo) (*tls.Config, error) {
	if info == nil {
		return nil, nil
	}
	// The leader's server certificate is not subject to the checks of
	// client certificates (CRL, allowed CNs and hostnames).
	client := *info
	client.ClientCertAuth, client.CRLFile = false, ""
	client.AllowedCNs, client.AllowedHostnames = nil, nil
	//nolint:staticcheck // the deprecated single-value fields must be cleared too: TLSInfo still reads them
	client.AllowedCN, client.AllowedHostname = "", ""
	tc, err := client.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("TLS for forwarding writes: %w", err)
	}
	return tc, nil
}

// listenClients opens the client URLs' listeners.
func listenClients(urls []clientURL) ([]kvserver.ClientListener, error) {
	var out []kvserver.ClientListener
	for _, u := range urls {
		l, err := net.Listen("tcp", u.host)
		if err != nil {
			for _, o := range out {
				_ = o.Close()
			}
			return nil, fmt.Errorf("listen on %s: %w", u.host, err)
		}
		out = append(out, kvserver.ClientListener{Listener: l, Secure: u.secure, HTTPOnly: u.httpOnly})
	}
	return out, nil
}
