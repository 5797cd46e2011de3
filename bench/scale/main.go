// Command scale measures etcd and kvsql side by side at Kubernetes scale, in
// one invocation, each server fresh: etcd 3.6, kvsql on embedded SQLite,
// kvsql on a throwaway PostgreSQL cluster and kvsql on a throwaway MariaDB
// server (both started from the machine's packages by internal/testdb, one
// per target). On each it
//
//  1. creates -objects keys /registry/pods/default/pod-NNNNNNN of -value
//     random bytes the way kube-apiserver creates an object (a txn: if the
//     key's create_revision is 0 then put), -writers writers over -conns
//     connections, and reports keys/s;
//  2. measures the bytes on disk and what Maintenance.Status reports;
//  3. times a count-only Range of every object (median of 5);
//  4. times a paginated list of every object, -page keys per page, each page
//     at the first page's revision (kube-apiserver's continue shape);
//  5. runs -writers CAS writers (Kubernetes' GuaranteedUpdate: txn if
//     mod_revision = r then put else get) over every object for -cas-time
//     and reports successful updates/s;
//  6. opens -watchers watchers on one prefix over -watch-streams streams,
//     puts -watch-events values of -watch-value bytes at -watch-rate per second
//     and reports the put (sent) -> event p99 over every watcher;
//  7. runs -compact-writers CAS writers, compacts (physical) to the
//     current revision after -compact-before, and reports the write p99 of
//     the writes issued while Compact ran against the p99 before it;
//  8. reads every object with one unpaginated Range and reports its time
//     and the server's resident set size (VmRSS) after it, and its peak.
//
// then prints one markdown table with every server's numbers and each
// kvsql's ratio to etcd's. `make bench-scale` builds etcd (pinned by
// tools/etcd/go.mod) and kvsql and runs it; flags go in ARGS, e.g.
//
//	make bench-scale ARGS="-objects 200000 -watchers 10000"
//
// TMPDIR must be a real disk: on tmpfs an fsync costs nothing.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/kvsql/kvsql/internal/testdb"
)

type config struct {
	etcd, kvsql      string
	targets          []string
	objects, value   int
	writers, conns   int
	casTime          time.Duration
	watchers         int
	watchStreams     int
	watchEvents      int
	watchRate        float64
	watchValue       int
	page             int
	compactWriters   int
	compactBefore    time.Duration
	quota            int64
	phases           map[string]bool
	keepGoingOnError bool
	kvsqlArgs        []string
}

