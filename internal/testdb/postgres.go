package testdb

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Postgres is a throwaway PostgreSQL cluster in a temp dir on a free
// loopback port. It runs as a child of the test process (as the postgres
// user when the tests run as root, since PostgreSQL refuses root) and
// receives SIGQUIT if the test process dies, so it never outlives the tests.
type Postgres struct {
	bin     string
	dir     string
	port    int
	cred    *syscall.Credential
	mu      sync.Mutex // guards proc
	proc    *os.Process
	exited  chan struct{}
	logFile string
	tls     bool // ssl=on, TCP connections only with TLS (NewPostgresTLS)
	// settings are extra name=value server settings (NewPostgresConf),
	// given on the command line: a standby's base backup does not copy them.
	settings []string
}

// pgBinDir finds PostgreSQL's server binaries: $PG_BIN, else the newest
// /usr/lib/postgresql/*/bin.
func pgBinDir() (string, error) {
	if d := os.Getenv("PG_BIN"); d != "" {
		return d, nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool {
		a, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[i])))
		b, _ := strconv.Atoi(filepath.Base(filepath.Dir(dirs[j])))
		return a > b
	})
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	return "", errors.New("no PostgreSQL server binaries (initdb, postgres): install the Debian package postgresql (or set PG_BIN)")
}

// NewPostgres initialises and starts a cluster.
func NewPostgres() (*Postgres, error) { return newPostgres(nil, nil) }

// NewPostgresConf is NewPostgres with extra server settings, each
// "name=value" (postgres -c).
func NewPostgresConf(settings ...string) (*Postgres, error) {
	return newPostgres(nil, nil, settings...)
}

// NewPostgresTLS initialises and starts a cluster with ssl=on and
// certPEM/keyPEM as its server certificate, which accepts TCP connections
// only over TLS (hostssl in pg_hba.conf), so that a client that connects
// at all uses TLS. Connect with TLSURL.
func NewPostgresTLS(certPEM, keyPEM []byte) (*Postgres, error) {
	if certPEM == nil || keyPEM == nil {
		return nil, errors.New("NewPostgresTLS: certificate and key required")
	}
	return newPostgres(certPEM, keyPEM)
}

func newPostgres(certPEM, keyPEM []byte, settings ...string) (*Postgres, error) {
	bin, err := pgBinDir()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "kvsql-pg-")
	if err != nil {
		return nil, err
	}
	p := &Postgres{bin: bin, dir: dir, logFile: filepath.Join(dir, "postgres.log"), settings: settings}
	if err := p.setOwner(); err != nil {
		return nil, err
	}
	initdb := exec.Command(filepath.Join(bin, "initdb"), "-D", filepath.Join(dir, "data"), "-U", "kvsql",
		"--auth=trust", "--encoding=UTF8", "--no-sync")
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred}
	if out, err := initdb.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("initdb: %w\n%s", err, out)
	}
	if certPEM != nil {
		p.tls = true
		data := filepath.Join(dir, "data")
		// ssl_cert_file and ssl_key_file default to these names in the
		// data directory; the key must belong to the server's user, 0600.
		hba := "local all all trust\nhostssl all all 127.0.0.1/32 trust\n"
		for name, b := range map[string][]byte{"server.crt": certPEM, "server.key": keyPEM, "pg_hba.conf": []byte(hba)} {
			path := filepath.Join(data, name)
			if err := os.WriteFile(path, b, 0o600); err != nil {
				return nil, err
			}
			if p.cred != nil {
				if err := os.Chown(path, int(p.cred.Uid), int(p.cred.Gid)); err != nil {
					return nil, err
				}
			}
		}
	}
	if p.port, err = FreePort(); err != nil {
		return nil, err
	}
	if err := p.Start(); err != nil {
		return nil, err
	}
	return p, nil
}

