package main

// The servers a run measures: etcd or kvsql started fresh on free
// loopback ports, their disk use and memory, and stopping them.

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/kvsql/kvsql/internal/testdb"
)

// server is one running server under test.
type server struct {
	cmd     *exec.Cmd
	addr    string
	dataDir string
	// disk returns the bytes the server's state takes on disk.
	disk    func() (int64, error)
	cleanup []func()
}

func (s *server) stop() {
	if s.cmd != nil && s.cmd.Process != nil {
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = s.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = s.cmd.Process.Kill()
			<-done
		}
	}
	for i := len(s.cleanup) - 1; i >= 0; i-- {
		s.cleanup[i]()
	}
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// start starts target on fresh data.
func start(c config, target string) (*server, error) {
	dir, err := os.MkdirTemp("", "kvsql-scale-")
	if err != nil {
		return nil, err
	}
	s := &server{cleanup: []func(){func() { _ = os.RemoveAll(dir) }}}
	if s.addr, err = freeAddr(); err != nil {
		return s, err
	}
	s.dataDir = filepath.Join(dir, "data")
	duData := func() (int64, error) { return du(s.dataDir) }
	bin := c.kvsql
	args := []string{"--listen-client-urls=http://" + s.addr, "--log-level=warn"}
	if c.quota > 0 {
		args = append(args, "--quota-backend-bytes="+strconv.FormatInt(c.quota, 10))
	}
	switch target {
	case "etcd":
		bin = c.etcd
		peer, err := freeAddr()
		if err != nil {
			return s, err
		}
		args = append(args, "--name=scale", "--data-dir="+s.dataDir, "--advertise-client-urls=http://"+s.addr,
			"--listen-peer-urls=http://"+peer, "--initial-advertise-peer-urls=http://"+peer,
			"--initial-cluster=scale=http://"+peer)
		s.disk = duData
	case "sqlite":
		args = append(args, "--data-dir="+s.dataDir)
		s.disk = duData
	case "postgres":
		// Durable as shipped; the caches bench/run.sh gives its server.
		pg, err := testdb.NewPostgresConf(append([]string{"synchronous_commit=on", "shared_buffers=128MB"}, c.pgConf...)...)
		if err != nil {
			return s, err
		}
		s.cleanup = append(s.cleanup, pg.Destroy)
		url := pg.URL("postgres")
		args = append(args, "--endpoint="+url)
		s.disk = func() (int64, error) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			conn, err := pgx.Connect(ctx, url)
			if err != nil {
				return 0, err
			}
			defer conn.Close(ctx)
			var n int64
			err = conn.QueryRow(ctx, `SELECT pg_database_size(current_database())`).Scan(&n)
			return n, err
		}
	case "mariadb":
		var extra []string // nil: testdb's binlog settings
		if len(c.mariadbArgs) > 0 {
			// Options given replace testdb's binlog settings: repeat them.
			extra = append([]string{"--log-bin=binlog", "--binlog-format=ROW", "--binlog-row-image=FULL", "--server-id=1"}, c.mariadbArgs...)
		}
		m, err := testdb.NewMariaDB(extra...)
		if err != nil {
			return s, err
		}
		s.cleanup = append(s.cleanup, m.Destroy)
		if err := m.CreateDB("kvsql"); err != nil {
			return s, err
		}
		args = append(args, "--endpoint="+m.DSN("kvsql", "kvsql"))
		// The database's own directory (one .ibd file per table); the
		// server's shared redo log, undo and binlog are not counted.
		s.disk = func() (int64, error) {
			db, err := m.Root()
			if err != nil {
				return 0, err
			}
			defer db.Close()
			var datadir string
			if err := db.QueryRow(`SELECT @@datadir`).Scan(&datadir); err != nil {
				return 0, err
			}
			return du(filepath.Join(datadir, "kvsql"))
		}
	default:
		return s, fmt.Errorf("unknown target %q: want etcd, sqlite, postgres or mariadb", target)
	}
	if target != "etcd" {
		args = append(args, c.kvsqlArgs...)
	}
	logf("starting %s %s", filepath.Base(bin), strings.Join(args, " "))
	s.cmd = exec.Command(bin, args...)
	logFile, err := os.Create(filepath.Join(dir, "server.log"))
	if err != nil {
		return s, err
	}
	s.cmd.Stdout, s.cmd.Stderr = logFile, logFile
	s.cleanup = append(s.cleanup, func() { _ = logFile.Close() })
	if err := s.cmd.Start(); err != nil {
		return s, err
	}
	return s, nil
}

// du returns the bytes the files under dir occupy.
func du(dir string) (int64, error) {
	var n int64
	err := filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && !fi.IsDir() {
			n += st.Blocks * 512
		}
		return nil
	})
	return n, err
}

const prefix = "/registry/pods/"

func prefixEnd(p string) string { return p[:len(p)-1] + string(p[len(p)-1]+1) }

func objectKey(i int) []byte { return fmt.Appendf(nil, "%sdefault/pod-%07d", prefix, i) }

func dialAll(addr string, n int) ([]*grpc.ClientConn, error) {
	var conns []*grpc.ClientConn
	for range n {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(1<<31-1), grpc.MaxCallSendMsgSize(16<<20)))
		if err != nil {
			return nil, err
		}
		conns = append(conns, cc)
	}
	return conns, nil
}

func waitReady(ctx context.Context, kv pb.KVClient, s *server) error {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		_, err := kv.Range(ctx, &pb.RangeRequest{Key: []byte("ready")})
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("server did not answer within 2 minutes (log in %s): %w", filepath.Dir(s.dataDir), err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