func main() {
	var c config
	var targets, phases string
	flag.StringVar(&c.etcd, "etcd", ".cache/bin/etcd", "the etcd binary (make bench-scale builds the pinned one)")
	flag.StringVar(&c.kvsql, "kvsql", "bin/kvsql", "the kvsql binary (build it without -race)")
	flag.StringVar(&targets, "targets", "etcd,sqlite,postgres,mariadb", "comma-separated servers to measure, in order")
	flag.IntVar(&c.objects, "objects", 20000, "objects to create (200000 or 1000000 for the issue's sizes)")
	flag.IntVar(&c.value, "value", 2048, "bytes per object (random, so incompressible)")
	flag.IntVar(&c.writers, "writers", 64, "concurrent writers of the create load and the CAS churn")
	flag.IntVar(&c.conns, "conns", 8, "client connections the writers share")
	flag.DurationVar(&c.casTime, "cas-time", 10*time.Second, "how long the CAS churn runs")
	flag.IntVar(&c.watchers, "watchers", 1000, "watchers on one prefix (the issue: 10000)")
	flag.IntVar(&c.watchStreams, "watch-streams", 10, "watch streams the watchers share")
	flag.IntVar(&c.watchEvents, "watch-events", 100, "puts timed to every watcher")
	flag.Float64Var(&c.watchRate, "watch-rate", 20, "puts per second while watching")
	flag.IntVar(&c.watchValue, "watch-value", 0, "bytes per watched put (0: -value); every watcher receives every put")
	flag.IntVar(&c.page, "page", 500, "keys per page of the paginated list")
	flag.IntVar(&c.compactWriters, "compact-writers", 16, "CAS writers running while Compact runs")
	flag.DurationVar(&c.compactBefore, "compact-before", 5*time.Second, "how long those writers run before Compact starts")
	flag.Int64Var(&c.quota, "quota", 0, "backend quota in bytes for every server (0: 8 GiB when the objects need more than 1 GiB, else each server's default)")
	flag.StringVar(&phases, "phases", "load,disk,count,list,cas,watch,compact,range", "comma-separated phases to run (load always runs)")
	flag.BoolVar(&c.keepGoingOnError, "k", false, "keep going with the next target when one fails")
	kvsqlArgs := flag.String("kvsql-args", "", "extra kvsql flags, space-separated (e.g. --enable-pprof --listen-metrics-urls=http://127.0.0.1:9090 to profile it)")
	flag.Parse()
	c.kvsqlArgs = strings.Fields(*kvsqlArgs)
	c.targets = strings.Split(targets, ",")
	c.phases = map[string]bool{"load": true}
	for _, p := range strings.Split(phases, ",") {
		c.phases[strings.TrimSpace(p)] = true
	}
	if c.watchValue == 0 {
		c.watchValue = c.value
	}
	if c.quota == 0 && int64(c.objects)*int64(c.value) > 1<<30 {
		c.quota = 8 << 30
	}
	if err := run(c); err != nil {
		fmt.Fprintln(os.Stderr, "scale:", err)
		os.Exit(1)
	}
}

// result is one server's numbers; a negative or zero field was not measured.
type result struct {
	target                    string
	createPerSec              float64
	casPerSec, casP99         float64
	watchP99, watchP50        float64
	compactP99, beforeP99     float64
	compactSecs               float64
	compactRevs               int64
	listSecs, rangeSecs       float64
	countMS                   float64
	diskMB, statusMB, inUseMB float64
	rssMB, peakMB             float64
	failures                  []string // phases that failed
	err                       error
}

func run(c config) error {
	for _, b := range []string{c.etcd, c.kvsql} {
		if _, err := os.Stat(b); err != nil {
			return fmt.Errorf("%w (make bench-scale builds it)", err)
		}
	}
	var results []*result
	for _, t := range c.targets {
		logf("== %s: %d objects of %d B", t, c.objects, c.value)
		r, err := measure(c, t)
		if err != nil {
			if !c.keepGoingOnError {
				return fmt.Errorf("%s: %w", t, err)
			}
			logf("%s failed: %v", t, err)
			r = &result{target: t, err: err}
		}
		results = append(results, r)
		printTable(os.Stderr, c, results) // progress: the table so far
	}
	printTable(os.Stdout, c, results)
	return nil
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05 ")+format+"\n", args...)
}

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
		pg, err := testdb.NewPostgresConf("synchronous_commit=on", "shared_buffers=128MB")
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
		m, err := testdb.NewMariaDB()
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

