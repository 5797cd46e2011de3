package apiserver

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kvsql/kvsql/internal/testdb"
)

// binaries are the pinned kube-apiserver and kubectl (tools/kube-apiserver),
// which `make test` builds into a cache outside the checkout with
// scripts/kube-tools.sh and passes in $KUBE_APISERVER and $KUBECTL.
type binaries struct{ apiserver, kubectl string }

func kubeBinaries(t *testing.T) binaries {
	t.Helper()
	b := binaries{os.Getenv("KUBE_APISERVER"), os.Getenv("KUBECTL")}
	for name, p := range map[string]string{"KUBE_APISERVER": b.apiserver, "KUBECTL": b.kubectl} {
		if p == "" {
			testdb.SkipOrFail(t, fmt.Errorf("$%s is not set: run `make test`, or set KUBE_APISERVER and KUBECTL to the binaries `bash scripts/kube-tools.sh` prints the directory of", name))
		}
		if _, err := os.Stat(p); err != nil {
			testdb.SkipOrFail(t, fmt.Errorf("$%s: %w", name, err))
		}
	}
	return b
}

// kvsqlBinary builds cmd/kvsql once per test binary.
var kvsqlBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "kvsql-bin-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "kvsql")
	cmd := exec.Command("go", "build", "-buildvcs=false", "-o", bin, "./cmd/kvsql")
	cmd.Dir = filepath.Join("..", "..", "..")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/kvsql: %w\n%s", err, out)
	}
	return bin, nil
})

func TestMain(m *testing.M) {
	code := testdb.Main(m)
	if bin, err := kvsqlBinary(); err == nil {
		_ = os.RemoveAll(filepath.Dir(bin))
	}
	os.Exit(code)
}

// process is a child process whose output goes to a log file that a
// failing test prints the end of.
type process struct {
	name string
	log  string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

func startProcess(t *testing.T, name, logPath string, bin string, args ...string) *process {
	t.Helper()
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		t.Fatalf("start %s: %v", name, err)
	}
	p := &process{name: name, log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		f.Close()
		close(p.done)
	}()
	return p
}

// stop sends SIGTERM and waits up to 30 s, then kills.
func (p *process) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// tail returns the last n bytes of the process's log.
func (p *process) tail(n int64) string {
	b, err := os.ReadFile(p.log)
	if err != nil {
		return err.Error()
	}
	if int64(len(b)) > n {
		b = b[int64(len(b))-n:]
	}
	return string(b)
}

func freePort(t *testing.T) int {
	t.Helper()
	port, err := testdb.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return port
}

// kvsqlInstance is one kvsql process.
type kvsqlInstance struct {
	url  string
	proc *process
}

// startKVSQL runs the kvsql binary on endpoint (empty: SQLite in a temp
// dir) and waits until it answers.
func startKVSQL(t *testing.T, name, endpoint string) *kvsqlInstance {
	t.Helper()
	bin, err := kvsqlBinary()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	url := fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	args := []string{"--name", name, "--listen-client-urls", url, "--data-dir", filepath.Join(dir, "data")}
	if endpoint != "" {
		args = append(args, "--endpoint", endpoint)
	}
	p := startProcess(t, "kvsql "+name, filepath.Join(dir, "kvsql.log"), bin, args...)
	k := &kvsqlInstance{url: url, proc: p}
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("kvsql %s log (end):\n%s", name, p.tail(4000))
		}
	})
	cli := newEtcdClient(t, url)
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := cli.Get(ctx, "health-probe")
		cancel()
		if err == nil {
			return k
		}
		if p.exited() || time.Now().After(deadline) {
			t.Fatalf("kvsql %s did not come up: %v\n%s", name, err, p.tail(4000))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// newEtcdClient returns an etcd client on url, closed at cleanup.
func newEtcdClient(t *testing.T, url string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{url}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}

// apiServer is one kube-apiserver process over one kvsql instance.
type apiServer struct {
	t       *testing.T
	name    string
	bin     binaries
	dir     string
	etcd    string
	port    int
	token   string
	extra   []string
	proc    *process
	http    *http.Client
	monitor *healthMonitor
}

// newAPIServer prepares the keys, token and certificate directory of a
// kube-apiserver named name that stores in etcd (a kvsql URL) and starts
// it. saKey is shared by the apiservers of one cluster, as the service
// account signing key of an HA control plane is.
func newAPIServer(t *testing.T, bin binaries, name, etcd, saKey string, extra ...string) *apiServer {
	t.Helper()
	dir := t.TempDir()
	token := randomHex(t)
	if err := os.WriteFile(filepath.Join(dir, "tokens.csv"), []byte(token+",admin,admin,\"system:masters\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a := &apiServer{
		t: t, name: name, bin: bin, dir: dir, etcd: etcd, token: token, extra: extra,
		http: &http.Client{
			Timeout:   10 * time.Second,
			Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}},
		},
	}
	a.writeKeys(saKey)
	// One port for the apiserver's whole life, restarts included: the
	// health monitor and the clients keep using it.
	a.port = freePort(t)
	a.monitor = newHealthMonitor(a)
	a.start()
	t.Cleanup(func() {
		a.monitor.stop()
		a.proc.stop()
		if t.Failed() {
			t.Logf("kube-apiserver %s log (end):\n%s", name, a.proc.tail(6000))
		}
	})
	return a
}