// Start runs postgres and waits until it accepts connections.
func (p *Postgres) Start() error {
	started := make(chan error, 1)
	exited := make(chan struct{})
	// Pdeathsig fires when the thread that started the child exits, so
	// the child is started from a locked thread that lives as long as it.
	go func() {
		runtime.LockOSThread()
		logf, err := os.OpenFile(p.logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			started <- err
			return
		}
		defer logf.Close()
		args := []string{"-D", filepath.Join(p.dir, "data"),
			"-p", strconv.Itoa(p.port), "-k", p.dir, "-c", "listen_addresses=127.0.0.1",
			"-c", "fsync=on", "-c", "max_connections=400", "-c", "shared_buffers=64MB"}
		if p.tls {
			args = append(args, "-c", "ssl=on")
		}
		for _, kv := range p.settings {
			args = append(args, "-c", kv)
		}
		cmd := exec.Command(filepath.Join(p.bin, "postgres"), args...)
		cmd.Stdout, cmd.Stderr = logf, logf
		// A process group of its own, so that a signal to the test's
		// group (^C) reaches the server only through Pdeathsig. Its
		// children each call setsid: Crash finds them by parent.
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred, Pdeathsig: syscall.SIGQUIT, Setpgid: true}
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		p.mu.Lock()
		p.proc, p.exited = cmd.Process, exited
		p.mu.Unlock()
		started <- nil
		_ = cmd.Wait()
		close(exited)
	}()
	if err := <-started; err != nil {
		return fmt.Errorf("start postgres: %w", err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		conn, err := pgx.Connect(context.Background(), p.adminURL())
		if err == nil {
			_ = conn.Close(context.Background())
			return nil
		}
		select {
		case <-exited:
			log, _ := os.ReadFile(p.logFile)
			return fmt.Errorf("postgres exited at start:\n%s", log)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("postgres did not accept connections: %w", err)
		}
	}
}