func measure(c config, target string) (*result, error) {
	r := &result{target: target}
	s, err := start(c, target)
	defer s.stop()
	if err != nil {
		return nil, err
	}
	conns, err := dialAll(s.addr, c.conns)
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, cc := range conns {
			_ = cc.Close()
		}
	}()
	ctx := context.Background()
	kv := pb.NewKVClient(conns[0])
	if err := waitReady(ctx, kv, s); err != nil {
		return nil, err
	}
	pid := s.cmd.Process.Pid

	took, err := timed(func() error { return load(ctx, c, conns) })
	if err != nil {
		return nil, fmt.Errorf("load: %w", err)
	}
	r.createPerSec = float64(c.objects) / took.Seconds()
	logf("%s: created %d objects in %.1fs: %.0f keys/s", target, c.objects, took.Seconds(), r.createPerSec)

	if c.phases["disk"] {
		n, err := s.disk()
		if err != nil {
			return nil, fmt.Errorf("disk size: %w", err)
		}
		r.diskMB = mb(n)
		st, err := pb.NewMaintenanceClient(conns[0]).Status(ctx, &pb.StatusRequest{})
		if err != nil {
			return nil, fmt.Errorf("status: %w", err)
		}
		r.statusMB, r.inUseMB = mb(st.DbSize), mb(st.DbSizeInUse)
		logf("%s: on disk %.0f MB; Status dbSize %.0f MB, in use %.0f MB", target, r.diskMB, r.statusMB, r.inUseMB)
	}
	all := &pb.RangeRequest{Key: []byte(prefix), RangeEnd: []byte(prefixEnd(prefix))}
	if c.phases["count"] {
		var ms []float64
		for range 5 {
			var n int64
			took, err := timed(func() error {
				resp, err := kv.Range(ctx, &pb.RangeRequest{Key: all.Key, RangeEnd: all.RangeEnd, CountOnly: true})
				if resp != nil {
					n = resp.Count
				}
				return err
			})
			if err != nil {
				return nil, fmt.Errorf("count: %w", err)
			}
			if n != int64(c.objects) {
				return nil, fmt.Errorf("count: %d objects, want %d", n, c.objects)
			}
			ms = append(ms, float64(took.Microseconds())/1000)
		}
		r.countMS = median(ms)
		logf("%s: count-only Range of every object: %.1f ms (median of %v)", target, r.countMS, ms)
	}
	if c.phases["list"] {
		var n int
		took, err := timed(func() (err error) { n, err = paginatedList(ctx, kv, c.page); return err })
		if err != nil {
			return nil, fmt.Errorf("paginated list: %w", err)
		}
		if n != c.objects {
			return nil, fmt.Errorf("paginated list: %d objects, want %d", n, c.objects)
		}
		r.listSecs = took.Seconds()
		logf("%s: paginated list (%d per page): %.2fs", target, c.page, r.listSecs)
	}
	if c.phases["cas"] {
		mods, err := modRevisions(ctx, kv, c.objects)
		if err != nil {
			return nil, fmt.Errorf("CAS churn: %w", err)
		}
		ops, lat, err := casLoad(ctx, c, conns, mods, c.writers, c.casTime, nil)
		if err != nil {
			return nil, fmt.Errorf("CAS churn: %w", err)
		}
		r.casPerSec = float64(ops) / c.casTime.Seconds()
		r.casP99 = p99(lat)
		logf("%s: CAS churn, %d writers: %.0f updates/s, p99 %.1f ms", target, c.writers, r.casPerSec, r.casP99)
	}
	if c.phases["watch"] {
		// A phase that fails (events that never arrive, a Compact the
		// server refuses) is reported; the other phases still run.
		if r.watchP50, r.watchP99, err = watchLatency(ctx, c, conns, kv); err != nil {
			r.failures = append(r.failures, fmt.Sprintf("watch: %v", err))
			logf("%s: watch failed: %v", target, err)
		} else {
			logf("%s: %d watchers: put -> event p50 %.1f ms, p99 %.1f ms", target, c.watchers, r.watchP50, r.watchP99)
		}
	}
	if c.phases["compact"] {
		if err := compactUnderLoad(ctx, c, conns, kv, r); err != nil {
			r.failures = append(r.failures, fmt.Sprintf("compact: %v", err))
			logf("%s: compact failed: %v", target, err)
		} else {
			logf("%s: Compact of %d revisions took %.2fs; write p99 during it %.1f ms, before it %.1f ms",
				target, r.compactRevs, r.compactSecs, r.compactP99, r.beforeP99)
		}
	}
	if c.phases["range"] {
		var n int
		took, err := timed(func() error {
			resp, err := kv.Range(ctx, all)
			if resp != nil {
				n = len(resp.Kvs)
			}
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("unpaginated range: %w", err)
		}
		if n != c.objects {
			return nil, fmt.Errorf("unpaginated range: %d objects, want %d", n, c.objects)
		}
		r.rangeSecs = took.Seconds()
		r.rssMB, r.peakMB = mb(procStatus(pid, "VmRSS")), mb(procStatus(pid, "VmHWM"))
		logf("%s: unpaginated Range: %.2fs; RSS after it %.0f MB, peak %.0f MB", target, r.rangeSecs, r.rssMB, r.peakMB)
	}
	return r, nil
}

