package testdb

import (
	"database/sql"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	gomysql "github.com/go-sql-driver/mysql"
)

// MariaDB is a throwaway MariaDB (or MySQL) server in a temp dir on a free
// loopback port, with the binary log on in ROW format as kvsql needs. Like
// Postgres it runs as a child that gets SIGKILL if the test process dies.
type MariaDB struct {
	mysqld  string
	dir     string
	port    int
	cred    *syscall.Credential
	extra   []string // extra server options
	tlsArgs []string // TLS server options (NewMariaDBTLS)
	mu      sync.Mutex
	proc    *os.Process
	exited  chan struct{}
	logFile string
}

func mysqlBinaries() (installDB, mysqld string, err error) {
	for _, pair := range [][2]string{{"mariadb-install-db", "mariadbd"}, {"mysql_install_db", "mysqld"}} {
		i, ierr := exec.LookPath(pair[0])
		if ierr != nil {
			i, ierr = exec.LookPath("/usr/bin/" + pair[0])
		}
		d, derr := exec.LookPath(pair[1])
		if derr != nil {
			d, derr = exec.LookPath("/usr/sbin/" + pair[1])
		}
		if ierr == nil && derr == nil {
			return i, d, nil
		}
	}
	return "", "", errors.New("no MariaDB server binaries (mariadb-install-db, mariadbd): install the Debian package mariadb-server")
}

// NewMariaDB initialises and starts a server; extra are mariadbd options
// that replace the binlog defaults (for misconfiguration tests). It creates
// the users kvsql (all privileges) and nobinlog (only what kvsql's tables
// need, without replication grants).
func NewMariaDB(extra ...string) (*MariaDB, error) { return newMariaDB(nil, extra) }

// NewMariaDBTLS is NewMariaDB with TLS on: certPEM/keyPEM are the server's
// certificate, caPEM the CA of client certificates. It also creates the
// user kvtls (all privileges) that may connect only over TLS (REQUIRE
// SSL), so that a client connected as kvtls, replication included, is
// known to use TLS.
func NewMariaDBTLS(certPEM, keyPEM, caPEM []byte) (*MariaDB, error) {
	return newMariaDB(map[string][]byte{"server-cert.pem": certPEM, "server-key.pem": keyPEM, "ca.pem": caPEM}, nil)
}

func newMariaDB(tlsFiles map[string][]byte, extra []string) (*MariaDB, error) {
	installDB, mysqld, err := mysqlBinaries()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "kvsql-mariadb-")
	if err != nil {
		return nil, err
	}
	m := &MariaDB{mysqld: mysqld, dir: dir, logFile: filepath.Join(dir, "mariadb.log"), extra: extra}
	// Each server keeps its temporary files in its own directory, not the
	// shared /tmp: a bootstrap once failed there ("Could not remove
	// temporary table: '/tmp/#sql-temptable-...'", then "Unknown table")
	// while other tests' servers ran.
	if err := os.Mkdir(m.tmpDir(), 0o700); err != nil {
		return nil, err
	}
	args := []string{"--no-defaults", "--datadir=" + filepath.Join(dir, "data"), "--tmpdir=" + m.tmpDir(),
		"--auth-root-authentication-method=normal", "--skip-test-db"}
	if os.Geteuid() == 0 {
		u, err := user.Lookup("mysql")
		if err != nil {
			return nil, fmt.Errorf("running as root needs the mysql user to run MariaDB: %w", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		gid, _ := strconv.Atoi(u.Gid)
		m.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}
		for _, d := range []string{dir, m.tmpDir()} {
			if err := os.Chown(d, uid, gid); err != nil {
				return nil, err
			}
		}
		args = append(args, "--user=mysql")
	}
	cmd := exec.Command(installDB, args...)
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("mariadb-install-db: %w\n%s", err, out)
	}
	if m.port, err = FreePort(); err != nil {
		return nil, err
	}
	for name, b := range tlsFiles {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, b, 0o644); err != nil {
			return nil, err
		}
	}
	if tlsFiles != nil {
		m.tlsArgs = []string{"--ssl-cert=" + filepath.Join(dir, "server-cert.pem"), "--ssl-key=" + filepath.Join(dir, "server-key.pem"), "--ssl-ca=" + filepath.Join(dir, "ca.pem")}
	}
	if err := m.Start(); err != nil {
		return nil, err
	}
	db, err := sql.Open("mysql", "root@unix("+m.Socket()+")/")
	if err != nil {
		return nil, err
	}
	defer db.Close()
	for _, q := range []string{
		"CREATE USER 'kvsql'@'%'",
		"GRANT ALL PRIVILEGES ON *.* TO 'kvsql'@'%'",
		// A user with only what kvsql's tables need, for the grant check.
		"CREATE USER 'nobinlog'@'%'",
		"GRANT SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, INDEX, ALTER ON *.* TO 'nobinlog'@'%'",
	} {
		if _, err := db.Exec(q); err != nil {
			return nil, fmt.Errorf("%s: %w", q, err)
		}
	}
	if tlsFiles != nil {
		for _, q := range []string{"CREATE USER 'kvtls'@'%' REQUIRE SSL", "GRANT ALL PRIVILEGES ON *.* TO 'kvtls'@'%'"} {
			if _, err := db.Exec(q); err != nil {
				return nil, fmt.Errorf("%s: %w", q, err)
			}
		}
	}
	return m, nil
}