// setOwner makes p's directory the postgres user's when the tests run as
// root (PostgreSQL refuses to run as root), and records the credential
// its programs then run with.
func (p *Postgres) setOwner() error {
	if os.Geteuid() != 0 {
		return nil
	}
	u, err := user.Lookup("postgres")
	if err != nil {
		return fmt.Errorf("running as root needs the postgres user to run PostgreSQL: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	p.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
	return os.Chown(p.dir, uid, gid)
}

// Crash kills every process of the server at once, as a machine that
// dies does. Killing the postmaster alone is not that: each of its
// children calls setsid (a process group of its own), outlives it, and on
// noticing its death finishes what it was doing. A commit waiting for a
// synchronous standby then stops waiting and becomes visible on the dying
// primary, so clients could read a revision the promoted standby never
// had. So Crash stops the postmaster (no new children), then stops each
// child, and only when nothing of the server runs kills them all. It
// returns once they are gone.
func (p *Postgres) Crash() {
	p.mu.Lock()
	proc, exited := p.proc, p.exited
	p.mu.Unlock()
	if proc == nil {
		return
	}
	_ = syscall.Kill(proc.Pid, syscall.SIGSTOP)
	stopped := map[int]bool{}
	for {
		more := false
		for _, pid := range childrenOf(proc.Pid) {
			if !stopped[pid] {
				_ = syscall.Kill(pid, syscall.SIGSTOP)
				stopped[pid], more = true, true
			}
		}
		if !more {
			break
		}
	}
	for pid := range stopped {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	_ = syscall.Kill(proc.Pid, syscall.SIGKILL)
	<-exited
	for pid := range stopped {
		for alive(pid) {
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// childrenOf lists the processes whose parent is pid, from /proc.
func childrenOf(pid int) []int {
	entries, _ := os.ReadDir("/proc")
	var kids []int
	for _, e := range entries {
		child, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if _, ppid, ok := procStat(child); ok && ppid == pid {
			kids = append(kids, child)
		}
	}
	return kids
}

// alive reports whether process pid exists and is not a zombie.
func alive(pid int) bool {
	state, _, ok := procStat(pid)
	return ok && state != 'Z' && state != 'X'
}

// procStat reads a process's state and parent from /proc/pid/stat
// ("pid (comm) state ppid ..."; comm may hold spaces and parentheses).
func procStat(pid int) (state byte, ppid int, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, false
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, false
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 2 {
		return 0, 0, false
	}
	ppid, err = strconv.Atoi(f[1])
	if err != nil || len(f[0]) == 0 {
		return 0, 0, false
	}
	return f[0][0], ppid, true
}

// Addr is the server's host:port.
func (p *Postgres) Addr() string { return "127.0.0.1:" + strconv.Itoa(p.port) }

// NewStandby makes a streaming standby of p: a base backup of p into a
// new temp dir, with standby.signal and primary_conninfo pointing at
// primaryAddr (p's Addr, or a proxy in front of it), started on a free
// port with settings (as NewPostgresConf's) and application_name
// "standby". Promote makes it a primary.
func (p *Postgres) NewStandby(primaryAddr string, settings ...string) (*Postgres, error) {
	dir, err := os.MkdirTemp("", "kvsql-pg-")
	if err != nil {
		return nil, err
	}
	s := &Postgres{bin: p.bin, dir: dir, logFile: filepath.Join(dir, "postgres.log"), settings: settings}
	if err := s.setOwner(); err != nil {
		return nil, err
	}
	data := filepath.Join(dir, "data")
	backup := exec.Command(filepath.Join(p.bin, "pg_basebackup"), "-d", p.URL("postgres"), "-D", data,
		"--wal-method=stream", "--checkpoint=fast", "--no-sync")
	backup.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	if out, err := backup.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("pg_basebackup: %w\n%s", err, out)
	}
	host, port, err := net.SplitHostPort(primaryAddr)
	if err != nil {
		return nil, fmt.Errorf("primary address %q: %w", primaryAddr, err)
	}
	conf := fmt.Sprintf("\nprimary_conninfo = 'host=%s port=%s user=kvsql application_name=standby sslmode=disable'\n", host, port)
	for name, text := range map[string]string{"standby.signal": "", "postgresql.auto.conf": conf} {
		f, err := os.OpenFile(filepath.Join(data, name), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
		if err != nil {
			return nil, err
		}
		_, err = f.WriteString(text)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return nil, err
		}
		if s.cred != nil {
			if err := os.Chown(filepath.Join(data, name), int(s.cred.Uid), int(s.cred.Gid)); err != nil {
				return nil, err
			}
		}
	}
	if s.port, err = FreePort(); err != nil {
		return nil, err
	}
	if err := s.Start(); err != nil {
		return nil, err
	}
	return s, nil
}

// Promote ends a standby's recovery (pg_promote, as pg_ctl promote does)
// and waits until it accepts writes.
func (p *Postgres) Promote() error {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, p.adminURL())
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	var ok bool
	if err := conn.QueryRow(ctx, `SELECT pg_promote(true, 60)`).Scan(&ok); err != nil || !ok {
		return fmt.Errorf("pg_promote: %v, %w", ok, err)
	}
	return nil
}

// Stop stops the server with sig (SIGINT: fast shutdown, SIGQUIT:
// immediate, like a crash) and waits for it to exit.
func (p *Postgres) Stop(sig syscall.Signal) {
	p.mu.Lock()
	proc, exited := p.proc, p.exited
	p.mu.Unlock()
	if proc == nil {
		return
	}
	_ = proc.Signal(sig)
	<-exited
}

// URL returns the connection URL of database db as the superuser kvsql.
func (p *Postgres) URL(db string) string {
	return fmt.Sprintf("postgres://kvsql@127.0.0.1:%d/%s?sslmode=disable", p.port, db)
}

// TLSURL returns the URL of database db as the superuser kvsql, over TLS
// with full verification of the server's certificate against caFile.
func (p *Postgres) TLSURL(db, caFile string) string {
	return fmt.Sprintf("postgres://kvsql@127.0.0.1:%d/%s?sslmode=verify-full&sslrootcert=%s", p.port, db, url.QueryEscape(caFile))
}

// adminURL reaches the server whatever its TLS settings: over its unix
// socket when TCP requires TLS.
func (p *Postgres) adminURL() string {
	if p.tls {
		return fmt.Sprintf("host=%s port=%d user=kvsql dbname=postgres sslmode=disable", p.dir, p.port)
	}
	return p.URL("postgres")
}

// Destroy kills the server and removes its files.
func (p *Postgres) Destroy() {
	p.Stop(syscall.SIGQUIT)
	_ = os.RemoveAll(p.dir)
}

// SharedPostgres is one cluster for every test that only needs a fresh
// database.
var SharedPostgres = sync.OnceValues(func() (*Postgres, error) {
	p, err := NewPostgres()
	if err == nil {
		atExit(p.Destroy)
	}
	return p, err
})

var pgDBCounter atomic.Int64

// FreshPostgresURL returns the URL of a new, empty database: on
// $TEST_POSTGRES_URL's server if set, else on the shared throwaway cluster.
func FreshPostgresURL(t testing.TB) string {
	t.Helper()
	admin := os.Getenv("TEST_POSTGRES_URL")
	var urlFor func(string) string
	if admin == "" {
		p, err := SharedPostgres()
		if err != nil {
			SkipOrFail(t, err)
		}
		admin = p.URL("postgres")
		urlFor = p.URL
	} else {
		cfg, err := pgx.ParseConfig(admin)
		if err != nil {
			t.Fatalf("TEST_POSTGRES_URL: %v", err)
		}
		urlFor = func(db string) string {
			return fmt.Sprintf("postgres://%s:%s@%s:%d/%s?sslmode=disable", cfg.User, cfg.Password, cfg.Host, cfg.Port, db)
		}
	}
	name := fmt.Sprintf("kvsql_test_%d_%d", os.Getpid(), pgDBCounter.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		t.Fatalf("connect to postgres: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create database: %v", err)
	}
	return urlFor(name)
}