func timed(f func() error) (time.Duration, error) {
	t := time.Now()
	err := f()
	return time.Since(t), err
}

// load creates every object, c.writers at a time, the way kube-apiserver
// creates one: put if the key does not exist.
func load(ctx context.Context, c config, conns []*grpc.ClientConn) error {
	var next atomic.Int64
	g, ctx := errgroup.WithContext(ctx)
	for w := range c.writers {
		kv := pb.NewKVClient(conns[w%len(conns)])
		g.Go(func() error {
			rnd := rand.New(rand.NewPCG(uint64(w), 1))
			v := make([]byte, c.value)
			for {
				i := int(next.Add(1) - 1)
				if i >= c.objects {
					return nil
				}
				fill(rnd, v)
				k := objectKey(i)
				resp, err := kv.Txn(ctx, &pb.TxnRequest{
					Compare: []*pb.Compare{{Key: k, Target: pb.Compare_CREATE, Result: pb.Compare_EQUAL,
						TargetUnion: &pb.Compare_CreateRevision{CreateRevision: 0}}},
					Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: k, Value: v}}}},
				})
				if err != nil {
					return err
				}
				if !resp.Succeeded {
					return fmt.Errorf("create %s: the key exists", k)
				}
			}
		})
	}
	return g.Wait()
}

func fill(rnd *rand.Rand, b []byte) {
	for i := 0; i+8 <= len(b); i += 8 {
		x := rnd.Uint64()
		for j := range 8 {
			b[i+j] = byte(x >> (8 * j))
		}
	}
}

