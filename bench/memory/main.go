// Command memory measures what large and many requests cost a kvsql
// process in memory. It starts the kvsql binary on a fresh database
// (embedded SQLite, or a throwaway PostgreSQL cluster started from the
// machine's binaries) and runs one case:
//
//   - list (default): loads -keys values of -value bytes, then, for each of
//     Range and RangeStream, restarts kvsql on the same data, reads the
//     whole prefix once and reports the process's resident set size (VmRSS)
//     before, its peak (VmHWM) and its size at a few moments after, and its
//     live heap after a garbage collection;
//
//   - watchers: opens -watchers watches on one prefix over -streams watch
//     streams (on -conns connections), reports the live memory each costs
//     (heap and goroutine stacks, after a collection, from the process's
//     /debug/pprof/heap), then writes -events puts at -rate per second and
//     reports put -> event latency over every watcher;
//
//   - streams: opens -streams watch streams (one watch each) and as many
//     lease keep-alive streams, reports the memory each costs, and times a
//     put and a get of another client while they are open.
//
// For example:
//
//	CGO_ENABLED=0 go build -o /tmp/kvsql ./cmd/kvsql
//	go run ./bench/memory -kvsql /tmp/kvsql -backend sqlite -keys 200000 -value 2048
//	go run ./bench/memory -kvsql /tmp/kvsql -case watchers -watchers 10000 -streams 10
//	go run ./bench/memory -kvsql /tmp/kvsql -case streams -streams 10000
//
// The numbers in docs/benchmarks.md ("Memory under large and many
// requests") come from it.
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/kvsql/kvsql/internal/testdb"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "memory:", err)
		os.Exit(1)
	}
}