// Socket is the server's unix socket; root connects through it.
func (m *MariaDB) Socket() string { return filepath.Join(m.dir, "mysqld.sock") }

// Start runs mariadbd and waits until it accepts connections.
func (m *MariaDB) Start() error {
	started := make(chan error, 1)
	exited := make(chan struct{})
	go func() {
		runtime.LockOSThread() // Pdeathsig is per thread: keep this one alive
		logf, err := os.OpenFile(m.logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			started <- err
			return
		}
		defer logf.Close()
		args := []string{"--no-defaults", "--datadir=" + filepath.Join(m.dir, "data"), "--tmpdir=" + m.tmpDir(),
			"--socket=" + m.Socket(), "--port=" + strconv.Itoa(m.port), "--bind-address=127.0.0.1",
			"--pid-file=" + filepath.Join(m.dir, "mysqld.pid"), "--skip-name-resolve",
			"--innodb-flush-log-at-trx-commit=1", "--sync-binlog=1", "--max-connections=500",
			"--max-allowed-packet=64M", "--innodb-buffer-pool-size=128M"}
		args = append(args, m.tlsArgs...)
		if m.extra != nil {
			args = append(args, m.extra...)
		} else {
			args = append(args, "--log-bin="+filepath.Join(m.dir, "data", "binlog"), "--binlog-format=ROW",
				"--binlog-row-image=FULL", "--server-id=1")
		}
		cmd := exec.Command(m.mysqld, args...)
		cmd.Stdout, cmd.Stderr = logf, logf
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: m.cred, Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		m.mu.Lock()
		m.proc, m.exited = cmd.Process, exited
		m.mu.Unlock()
		started <- nil
		_ = cmd.Wait()
		close(exited)
	}()
	if err := <-started; err != nil {
		return fmt.Errorf("start mariadbd: %w", err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		db, err := sql.Open("mysql", "root@unix("+m.Socket()+")/")
		if err == nil {
			err = db.Ping()
			_ = db.Close()
			if err == nil {
				return nil
			}
		}
		select {
		case <-exited:
			log, _ := os.ReadFile(m.logFile)
			return fmt.Errorf("mariadbd exited at start:\n%s", log)
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("mariadbd did not accept connections: %w", err)
		}
	}
}

// Stop sends sig (SIGTERM: clean shutdown, SIGKILL: crash) and waits.
func (m *MariaDB) Stop(sig syscall.Signal) {
	m.mu.Lock()
	proc, exited := m.proc, m.exited
	m.mu.Unlock()
	if proc == nil {
		return
	}
	_ = proc.Signal(sig)
	<-exited
}

// Destroy kills the server and removes its files.
func (m *MariaDB) Destroy() {
	m.Stop(syscall.SIGKILL)
	_ = os.RemoveAll(m.dir)
}

// DSN returns a kvsql endpoint for database db as user.
func (m *MariaDB) DSN(userName, db string) string {
	return fmt.Sprintf("mysql://%s@tcp(127.0.0.1:%d)/%s", userName, m.port, db)
}

// CreateDB creates database name.
func (m *MariaDB) CreateDB(name string) error {
	db, err := sql.Open("mysql", "root@unix("+m.Socket()+")/")
	if err != nil {
		return err
	}
	defer db.Close()
	_, err = db.Exec("CREATE DATABASE " + name)
	return err
}

// SharedMariaDB is one server for every test that only needs a fresh
// database.
var SharedMariaDB = sync.OnceValues(func() (*MariaDB, error) {
	m, err := NewMariaDB()
	if err == nil {
		atExit(m.Destroy)
	}
	return m, err
})

var myDBCounter atomic.Int64

// FreshMySQLEndpoint returns a kvsql endpoint for a new, empty database: on
// $TEST_MYSQL_DSN's server (user:pass@tcp(host:port)/) if set, else on the
// shared throwaway server.
func FreshMySQLEndpoint(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("kvsql_test_%d_%d", os.Getpid(), myDBCounter.Add(1))
	if dsn := os.Getenv("TEST_MYSQL_DSN"); dsn != "" {
		cfg, err := gomysql.ParseDSN(dsn)
		if err != nil {
			t.Fatalf("TEST_MYSQL_DSN: %v", err)
		}
		db, err := sql.Open("mysql", dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if _, err := db.Exec("CREATE DATABASE " + name); err != nil {
			t.Fatalf("create database: %v", err)
		}
		cfg.DBName = name
		return "mysql://" + cfg.FormatDSN()
	}
	m, err := SharedMariaDB()
	if err != nil {
		SkipOrFail(t, err)
	}
	if err := m.CreateDB(name); err != nil {
		t.Fatalf("create database: %v", err)
	}
	return m.DSN("kvsql", name)
}

// Addr is the server's host:port.
func (m *MariaDB) Addr() string { return "127.0.0.1:" + strconv.Itoa(m.port) }

// Root returns a connection pool to the server as root, over its socket;
// the caller closes it.
func (m *MariaDB) Root() (*sql.DB, error) { return sql.Open("mysql", "root@unix("+m.Socket()+")/") }

// GTIDBinlogPos returns the GTID position of the server's binary log:
// where a replica that has everything up to now starts.
func (m *MariaDB) GTIDBinlogPos() (string, error) {
	db, err := m.Root()
	if err != nil {
		return "", err
	}
	defer db.Close()
	var pos string
	err = db.QueryRow(`SELECT @@gtid_binlog_pos`).Scan(&pos)
	return pos, err
}

// ReplicateFrom makes the server a GTID replica of the primary at
// primaryAddr (host:port; the primary itself or a proxy in front of it)
// from GTID position pos (the primary's GTIDBinlogPos before the data to
// replicate was written: both servers have their own users already), as
// user kvsql, and waits until both replication threads run.
func (m *MariaDB) ReplicateFrom(primaryAddr, pos string) error {
	host, port, err := net.SplitHostPort(primaryAddr)
	if err != nil {
		return fmt.Errorf("primary address %q: %w", primaryAddr, err)
	}
	db, err := m.Root()
	if err != nil {
		return err
	}
	defer db.Close()
	for _, q := range []string{
		// The replica's own binary log holds its users: start it afresh,
		// so that its GTIDs are the primary's.
		"RESET MASTER",
		"SET GLOBAL gtid_slave_pos = '" + pos + "'",
		"CHANGE MASTER TO MASTER_HOST = '" + host + "', MASTER_PORT = " + port +
			", MASTER_USER = 'kvsql', MASTER_USE_GTID = slave_pos, MASTER_CONNECT_RETRY = 1",
		"START SLAVE",
	} {
		if _, err := db.Exec(q); err != nil {
			return fmt.Errorf("%s: %w", q, err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := slaveStatus(db)
		if err != nil {
			return err
		}
		if st["Slave_IO_Running"] == "Yes" && st["Slave_SQL_Running"] == "Yes" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("replication did not start: IO %s (%s), SQL %s (%s)", st["Slave_IO_Running"], st["Last_IO_Error"], st["Slave_SQL_Running"], st["Last_SQL_Error"])
		}
		time.Sleep(50 * time.Millisecond) // polling the server's state
	}
}

// PromoteReplica makes a replica the primary, as a failover does once the
// old primary is gone: it waits until the replica has applied everything
// it received, stops replicating, forgets its primary and turns
// read_only off.
func (m *MariaDB) PromoteReplica() error {
	db, err := m.Root()
	if err != nil {
		return err
	}
	defer db.Close()
	st, err := slaveStatus(db)
	if err != nil {
		return err
	}
	var waited int
	if err := db.QueryRow(`SELECT MASTER_GTID_WAIT(?, 60)`, st["Gtid_IO_Pos"]).Scan(&waited); err != nil || waited != 0 {
		return fmt.Errorf("wait for the replica to apply what it received (%s): %d: %w", st["Gtid_IO_Pos"], waited, err)
	}
	for _, q := range []string{"STOP SLAVE", "RESET SLAVE ALL", "SET GLOBAL read_only = 0"} {
		if _, err := db.Exec(q); err != nil {
			return fmt.Errorf("%s: %w", q, err)
		}
	}
	return nil
}

// slaveStatus returns SHOW SLAVE STATUS by column name (empty if the
// server replicates from nothing).
func slaveStatus(db *sql.DB) (map[string]string, error) {
	rows, err := db.Query(`SHOW SLAVE STATUS`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return nil, err
	}
	st := map[string]string{}
	if !rows.Next() {
		return st, rows.Err()
	}
	vals := make([]sql.NullString, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	if err := rows.Scan(ptrs...); err != nil {
		return nil, err
	}
	for i, c := range cols {
		st[c] = vals[i].String
	}
	return st, rows.Err()
}

// tmpDir is the server's own directory for temporary files.
func (m *MariaDB) tmpDir() string { return filepath.Join(m.dir, "tmp") }