// paginatedList reads every object in pages of page keys, each page at the
// first page's revision, and returns how many it read.
func paginatedList(ctx context.Context, kv pb.KVClient, page int) (int, error) {
	key, end := []byte(prefix), []byte(prefixEnd(prefix))
	var rev int64
	n := 0
	for {
		resp, err := kv.Range(ctx, &pb.RangeRequest{Key: key, RangeEnd: end, Limit: int64(page), Revision: rev})
		if err != nil {
			return n, err
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		n += len(resp.Kvs)
		if !resp.More || len(resp.Kvs) == 0 {
			return n, nil
		}
		if resp.Count < int64(len(resp.Kvs)) {
			return n, fmt.Errorf("page count %d < %d keys in the page", resp.Count, len(resp.Kvs))
		}
		key = append(slices.Clone(resp.Kvs[len(resp.Kvs)-1].Key), 0)
	}
}

// modRevisions returns every object's mod revision, as an informer's
// cache would hold them, read in keys-only pages.
func modRevisions(ctx context.Context, kv pb.KVClient, n int) ([]int64, error) {
	mods := make([]int64, n)
	key, end := []byte(prefix), []byte(prefixEnd(prefix))
	for {
		resp, err := kv.Range(ctx, &pb.RangeRequest{Key: key, RangeEnd: end, Limit: 10000, KeysOnly: true})
		if err != nil {
			return nil, err
		}
		for _, k := range resp.Kvs {
			i, err := strconv.Atoi(strings.TrimPrefix(string(k.Key), prefix+"default/pod-"))
			if err != nil || i >= n {
				return nil, fmt.Errorf("unexpected key %q", k.Key)
			}
			mods[i] = k.ModRevision
		}
		if !resp.More {
			return mods, nil
		}
		key = append(slices.Clone(resp.Kvs[len(resp.Kvs)-1].Key), 0)
	}
}

// sample is one write's start and latency.
type sample struct {
	at  time.Time
	lat time.Duration
}

// casLoad runs writers CAS writers over every object (writer w updates
// the objects i with i % writers == w, in turn, starting from their mod
// revisions in mods) for d, or until stop is closed when d is 0, and
// returns the successful updates and every update's latency.
func casLoad(ctx context.Context, c config, conns []*grpc.ClientConn, mods []int64, writers int, d time.Duration, stop <-chan struct{}) (int64, []sample, error) {
	var ops atomic.Int64
	var mu sync.Mutex
	var all []sample
	deadline := time.Now().Add(d)
	g, ctx := errgroup.WithContext(ctx)
	for w := range writers {
		kv := pb.NewKVClient(conns[w%len(conns)])
		g.Go(func() error {
			rnd := rand.New(rand.NewPCG(uint64(w), 2))
			v := make([]byte, c.value)
			var lat []sample
			defer func() { mu.Lock(); all = append(all, lat...); mu.Unlock() }()
			for i := w; ; i += writers {
				if i >= c.objects {
					i = w
				}
				if d > 0 && time.Now().After(deadline) {
					return nil
				}
				if stop != nil {
					select {
					case <-stop:
						return nil
					default:
					}
				}
				fill(rnd, v)
				k := objectKey(i)
				t := time.Now()
				resp, err := kv.Txn(ctx, &pb.TxnRequest{
					Compare: []*pb.Compare{{Key: k, Target: pb.Compare_MOD, Result: pb.Compare_EQUAL,
						TargetUnion: &pb.Compare_ModRevision{ModRevision: mods[i]}}},
					Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: k, Value: v}}}},
					Failure: []*pb.RequestOp{{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: k}}}},
				})
				if err != nil {
					return err
				}
				lat = append(lat, sample{t, time.Since(t)})
				if resp.Succeeded {
					mods[i] = resp.Header.Revision
					ops.Add(1)
				} else if kvs := resp.Responses[0].GetResponseRange().GetKvs(); len(kvs) == 1 {
					mods[i] = kvs[0].ModRevision
				}
			}
		})
	}
	err := g.Wait()
	return ops.Load(), all, err
}

// compactUnderLoad runs c.compactWriters CAS writers, then compacts to
// the current revision while they run, and records the write p99 before
// and during Compact.
func compactUnderLoad(ctx context.Context, c config, conns []*grpc.ClientConn, kv pb.KVClient, r *result) error {
	mods, err := modRevisions(ctx, kv, c.objects)
	if err != nil {
		return err
	}
	stop := make(chan struct{})
	type out struct {
		lat []sample
		err error
	}
	done := make(chan out, 1)
	go func() {
		_, lat, err := casLoad(ctx, c, conns, mods, c.compactWriters, 0, stop)
		done <- out{lat, err}
	}()
	time.Sleep(c.compactBefore)
	head, err := kv.Range(ctx, &pb.RangeRequest{Key: []byte("ready")})
	if err != nil {
		close(stop)
		<-done
		return err
	}
	rev := head.Header.Revision
	t0 := time.Now()
	_, err = kv.Compact(ctx, &pb.CompactionRequest{Revision: rev, Physical: true})
	t1 := time.Now()
	time.Sleep(time.Second)
	close(stop)
	o := <-done
	if err != nil {
		return err
	}
	if o.err != nil {
		return o.err
	}
	r.compactSecs = t1.Sub(t0).Seconds()
	r.compactRevs = rev
	var before, during []sample
	for _, s := range o.lat {
		switch {
		case s.at.Before(t0) && s.at.After(t0.Add(-c.compactBefore+time.Second)):
			before = append(before, s) // the first second warms up
		case !s.at.Before(t0) && s.at.Before(t1):
			during = append(during, s)
		}
	}
	r.beforeP99, r.compactP99 = p99(before), p99(during)
	logf("compact: %d writes in the window before, %d during", len(before), len(during))
	return nil
}