func run() error {
	bin := flag.String("kvsql", "", "the kvsql binary to measure (required; build it without -race); list: a comma-separated list compares binaries on the same data, alternating")
	rounds := flag.Int("rounds", 1, "list: how many times to run each read with each binary")
	which := flag.String("case", "list", "list, watchers or streams")
	watchers := flag.Int("watchers", 10000, "watchers: how many watches")
	streams := flag.Int("streams", 10, "watchers: watch streams to spread them over; streams: how many streams of each kind")
	conns := flag.Int("conns", 4, "watchers, streams: client connections to spread the streams over")
	events := flag.Int("events", 100, "watchers: how many puts to time")
	rate := flag.Float64("rate", 20, "watchers: puts per second")
	backend := flag.String("backend", "sqlite", "sqlite, postgres (a throwaway cluster from the machine's PostgreSQL binaries), or etcd (-kvsql then names an etcd binary, to compare)")
	keys := flag.Int("keys", 200000, "how many keys to load")
	valueSize := flag.Int("value", 2048, "bytes per value (random, so incompressible)")
	reads := flag.String("reads", "range,rangestream", "comma-separated reads to measure, in order: range, rangestream")
	after := flag.String("after", "0s,5s,30s", "comma-separated delays after each read at which to sample RSS")
	extra := flag.String("args", "", "extra kvsql flags, space-separated")
	flag.Parse()
	if *bin == "" {
		return errors.New("-kvsql is required")
	}
	var delays []time.Duration
	for _, s := range strings.Split(*after, ",") {
		d, err := time.ParseDuration(strings.TrimSpace(s))
		if err != nil {
			return fmt.Errorf("-after: %w", err)
		}
		delays = append(delays, d)
	}

	dir, err := os.MkdirTemp("", "kvsql-memory-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	addr, metrics := freeAddr(), freeAddr()
	args := []string{"--listen-client-urls=http://" + addr, "--data-dir=" + filepath.Join(dir, "data"),
		"--listen-metrics-urls=http://" + metrics, "--enable-pprof", "--log-level=warn"}
	bins := strings.Split(*bin, ",")
	switch *backend {
	case "sqlite":
	case "etcd":
		// The same case on etcd, for comparison: -kvsql names etcd's
		// binary; its pprof handlers are on its client URL.
		peer := freeAddr()
		metrics = addr
		args = []string{"--name=bench", "--data-dir=" + filepath.Join(dir, "etcd"),
			"--listen-client-urls=http://" + addr, "--advertise-client-urls=http://" + addr,
			"--listen-peer-urls=http://" + peer, "--initial-advertise-peer-urls=http://" + peer,
			"--initial-cluster=bench=http://" + peer, "--enable-pprof", "--log-level=warn"}
	case "postgres":
		pg, err := testdb.NewPostgres()
		if err != nil {
			return err
		}
		defer pg.Destroy()
		args = append(args, "--endpoint="+pg.URL("postgres"))
	default:
		return fmt.Errorf("-backend %q: want sqlite, postgres or etcd", *backend)
	}
	if *extra != "" {
		args = append(args, strings.Fields(*extra)...)
	}
	var cmd *exec.Cmd
	stop := func() {
		if cmd != nil {
			_ = cmd.Process.Signal(os.Interrupt)
			_ = cmd.Wait()
			cmd = nil
		}
	}
	defer stop()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(1<<31-1)))
	if err != nil {
		return err
	}
	defer conn.Close()
	kv := pb.NewKVClient(conn)
	ctx := context.Background()
	// restart (re)starts the server and waits until it answers.
	current := bins[0]
	restart := func() (int, error) {
		stop()
		cmd = exec.Command(current, args...)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Start(); err != nil {
			return 0, err
		}
		return cmd.Process.Pid, waitReady(ctx, kv)
	}
	pid, err := restart()
	if err != nil {
		return err
	}
	switch *which {
	case "list":
	case "watchers":
		return fanOut(ctx, addr, metrics, kv, *watchers, *streams, *conns, *events, *rate)
	case "streams":
		return manyStreams(ctx, addr, metrics, kv, *streams, *conns)
	default:
		return fmt.Errorf("-case %q: want list, watchers or streams", *which)
	}

	start := time.Now()
	if err := load(ctx, kv, *keys, *valueSize); err != nil {
		return err
	}
	fmt.Printf("backend %s: loaded %d keys x %d B in %.1fs\n", *backend, *keys, *valueSize, time.Since(start).Seconds())
	heap, err := liveHeap(metrics)
	if err != nil {
		return err
	}
	fmt.Printf("after load: RSS %s, live heap %s\n", mb(rss(pid, "VmRSS")), mb(heap))

	for round := range *rounds {
		for _, b := range bins {
			current = b
			if err := readOnce(ctx, restart, metrics, kv, *reads, delays, fmt.Sprintf("round %d, %s: ", round+1, filepath.Base(b))); err != nil {
				return err
			}
		}
	}
	return nil
}

// readOnce runs each of reads (comma-separated) once on a freshly started
// kvsql and prints what it measured, each line prefixed with label.
func readOnce(ctx context.Context, restart func() (int, error), metrics string, kv pb.KVClient, reads string, delays []time.Duration, label string) error {
	for _, read := range strings.Split(reads, ",") {
		pid, err := restart()
		if err != nil {
			return err
		}
		before := rss(pid, "VmRSS")
		start := time.Now()
		n, bytes, err := readAll(ctx, kv, read)
		if err != nil {
			return fmt.Errorf("%s: %w", read, err)
		}
		took := time.Since(start)
		peak := rss(pid, "VmHWM")
		done := time.Now()
		var samples []string
		for _, d := range delays {
			time.Sleep(time.Until(done.Add(d)))
			samples = append(samples, fmt.Sprintf("+%v %s", d, mb(rss(pid, "VmRSS"))))
		}
		heap, err := liveHeap(metrics)
		if err != nil {
			return err
		}
		fmt.Printf("%s%s: %d keys, %s of kvs in %.1fs; RSS before %s, peak %s, after: %s; live heap after GC %s\n",
			label, read, n, mb(bytes), took.Seconds(), mb(before), mb(peak), strings.Join(samples, ", "), mb(heap))
	}
	return nil
}

