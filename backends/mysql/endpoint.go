package mysql

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"strings"

	gomysql "github.com/go-sql-driver/mysql"
)

// kvsql's own endpoint parameters for TLS to the server. go-sql-driver/mysql
// takes a custom CA or a client certificate only from a tls.Config
// registered under a name, which a URL cannot carry; kvsql reads these,
// registers the config (mysql.RegisterTLSConfig) and hands the driver its
// name, so the SQL connections and the binlog replication connection
// (notify/binlog, through DriverConfig) use the same TLS settings.
const (
	// ParamTLSCA is a PEM CA bundle that signs the server's certificate
	// (default: the system's roots).
	ParamTLSCA = "tls-ca"
	// ParamTLSCert and ParamTLSKey are a PEM client certificate and its
	// key, for servers that require one (REQUIRE X509); they are read
	// again at every new connection, so they can be rotated.
	ParamTLSCert = "tls-cert"
	ParamTLSKey  = "tls-key"
	// TLSVerifyFull (tls=verify-full) verifies the server's certificate
	// chain and that it names the host in the endpoint, as the driver's
	// tls=true does; it is what the parameters above imply.
	TLSVerifyFull = "verify-full"
)

// ParseEndpoint turns a kvsql endpoint (mysql://user:pass@tcp(host:port)/db,
// with the driver's parameters and kvsql's tls-ca, tls-cert and tls-key)
// into a driver config. Its errors never contain the endpoint.
func ParseEndpoint(endpoint string) (*gomysql.Config, error) {
	dsn, err := applyTLSParams(strings.TrimPrefix(endpoint, "mysql://"))
	if err != nil {
		return nil, fmt.Errorf("mysql: endpoint: %w", err)
	}
	cfg, err := gomysql.ParseDSN(dsn)
	if err != nil {
		return nil, fmt.Errorf("mysql: parse endpoint (want mysql://user:pass@tcp(host:3306)/db): %w", err)
	}
	if cfg.DBName == "" {
		return nil, errors.New("mysql: the endpoint names no database (want mysql://user:pass@tcp(host:3306)/db)")
	}
	return cfg, nil
}

// Describe returns the endpoint without its password or parameters
// (mysql://user@tcp(host:port)/db), as the driver parses it, for messages;
// ok is false, and the string empty, when it does not parse.
func Describe(endpoint string) (string, bool) {
	dsn, _, err := splitTLSParams(strings.TrimPrefix(endpoint, "mysql://"))
	if err != nil {
		return "", false
	}
	cfg, err := gomysql.ParseDSN(dsn)
	if err != nil {
		return "", false
	}
	return fmt.Sprintf("mysql://%s@%s(%s)/%s", cfg.User, cfg.Net, cfg.Addr, cfg.DBName), true
}

// tlsParams are kvsql's TLS parameters of an endpoint.
type tlsParams struct {
	ca, cert, key string
	mode          string // the tls parameter
	hasMode       bool
}

var paramKeyRE = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)

// splitTLSParams takes kvsql's TLS parameters out of a driver DSN. Their
// values are file paths, so unlike the driver's they may hold an unescaped
// "/": the query starts at the first "?" after a "/" whose remainder is a
// list of key=value parameters.
func splitTLSParams(dsn string) (string, tlsParams, error) {
	var p tlsParams
	for i := 0; i < len(dsn); i++ {
		if dsn[i] != '?' || !strings.Contains(dsn[:i], "/") {
			continue
		}
		pairs := strings.Split(dsn[i+1:], "&")
		valid := true
		for _, kv := range pairs {
			k, _, ok := strings.Cut(kv, "=")
			valid = valid && ok && paramKeyRE.MatchString(k)
		}
		if !valid {
			continue
		}
		var keep []string
		for _, kv := range pairs {
			k, v, _ := strings.Cut(kv, "=")
			var dst *string
			switch k {
			case ParamTLSCA:
				dst = &p.ca
			case ParamTLSCert:
				dst = &p.cert
			case ParamTLSKey:
				dst = &p.key
			case "tls":
				dst, p.hasMode = &p.mode, true
			default:
				keep = append(keep, kv)
				continue
			}
			val, err := url.QueryUnescape(v)
			if err != nil {
				return "", p, fmt.Errorf("parameter %s: %w", k, err)
			}
			*dst = val
		}
		if p.hasMode && p.ca == "" && p.cert == "" && p.key == "" && p.mode != TLSVerifyFull {
			return dsn, p, nil // the driver's own tls values
		}
		if len(keep) == 0 {
			return dsn[:i], p, nil
		}
		return dsn[:i] + "?" + strings.Join(keep, "&"), p, nil
	}
	return dsn, p, nil
}

// applyTLSParams takes kvsql's TLS parameters out of a driver DSN and, if
// there were any (or tls=verify-full), registers their tls.Config and
// names it in the DSN's tls parameter.
func applyTLSParams(dsn string) (string, error) {
	base, p, err := splitTLSParams(dsn)
	if err != nil {
		return "", err
	}
	own := p.ca != "" || p.cert != "" || p.key != ""
	switch {
	case p.mode == TLSVerifyFull:
	case own && (!p.hasMode || p.mode == "true"):
	case own:
		return "", fmt.Errorf("%s, %s and %s need tls=%s (tls=%s would not verify the server as they ask)", ParamTLSCA, ParamTLSCert, ParamTLSKey, TLSVerifyFull, p.mode)
	default:
		return base, nil // no TLS, or the driver's own tls values
	}
	tc, err := tlsConfig(p.ca, p.cert, p.key)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256([]byte(p.ca + "\x00" + p.cert + "\x00" + p.key))
	name := "kvsql-" + hex.EncodeToString(sum[:8])
	if err := gomysql.RegisterTLSConfig(name, tc); err != nil {
		return "", err
	}
	sep := "?"
	if strings.Contains(base[strings.LastIndexByte(base, '/')+1:], "?") {
		sep = "&"
	}
	return base + sep + "tls=" + name, nil
}

// tlsConfig verifies the server against caFile (the system's roots if
// empty) and presents certFile/keyFile if given.
func tlsConfig(caFile, certFile, keyFile string) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", ParamTLSCA, err)
		}
		tc.RootCAs = x509.NewCertPool()
		if !tc.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s %s holds no PEM certificate", ParamTLSCA, caFile)
		}
	}
	if (certFile == "") != (keyFile == "") {
		return nil, fmt.Errorf("%s and %s go together: give both or neither", ParamTLSCert, ParamTLSKey)
	}
	if certFile != "" {
		if _, err := tls.LoadX509KeyPair(certFile, keyFile); err != nil {
			return nil, fmt.Errorf("%s/%s: %w", ParamTLSCert, ParamTLSKey, err)
		}
		tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			c, err := tls.LoadX509KeyPair(certFile, keyFile)
			if err != nil {
				return nil, fmt.Errorf("%s/%s: %w", ParamTLSCert, ParamTLSKey, err)
			}
			return &c, nil
		}
	}
	return tc, nil
}