// watchLatency opens c.watchers watchers on /lat/, puts c.watchEvents
// values there at c.watchRate per second, and returns the put (sent) ->
// event p50 and p99 over every watcher, in ms.
func watchLatency(ctx context.Context, c config, conns []*grpc.ClientConn, kv pb.KVClient) (float64, float64, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	const wp = "/lat/"
	var mu sync.Mutex
	arrived := map[int64][]time.Time{}
	total := 0
	want := c.watchers * c.watchEvents
	allIn := make(chan struct{})
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(64)
	for s := range c.watchStreams {
		n := c.watchers / c.watchStreams
		if s < c.watchers%c.watchStreams {
			n++
		}
		g.Go(func() error {
			w, err := pb.NewWatchClient(conns[s%len(conns)]).Watch(ctx)
			if err != nil {
				return err
			}
			for range n {
				if err := w.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: &pb.WatchCreateRequest{
					Key: []byte(wp), RangeEnd: []byte(prefixEnd(wp))}}}); err != nil {
					return err
				}
			}
			for range n {
				resp, err := w.Recv()
				if err != nil {
					return err
				}
				if !resp.Created || resp.Canceled {
					return fmt.Errorf("watch create: %v", resp)
				}
			}
			go func() {
				for {
					resp, err := w.Recv()
					if err != nil {
						return
					}
					now := time.Now()
					mu.Lock()
					for _, ev := range resp.Events {
						arrived[ev.Kv.ModRevision] = append(arrived[ev.Kv.ModRevision], now)
					}
					total += len(resp.Events)
					if total == want {
						close(allIn)
					}
					mu.Unlock()
				}
			}()
			return gctx.Err()
		})
	}
	if err := g.Wait(); err != nil {
		return 0, 0, err
	}
	sent := map[int64]time.Time{}
	tick := time.NewTicker(time.Duration(float64(time.Second) / c.watchRate))
	defer tick.Stop()
	rnd := rand.New(rand.NewPCG(3, 3))
	v := make([]byte, c.watchValue)
	for i := range c.watchEvents {
		<-tick.C
		fill(rnd, v)
		at := time.Now()
		resp, err := kv.Put(ctx, &pb.PutRequest{Key: fmt.Appendf(nil, "%s%d", wp, i%16), Value: v})
		if err != nil {
			return 0, 0, err
		}
		sent[resp.Header.Revision] = at
	}
	select {
	case <-allIn:
	case <-time.After(2 * time.Minute):
		mu.Lock()
		defer mu.Unlock()
		return 0, 0, fmt.Errorf("%d of %d events arrived within 2 minutes", total, want)
	}
	mu.Lock()
	defer mu.Unlock()
	var lat []float64
	for rev, at := range sent {
		if len(arrived[rev]) != c.watchers {
			return 0, 0, fmt.Errorf("revision %d reached %d of %d watchers", rev, len(arrived[rev]), c.watchers)
		}
		for _, t := range arrived[rev] {
			lat = append(lat, float64(t.Sub(at).Microseconds())/1000)
		}
	}
	slices.Sort(lat)
	return quantile(lat, 0.5), quantile(lat, 0.99), nil
}

func quantile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return -1
	}
	return sorted[min(int(q*float64(len(sorted))), len(sorted)-1)]
}

func p99(s []sample) float64 {
	ms := make([]float64, len(s))
	for i, x := range s {
		ms[i] = float64(x.lat.Microseconds()) / 1000
	}
	slices.Sort(ms)
	return quantile(ms, 0.99)
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return quantile(s, 0.5)
}

func mb(b int64) float64 { return float64(b) / (1 << 20) }

// procStatus returns a /proc/PID/status field (VmRSS, VmHWM) in bytes.
func procStatus(pid int, field string) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return -1
}