func freeAddr() string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func waitReady(ctx context.Context, kv pb.KVClient) error {
	deadline := time.Now().Add(time.Minute)
	for {
		_, err := kv.Range(ctx, &pb.RangeRequest{Key: []byte("ready")})
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("kvsql did not answer: %w", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// load writes n keys /mem/%08d over 8 writers, in txns of up to 100 puts
// and 1 MiB.
func load(ctx context.Context, kv pb.KVClient, n, size int) error {
	const writers = 8
	perTxn := min(max((1<<20)/size, 1), 100)
	g, ctx := errgroup.WithContext(ctx)
	next := make(chan int)
	g.Go(func() error {
		defer close(next)
		for i := 0; i < n; i += perTxn {
			select {
			case next <- i:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	})
	for range writers {
		g.Go(func() error {
			for first := range next {
				var ops []*pb.RequestOp
				for i := first; i < min(first+perTxn, n); i++ {
					v := make([]byte, size)
					_, _ = rand.Read(v)
					ops = append(ops, &pb.RequestOp{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{
						Key: fmt.Appendf(nil, "/mem/%08d", i), Value: v}}})
				}
				if _, err := kv.Txn(ctx, &pb.TxnRequest{Success: ops}); err != nil {
					return err
				}
			}
			return nil
		})
	}
	return g.Wait()
}

// readAll reads every key under /mem/ with read (range or rangestream) and
// returns how many keys and bytes of keys and values it got.
func readAll(ctx context.Context, kv pb.KVClient, read string) (int, int64, error) {
	req := &pb.RangeRequest{Key: []byte("/mem/"), RangeEnd: []byte("/mem0")}
	var n int
	var size int64
	count := func(r *pb.RangeResponse) {
		for _, kv := range r.Kvs {
			n++
			size += int64(len(kv.Key) + len(kv.Value))
		}
	}
	switch read {
	case "range":
		resp, err := kv.Range(ctx, req)
		if err != nil {
			return 0, 0, err
		}
		count(resp)
	case "rangestream":
		s, err := kv.RangeStream(ctx, req)
		if err != nil {
			return 0, 0, err
		}
		for {
			resp, err := s.Recv()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return 0, 0, err
			}
			count(resp.RangeResponse)
		}
	default:
		return 0, 0, fmt.Errorf("unknown read %q: want range or rangestream", read)
	}
	return n, size, nil
}

// rss returns a /proc/PID/status field (VmRSS, VmHWM) in bytes.
func rss(pid int, field string) int64 {
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

// liveHeap returns the process's HeapAlloc right after a GC, from the
// text heap profile (which runs one with gc=1).
func liveHeap(metrics string) (int64, error) {
	heap, _, err := liveMemory(metrics)
	return heap, err
}

// liveMemory returns the process's HeapAlloc and StackInuse right after
// two collections (a sync.Pool keeps its objects through one).
func liveMemory(metrics string) (heap, stack int64, err error) {
	for range 2 {
		resp, err := http.Get("http://" + metrics + "/debug/pprof/heap?debug=1&gc=1")
		if err != nil {
			return 0, 0, err
		}
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 16<<20)
		heap, stack = -1, -1
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "# HeapAlloc = "); ok {
				heap, _ = strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			}
			if v, ok := strings.CutPrefix(sc.Text(), "# Stack = "); ok {
				stack, _ = strconv.ParseInt(strings.TrimSpace(strings.Split(v, "/")[0]), 10, 64)
			}
		}
		resp.Body.Close()
		if heap < 0 || stack < 0 {
			return 0, 0, errors.New("no HeapAlloc or Stack in the heap profile")
		}
	}
	return heap, stack, nil
}

func mb(b int64) string { return fmt.Sprintf("%d MB", b>>20) }