func randomHex(t *testing.T) string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// newServiceAccountKey writes an RSA key pair into dir and returns the
// private key's path (the public key is beside it, with .pub).
func newServiceAccountKey(t *testing.T, dir string) string {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "sa.key")
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path+".pub", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func (a *apiServer) writeKeys(saKey string) {
	for _, f := range []string{"sa.key", "sa.key.pub"} {
		b, err := os.ReadFile(filepath.Join(filepath.Dir(saKey), f))
		if err != nil {
			a.t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(a.dir, f), b, 0o600); err != nil {
			a.t.Fatal(err)
		}
	}
}

// start runs kube-apiserver on a.port with a.extra appended to the flags
// and waits until /readyz passes.
func (a *apiServer) start() {
	t := a.t
	t.Helper()
	args := []string{
		"--etcd-servers=" + a.etcd,
		"--secure-port=" + strconv.Itoa(a.port),
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--cert-dir=" + filepath.Join(a.dir, "certs"),
		"--token-auth-file=" + filepath.Join(a.dir, "tokens.csv"),
		"--authorization-mode=AlwaysAllow",
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file=" + filepath.Join(a.dir, "sa.key.pub"),
		"--service-account-signing-key-file=" + filepath.Join(a.dir, "sa.key"),
		"--service-cluster-ip-range=10.96.0.0/24",
		// Both apiservers of a pair advertise 127.0.0.1; the lease
		// reconciler would make them fight over the kubernetes service's
		// endpoints, which a loopback test does not need.
		"--endpoint-reconciler-type=none",
		"--profiling=false",
	}
	args = append(args, a.extra...)
	a.proc = startProcess(t, "kube-apiserver "+a.name, filepath.Join(a.dir, "kube-apiserver.log"), a.bin.apiserver, args...)
	deadline := time.Now().Add(3 * time.Minute)
	for {
		code, body, err := a.get("/readyz?verbose")
		if err == nil && code == http.StatusOK {
			break
		}
		if a.proc.exited() {
			t.Fatalf("kube-apiserver %s exited: %v\n%s", a.name, a.proc.err, a.proc.tail(6000))
		}
		if time.Now().After(deadline) {
			t.Fatalf("kube-apiserver %s not ready after 3 minutes: %d %v\n%s\nlog:\n%s", a.name, code, err, body, a.proc.tail(6000))
		}
		time.Sleep(250 * time.Millisecond)
	}
	a.monitor.resume()
}

// restart stops kube-apiserver (SIGTERM), replaces its extra flags and
// starts it again.
func (a *apiServer) restart(extra ...string) {
	a.monitor.pause()
	a.proc.stop()
	a.extra = extra
	a.start()
}