// printTable writes the results as a markdown table, every kvsql number
// followed by its ratio to etcd's.
func printTable(w *os.File, c config, results []*result) {
	var etcd *result
	for _, r := range results {
		if r.target == "etcd" && r.err == nil {
			etcd = r
		}
	}
	type row struct {
		name   string
		get    func(*result) float64
		format string
	}
	rows := []row{
		{"create load (keys/s)", func(r *result) float64 { return r.createPerSec }, "%.0f"},
		{fmt.Sprintf("update CAS churn, %d writers (updates/s)", c.writers), func(r *result) float64 { return r.casPerSec }, "%.0f"},
		{"CAS churn p99 (ms)", func(r *result) float64 { return r.casP99 }, "%.1f"},
		{fmt.Sprintf("%d watchers, %d puts of %d B at %.0f/s: put -> event p99 (ms)", c.watchers, c.watchEvents, c.watchValue, c.watchRate), func(r *result) float64 { return r.watchP99 }, "%.1f"},
		{fmt.Sprintf("write p99 during Compact (ms; %d writers)", c.compactWriters), func(r *result) float64 { return r.compactP99 }, "%.1f"},
		{"write p99 before Compact (ms)", func(r *result) float64 { return r.beforeP99 }, "%.1f"},
		{"Compact duration (s)", func(r *result) float64 { return r.compactSecs }, "%.2f"},
		{"revisions compacted (the revision Compact was given)", func(r *result) float64 { return float64(r.compactRevs) }, "%.0f"},
		{fmt.Sprintf("paginated list of all objects, %d per page (s)", c.page), func(r *result) float64 { return r.listSecs }, "%.2f"},
		{"one unpaginated Range of all objects (s)", func(r *result) float64 { return r.rangeSecs }, "%.2f"},
		{"count-only Range of all objects (ms)", func(r *result) float64 { return r.countMS }, "%.1f"},
		{"on-disk size after the load (MB)", func(r *result) float64 { return r.diskMB }, "%.0f"},
		{"Status dbSize / in use after the load (MB)", func(r *result) float64 { return r.statusMB }, "%.0f"},
		{"server RSS after a full unpaginated list (MB)", func(r *result) float64 { return r.rssMB }, "%.0f"},
		{"server peak RSS (MB)", func(r *result) float64 { return r.peakMB }, "%.0f"},
	}
	fmt.Fprintf(w, "\n%d objects of %d B; ratio = kvsql ÷ etcd (times: lower is better, rates: higher is better)\n\n", c.objects, c.value)
	fmt.Fprint(w, "| at ", c.objects, " objects |")
	for _, r := range results {
		fmt.Fprintf(w, " %s |", r.target)
	}
	fmt.Fprint(w, "\n|---|")
	for range results {
		fmt.Fprint(w, "--:|")
	}
	fmt.Fprintln(w)
	for _, rw := range rows {
		fmt.Fprintf(w, "| %s |", rw.name)
		for _, r := range results {
			v := rw.get(r)
			switch {
			case r.err != nil:
				fmt.Fprint(w, " failed |")
				continue
			case v <= 0:
				fmt.Fprint(w, " - |")
				continue
			}
			cell := fmt.Sprintf(rw.format, v)
			if strings.HasPrefix(rw.name, "Status") {
				cell += fmt.Sprintf(" / %.0f", r.inUseMB)
			}
			if etcd != nil && r != etcd && rw.get(etcd) > 0 {
				cell += fmt.Sprintf(" (%.2f×)", v/rw.get(etcd))
			}
			fmt.Fprintf(w, " %s |", cell)
		}
		fmt.Fprintln(w)
	}
	for _, r := range results {
		if r.err != nil {
			fmt.Fprintf(w, "\n%s failed: %v\n", r.target, r.err)
		}
		for _, f := range r.failures {
			fmt.Fprintf(w, "\n%s: %s\n", r.target, f)
		}
	}
}