// get does an authenticated GET of path.
func (a *apiServer) get(path string) (int, string, error) {
	req, err := http.NewRequest(http.MethodGet, a.url()+path, nil)
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	resp, err := a.http.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func (a *apiServer) url() string { return fmt.Sprintf("https://127.0.0.1:%d", a.port) }

func (a *apiServer) restConfig() *rest.Config {
	return &rest.Config{
		Host:            a.url(),
		BearerToken:     a.token,
		TLSClientConfig: rest.TLSClientConfig{Insecure: true},
		QPS:             -1, // no client-side rate limit
		Timeout:         30 * time.Second,
		UserAgent:       "kvsql-e2e/" + a.name,
	}
}

func (a *apiServer) clientset() *kubernetes.Clientset {
	c, err := kubernetes.NewForConfig(a.restConfig())
	if err != nil {
		a.t.Fatal(err)
	}
	return c
}

func (a *apiServer) dynamic() *dynamic.DynamicClient {
	c, err := dynamic.NewForConfig(a.restConfig())
	if err != nil {
		a.t.Fatal(err)
	}
	return c
}

// kubectl runs kubectl against a with args; stdin, if not nil, is its input.
func (a *apiServer) kubectl(stdin []byte, args ...string) (string, error) {
	base := []string{"--server=" + a.url(), "--token=" + a.token, "--insecure-skip-tls-verify=true", "--request-timeout=30s"}
	cmd := exec.Command(a.bin.kubectl, append(base, args...)...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+filepath.Join(a.dir, "no-kubeconfig"), "HOME="+a.dir)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(errOut.String()))
	}
	return out.String(), nil
}

// mustKubectl is kubectl that fails the test on error.
func (a *apiServer) mustKubectl(t *testing.T, stdin []byte, args ...string) string {
	t.Helper()
	out, err := a.kubectl(stdin, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// metric returns the sum of the samples of the Prometheus metric name on a
// whose labels include every label in want ("k=\"v\"" strings).
func (a *apiServer) metric(t *testing.T, name string, want ...string) float64 {
	t.Helper()
	code, body, err := a.get("/metrics")
	if err != nil || code != http.StatusOK {
		t.Fatalf("GET /metrics: %d %v", code, err)
	}
	var sum float64
	for _, line := range strings.Split(body, "\n") {
		if !strings.HasPrefix(line, name+"{") {
			continue
		}
		labels, value, ok := strings.Cut(line[len(name):], "} ")
		if !ok {
			continue
		}
		match := true
		for _, w := range want {
			if !strings.Contains(labels, w) {
				match = false
			}
		}
		if !match {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			t.Fatalf("metric line %q: %v", line, err)
		}
		sum += v
	}
	return sum
}

// healthMonitor polls /readyz and /livez (verbose) twice a second while
// the apiserver is meant to be up, and records every answer that is not 200
// or does not show the etcd checks passing.
type healthMonitor struct {
	a      *apiServer
	mu     sync.Mutex
	active bool
	epoch  int // incremented by pause: a check that spans a pause is void
	checks int
	fails  []string
	quit   chan struct{}
	done   chan struct{}
}

func newHealthMonitor(a *apiServer) *healthMonitor {
	m := &healthMonitor{a: a, quit: make(chan struct{}), done: make(chan struct{})}
	go m.run()
	return m
}

func (m *healthMonitor) run() {
	defer close(m.done)
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-m.quit:
			return
		case <-tick.C:
		}
		m.mu.Lock()
		active, epoch := m.active, m.epoch
		m.mu.Unlock()
		if !active {
			continue
		}
		for _, c := range []struct{ path, need string }{
			{"/readyz?verbose", "[+]etcd-readiness ok"},
			{"/readyz?verbose", "[+]etcd ok"},
			{"/livez?verbose", "[+]etcd ok"},
		} {
			code, body, err := m.a.get(c.path)
			m.mu.Lock()
			if m.active && m.epoch == epoch { // not paused while the request ran
				m.checks++
				if err != nil || code != http.StatusOK || !strings.Contains(body, c.need) {
					m.fails = append(m.fails, fmt.Sprintf("%s %s: %d %v %q", time.Now().Format(time.TimeOnly), c.path, code, err, body))
				}
			}
			m.mu.Unlock()
		}
	}
}

func (m *healthMonitor) pause() {
	m.mu.Lock()
	m.active = false
	m.epoch++
	m.mu.Unlock()
}

func (m *healthMonitor) resume() {
	m.mu.Lock()
	m.active = true
	m.mu.Unlock()
}

func (m *healthMonitor) stop() {
	select {
	case <-m.quit:
	default:
		close(m.quit)
	}
	<-m.done
}

// result returns how many checks ran and the failures.
func (m *healthMonitor) result() (int, []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.checks, append([]string(nil), m.fails...)
}

var errTimeout = errors.New("timed out")

// eventually calls f every 200 ms until it returns nil or d passes.
func eventually(d time.Duration, f func() error) error {
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w after %v: %w", errTimeout, d, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
