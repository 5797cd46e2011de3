package integration

// Slow and hostile clients (issue 12: "slow or hostile clients cannot take
// the server's memory"): a watcher that never reads, many watchers on one
// prefix, many streams, a huge Range. Each test runs the kvsql binary as a
// process (see process_test.go) with --enable-pprof, so that the server's
// own live memory can be read after a garbage collection, apart from the test
// process's clients. The bounds asserted are generous (a regression that
// buffers per event or per byte written breaks them by a wide margin); the
// measured numbers are logged, and docs/benchmarks.md records them.

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/kvsql/kvsql/kvserver"
)

// memProc is a kvsql process whose heap and metrics the test reads.
type memProc struct {
	*kvsqlProc
	metrics string // host:port of --listen-metrics-urls
}

// startMemProc starts kvsql with metrics and pprof on a free port.
func startMemProc(t testing.TB, args ...string) memProc {
	t.Helper()
	m := procFreeAddr(t)
	p := startKVSQLProc(t, append([]string{"--listen-metrics-urls=http://" + m, "--enable-pprof", "--log-level=info"}, args...)...)
	return memProc{kvsqlProc: p, metrics: m}
}

// get fetches a path from the metrics listener.
func (p memProc) get(t testing.TB, path string) string {
	t.Helper()
	resp, err := http.Get("http://" + p.metrics + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %v", path, resp.StatusCode, err)
	}
	return string(b)
}

// live returns the memory the process's live data takes right after a
// garbage collection: the heap in use (HeapAlloc) and goroutine stacks
// (StackInuse). Two collections run first: objects parked in a sync.Pool
// survive one.
func (p memProc) live(t testing.TB) int64 {
	t.Helper()
	p.get(t, "/debug/pprof/heap?debug=1&gc=1")
	sc := bufio.NewScanner(strings.NewReader(p.get(t, "/debug/pprof/heap?debug=1&gc=1")))
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	var heap, stack int64 = -1, -1
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "# HeapAlloc = "); ok {
			heap = parseInt(t, v)
		}
		if v, ok := strings.CutPrefix(sc.Text(), "# Stack = "); ok {
			stack = parseInt(t, strings.Split(v, "/")[0])
		}
	}
	if heap < 0 || stack < 0 {
		t.Fatal("no HeapAlloc or Stack in the heap profile")
	}
	return heap + stack
}

func parseInt(t testing.TB, s string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// metric returns the value of an unlabelled metric from /metrics.
func (p memProc) metric(t testing.TB, name string) float64 {
	t.Helper()
	for _, line := range strings.Split(p.get(t, "/metrics"), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// waitMetric waits until metric name equals want.
func (p memProc) waitMetric(t testing.TB, name string, want float64, timeout time.Duration) {
	t.Helper()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(timeout)
	for {
		got := p.metric(t, name)
		if got == want {
			return
		}
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("%s is %v after %v, want %v", name, got, timeout, want)
		}
	}
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// rawConnWindowed dials a plain gRPC connection (no clientv3) to addr. Fixed flow
// control windows turn off gRPC's window growth, so that a stream the test
// does not read holds a known, small amount on the client side.
func rawConnWindowed(t testing.TB, addr string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(1<<20),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(1<<31-1)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// createWatch sends a create request on a raw stream.
func createWatch(t testing.TB, s pb.Watch_WatchClient, c *pb.WatchCreateRequest) {
	t.Helper()
	if err := s.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: c}}); err != nil {
		t.Fatal(err)
	}
}

// revLog records, for a set of watches, each event's revision and when it
// arrived, and checks that each watch sees revisions in order, once.
type revLog struct {
	mu      sync.Mutex // guards the fields below
	next    map[int64]int64
	seen    int // events received, over every watch
	arrived map[int64][]time.Time
	err     error
	changed chan struct{} // closed and replaced on every change
}

func newRevLog() *revLog {
	return &revLog{next: map[int64]int64{}, arrived: map[int64][]time.Time{}, changed: make(chan struct{})}
}

func (l *revLog) add(watchID int64, evs []*mvccpb.Event) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, ev := range evs {
		rev := ev.Kv.ModRevision
		if rev <= l.next[watchID] && l.err == nil {
			l.err = fmt.Errorf("watch %d: revision %d after %d (out of order or twice)", watchID, rev, l.next[watchID])
		}
		l.next[watchID] = rev
		l.arrived[rev] = append(l.arrived[rev], now)
		l.seen++
	}
	close(l.changed)
	l.changed = make(chan struct{})
}

func (l *revLog) fail(err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err == nil {
		l.err = err
	}
	close(l.changed)
	l.changed = make(chan struct{})
}

// wait waits until n events in all have arrived.
func (l *revLog) wait(t testing.TB, ctx context.Context, n int) {
	t.Helper()
	for {
		l.mu.Lock()
		seen, err, ch := l.seen, l.err, l.changed
		l.mu.Unlock()
		if err != nil {
			t.Fatal(err)
		}
		if seen >= n {
			return
		}
		select {
		case <-ch:
		case <-ctx.Done():
			t.Fatalf("%d of %d events arrived", seen, n)
		}
	}
}

// check verifies that every watch got exactly the revisions in acked, and
// returns the put -> event latencies.
func (l *revLog) check(t testing.TB, watches int, acked map[int64]time.Time) []time.Duration {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.err != nil {
		t.Fatal(l.err)
	}
	var lat []time.Duration
	for rev, at := range acked {
		got := l.arrived[rev]
		if len(got) != watches {
			t.Fatalf("revision %d reached %d of %d watches", rev, len(got), watches)
		}
		for _, a := range got {
			lat = append(lat, max(a.Sub(at), 0))
		}
	}
	if len(l.arrived) != len(acked) {
		t.Fatalf("watches saw %d revisions, %d were written", len(l.arrived), len(acked))
	}
	slices.Sort(lat)
	return lat
}

func latencies(lat []time.Duration) string {
	if len(lat) == 0 {
		return "no events"
	}
	q := func(p float64) time.Duration {
		return lat[min(int(p*float64(len(lat))), len(lat)-1)].Round(10 * time.Microsecond)
	}
	return fmt.Sprintf("put -> event p50 %v, p99 %v, max %v over %d events", q(0.5), q(0.99), lat[len(lat)-1].Round(10*time.Microsecond), len(lat))
}

// readRaw reads a raw watch stream into l until it ends.
func readRaw(s pb.Watch_WatchClient, l *revLog) {
	for {
		resp, err := s.Recv()
		if err != nil {
			if status.Code(err) != codes.Canceled { // the test closed it
				l.fail(err)
			}
			return
		}
		if resp.Canceled {
			l.fail(fmt.Errorf("watch %d canceled: %s", resp.WatchId, resp.CancelReason))
			return
		}
		if len(resp.Events) > 0 {
			l.add(resp.WatchId, resp.Events)
		}
	}
}

// readClientv3 reads a clientv3 watch into l until it ends.
func readClientv3(wch clientv3.WatchChan, id int64, l *revLog) {
	for wr := range wch {
		if err := wr.Err(); err != nil {
			l.fail(err)
			return
		}
		evs := make([]*mvccpb.Event, len(wr.Events))
		for i, ev := range wr.Events {
			evs[i] = (*mvccpb.Event)(ev)
		}
		l.add(id, evs)
	}
}

// putMany writes n puts of size-byte random values to keys prefix%d
// (cycling over keys of them, so that most have a prev_kv) from 8
// writers, and returns when each was acknowledged, by revision.
func putMany(t testing.TB, ctx context.Context, c *clientv3.Client, prefix string, n, keys, size int) map[int64]time.Time {
	t.Helper()
	var mu sync.Mutex // guards acked
	acked := map[int64]time.Time{}
	g, gctx := errgroup.WithContext(ctx)
	next := make(chan int)
	g.Go(func() error {
		defer close(next)
		for i := range n {
			select {
			case next <- i:
			case <-gctx.Done():
				return gctx.Err()
			}
		}
		return nil
	})
	for range 8 {
		g.Go(func() error {
			v := make([]byte, size)
			for i := range next {
				_, _ = rand.Read(v)
				resp, err := c.Put(gctx, fmt.Sprintf("%s%04d", prefix, i%keys), string(v))
				if err != nil {
					return err
				}
				now := time.Now()
				mu.Lock()
				acked[resp.Header.Revision] = now
				mu.Unlock()
			}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	return acked
}

// TestHostileStuckWatcher: a client opens a watch stream with watches on a
// busy prefix and then never reads it. The server's memory does not grow
// with the events written meanwhile (gRPC flow control blocks that
// stream's Send with one response in hand; nothing else is kept per event
// for it: the hub's window is shared and bounded, and the stuck watcher
// reads the log when it reads again), every other watcher — on another
// connection, on another stream of the stuck client's own connection, and
// on another instance — receives every event, and the stuck stream is
// released as soon as the client goes away. As etcd: a slow watcher is
// never cancelled for being slow.
func TestHostileStuckWatcher(t *testing.T) {
	t.Parallel()
	const (
		valueSize = 256 << 10 // with prev_kv an event carries 512 KiB
		perPhase  = 192       // 48 MiB of values per phase: with prev_kv, more than the hub's window holds
		keys      = 16
	)
	for _, b := range []string{"sqlite", "postgres"} {
		t.Run(b, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			var args []string
			if b == "postgres" {
				args = append(args, "--endpoint="+freshPostgresURL(t))
			}
			a := startMemProc(t, args...)
			ca := a.client(t)
			log := newRevLog()
			watches := 0
			// A clientv3 watcher on the same instance.
			wctx, wcancel := context.WithCancel(ctx)
			defer wcancel()
			go readClientv3(ca.Watch(wctx, "busy/", clientv3.WithPrefix()), 1000, log)
			watches++
			healthyGauge := 1.0
			if b == "postgres" {
				// ... and one on a second instance on the same database.
				bp := startMemProc(t, args...)
				go readClientv3(bp.client(t).Watch(wctx, "busy/", clientv3.WithPrefix()), 2000, log)
				watches++
			}

			// The stuck client: one stream it reads (on the same connection)
			// and one it stops reading after the watches are created.
			conn := rawConnWindowed(t, a.Addr)
			healthy, err := pb.NewWatchClient(conn).Watch(wctx)
			if err != nil {
				t.Fatal(err)
			}
			createWatch(t, healthy, &pb.WatchCreateRequest{Key: []byte("busy/"), RangeEnd: []byte("busy0"), WatchId: 3000})
			go readRaw(healthy, log)
			watches++
			stuck, err := pb.NewWatchClient(conn).Watch(wctx)
			if err != nil {
				t.Fatal(err)
			}
			for id := range int64(2) {
				createWatch(t, stuck, &pb.WatchCreateRequest{Key: []byte("busy/"), RangeEnd: []byte("busy0"), PrevKv: true, WatchId: 10 + id})
				if resp, err := stuck.Recv(); err != nil || !resp.Created {
					t.Fatalf("create: %v %v", resp, err)
				}
			}
			// From here on the stuck stream is never read.
			a.waitMetric(t, "etcd_debugging_mvcc_watcher_total", healthyGauge+3, 30*time.Second)

			h0 := a.live(t)
			acked := putMany(t, ctx, ca, "busy/", perPhase, keys, valueSize)
			log.wait(t, ctx, watches*len(acked))
			h1 := a.live(t)
			for rev, at := range putMany(t, ctx, ca, "busy/", perPhase, keys, valueSize) {
				acked[rev] = at
			}
			log.wait(t, ctx, watches*len(acked))
			h2 := a.live(t)
			lat := log.check(t, watches, acked)

			// The client goes away: its streams end on the server.
			_ = conn.Close()
			a.waitMetric(t, "etcd_debugging_mvcc_watcher_total", healthyGauge, 30*time.Second)
			h3 := a.live(t)
			t.Logf("%s: live memory with a stuck watcher: %s before the writes, %s after %d MiB of values (%d puts), %s after %d MiB; %s once the client closed; other watchers: %s",
				b, mib(h0), mib(h1), perPhase*valueSize>>20, perPhase, mib(h2), 2*perPhase*valueSize>>20, mib(h3), latencies(lat))
			// A watcher that buffered the events written while it was stuck
			// would hold at least the second phase's 48 MiB of values, twice
			// with prev_kv; the window and the stuck stream's response are
			// already full at h1.
			if grew := h2 - h1; grew > 40<<20 {
				t.Fatalf("live memory grew by %s while %d MiB of events were written to a watcher that does not read", mib(grew), perPhase*valueSize>>19)
			}
		})
	}
}

// TestWatchResponsesAreBoundedInBytes: a watcher far behind gets its
// backlog in responses of about MaxRequestBytes (whole revisions), not in
// one response of up to 1000 events: with large values such a response
// would be what a slow watcher's stream holds while gRPC waits for the
// client.
func TestWatchResponsesAreBoundedInBytes(t *testing.T) {
	t.Parallel()
	const valueSize, revs = 256 << 10, 40
	s := startSQLite(t, serverOptions{})
	c := newClient(t, s)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	first, err := c.Put(ctx, "big/0", "")
	if err != nil {
		t.Fatal(err)
	}
	v := make([]byte, valueSize)
	var last int64
	for i := range revs {
		_, _ = rand.Read(v)
		resp, err := c.Txn(ctx).Then(clientv3.OpPut("big/0", string(v)), clientv3.OpPut(fmt.Sprintf("big/%d", i+1), string(v))).Commit()
		if err != nil {
			t.Fatal(err)
		}
		last = resp.Header.Revision
	}
	conn := rawConnWindowed(t, strings.TrimPrefix(s.Endpoint, "http://"))
	w, err := pb.NewWatchClient(conn).Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	createWatch(t, w, &pb.WatchCreateRequest{Key: []byte("big/"), RangeEnd: []byte("big0"), PrevKv: true, StartRevision: first.Header.Revision + 1})
	limit := kvserver.DefaultMaxRequestBytes
	revision := 2*valueSize + 2*valueSize // two puts, one with a prev_kv, and slack
	var responses, largest int
	for got := int64(0); got < last; {
		resp, err := w.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Events) == 0 {
			continue
		}
		size := 0
		for _, ev := range resp.Events {
			size += len(ev.Kv.Value)
			if ev.PrevKv != nil {
				size += len(ev.PrevKv.Value)
			}
			if ev.Kv.ModRevision <= got {
				t.Fatalf("revision %d after %d", ev.Kv.ModRevision, got)
			}
		}
		got = resp.Events[len(resp.Events)-1].Kv.ModRevision
		responses++
		largest = max(largest, size)
		if size > limit+revision {
			t.Fatalf("a response carries %s of values in %d events; want at most MaxRequestBytes (%s) and one revision", mib(int64(size)), len(resp.Events), mib(int64(limit)))
		}
	}
	t.Logf("%d revisions of %s each in %d responses, the largest %s", revs, mib(2*valueSize), responses, mib(int64(largest)))
}

// heapHeld returns the Go heap memory the process holds in physical pages
// (HeapSys - HeapReleased: in use, garbage not yet collected, and free
// pages not yet returned to the system), from its /metrics.
func (p memProc) heapHeld(t testing.TB) int64 {
	t.Helper()
	return int64(p.metric(t, "go_memstats_heap_sys_bytes") - p.metric(t, "go_memstats_heap_released_bytes"))
}

// procStatus returns a /proc/PID/status field (VmRSS, VmHWM) in bytes.
func (p memProc) procStatus(t testing.TB, field string) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no %s in /proc/PID/status", field)
	return 0
}

// TestHostileLargeRange: after a Range or RangeStream of 128 values of
// 1 MiB, the server gives the memory back: within seconds its heap holds
// little more than its live data (without, the response's memory stayed
// with the process, as garbage or free pages, until the collector's next
// cycle, minutes later on an idle server: issue 14 measured 1068 MB of RSS
// after a full list of 200 000 pods). The peak is logged; bench/memory
// measures it without the race detector.
func TestHostileLargeRange(t *testing.T) {
	t.Parallel()
	const values, size = 128, 1 << 20
	for _, b := range []string{"sqlite", "postgres"} {
		t.Run(b, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			var args []string
			if b == "postgres" {
				args = append(args, "--endpoint="+freshPostgresURL(t))
			}
			p := startMemProc(t, args...)
			c := p.client(t) // receives messages up to 2 GiB by default, as etcd's clients
			putMany(t, ctx, c, "large/", values, values, size)
			for _, read := range []string{"Range", "RangeStream"} {
				live := p.live(t)
				before := p.heapHeld(t)
				if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", p.cmd.Process.Pid), []byte("5"), 0); err != nil {
					t.Fatalf("reset the peak RSS: %v", err)
				}
				rssBefore := p.procStatus(t, "VmRSS")
				var n int
				var got int64
				if read == "Range" {
					resp, err := c.Get(ctx, "large/", clientv3.WithPrefix())
					if err != nil {
						t.Fatal(err)
					}
					n = len(resp.Kvs)
					for _, kv := range resp.Kvs {
						got += int64(len(kv.Value))
					}
				} else {
					ch, err := c.GetStream(ctx, "large/", clientv3.WithPrefix())
					if err != nil {
						t.Fatal(err)
					}
					for r := range ch {
						if err := r.Err(); err != nil {
							t.Fatal(err)
						}
						n += len(r.Kvs)
						for _, kv := range r.Kvs {
							got += int64(len(kv.Value))
						}
					}
				}
				if n != values || got != values*size {
					t.Fatalf("%s returned %d values, %d bytes; want %d, %d", read, n, got, values, values*size)
				}
				peak := p.procStatus(t, "VmHWM")
				// The memory goes back within seconds (the wait is for
				// the response to leave the transport, and for the one
				// release a second).
				var held int64
				tick := time.NewTicker(100 * time.Millisecond)
				deadline := time.After(30 * time.Second)
				bound := live + live/4 + 64<<20
				for held = p.heapHeld(t); held > bound; held = p.heapHeld(t) {
					select {
					case <-tick.C:
					case <-deadline:
						t.Fatalf("%s: 30s after a %s response the heap holds %s; its live memory before was %s", read, mib(values*size), mib(held), mib(live))
					}
				}
				tick.Stop()
				t.Logf("%s %s of %s in %d values: live memory %s and heap held %s before, heap held %s after; RSS %s before, peak %s, %s after (race detector on: %v)",
					b, read, mib(values*size), values, mib(live), mib(before), mib(held), mib(rssBefore), mib(peak), mib(p.procStatus(t, "VmRSS")), raceEnabled())
			}
		})
	}
}

// openWatches opens streams raw watch streams over conns (round robin) and
// creates perStream watches on prefix on each, with IDs unique over all of
// them; every event they receive goes to l. It waits for every create.
func openWatches(t testing.TB, ctx context.Context, conns []*grpc.ClientConn, streams, perStream int, prefix string, l *revLog) {
	t.Helper()
	end := []byte(prefixEnd(prefix))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(64)
	for s := range streams {
		g.Go(func() error {
			w, err := pb.NewWatchClient(conns[s%len(conns)]).Watch(ctx)
			if err != nil {
				return err
			}
			for i := range perStream {
				id := int64(s*perStream + i)
				if err := w.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: &pb.WatchCreateRequest{
					Key: []byte(prefix), RangeEnd: end, WatchId: id,
				}}}); err != nil {
					return err
				}
			}
			for range perStream {
				resp, err := w.Recv()
				if err != nil {
					return err
				}
				if !resp.Created || resp.Canceled {
					return fmt.Errorf("create: %v", resp)
				}
			}
			go readRaw(w, l)
			return gctx.Err()
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
}

// TestHostileManyWatchers: 10 000 watchers on one prefix, over a few
// streams (10 of 1000 watches) and over many (1000 of 10, on 10
// connections): every watcher gets every event, in order, once; the
// memory each costs the server is measured and bounded; the put -> event
// latency is logged.
func TestHostileManyWatchers(t *testing.T) {
	t.Parallel()
	const watchers, events = 10000, 10
	for _, shape := range []struct {
		name             string
		conns, perStream int
	}{{"few streams", 1, 1000}, {"many streams", 10, 10}} {
		t.Run(shape.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			p := startMemProc(t)
			c := p.client(t)
			var conns []*grpc.ClientConn
			for range shape.conns {
				conns = append(conns, rawConnWindowed(t, p.Addr))
			}
			before := p.live(t)
			log := newRevLog()
			wctx, wcancel := context.WithCancel(ctx)
			defer wcancel()
			openWatches(t, wctx, conns, watchers/shape.perStream, shape.perStream, "fan/", log)
			p.waitMetric(t, "etcd_debugging_mvcc_watcher_total", watchers, time.Minute)
			open := p.live(t)
			// One put at a time: the latency is that of one event's
			// fan-out to every watcher.
			acked := map[int64]time.Time{}
			for i := range events {
				resp, err := c.Put(ctx, fmt.Sprintf("fan/%d", i%4), "v")
				if err != nil {
					t.Fatal(err)
				}
				acked[resp.Header.Revision] = time.Now()
				log.wait(t, ctx, watchers*(i+1))
			}
			lat := log.check(t, watchers, acked)
			perWatcher := (open - before) / watchers
			t.Logf("%s: %d watchers on %d streams: live memory %s before, %s with them open: %d bytes per watcher; %s",
				shape.name, watchers, watchers/shape.perStream, mib(before), mib(open), perWatcher, latencies(lat))
			for _, conn := range conns {
				_ = conn.Close()
			}
			p.waitMetric(t, "etcd_debugging_mvcc_watcher_total", 0, time.Minute)
			t.Logf("%s: live memory %s once the clients closed", shape.name, mib(p.live(t)))
			// A generous bound: 2 KiB per watch and 64 KiB per stream
			// (measured without the race detector: about 300 bytes and
			// 18 KiB, see docs/benchmarks.md); a per-watcher buffer of
			// events or a goroutine per watch would break it.
			if limit := int64(watchers/shape.perStream)*64<<10/watchers + 2<<10; perWatcher > limit {
				t.Fatalf("each watcher costs the server %d bytes, over %d", perWatcher, limit)
			}
		})
	}
}

// TestHostileManyStreams: a client opens 2000 watch streams and 2000 lease
// keep-alive streams on a few connections (bench/memory -case streams
// opens 10 000 of each). As on etcd, nothing refuses them; each costs the
// server a bounded, measured amount, every stream works (each watch gets
// its event, each keep-alive its answer), another client's requests are
// answered meanwhile, and everything is released when the client goes
// away.
func TestHostileManyStreams(t *testing.T) {
	t.Parallel()
	const streams = 2000
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	p := startMemProc(t)
	other := p.client(t)
	var conns []*grpc.ClientConn
	for range 4 {
		conns = append(conns, rawConnWindowed(t, p.Addr))
	}
	before := p.live(t)
	log := newRevLog()
	wctx, wcancel := context.WithCancel(ctx)
	defer wcancel()
	openWatches(t, wctx, conns, streams, 1, "streams/", log)
	p.waitMetric(t, "etcd_debugging_mvcc_watcher_total", streams, time.Minute)
	watching := p.live(t)

	lease, err := other.Grant(ctx, 600)
	if err != nil {
		t.Fatal(err)
	}
	g, gctx := errgroup.WithContext(wctx)
	g.SetLimit(64)
	var mu sync.Mutex // guards kas
	var kas []pb.Lease_LeaseKeepAliveClient
	for s := range streams {
		g.Go(func() error {
			ka, err := pb.NewLeaseClient(conns[s%len(conns)]).LeaseKeepAlive(wctx)
			if err != nil {
				return err
			}
			if err := ka.Send(&pb.LeaseKeepAliveRequest{ID: int64(lease.ID)}); err != nil {
				return err
			}
			resp, err := ka.Recv()
			if err != nil {
				return err
			}
			if resp.TTL <= 0 {
				return fmt.Errorf("keep-alive answered TTL %d", resp.TTL)
			}
			mu.Lock()
			kas = append(kas, ka)
			mu.Unlock()
			return gctx.Err()
		})
	}
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	all := p.live(t)

	// Another client is served meanwhile, and every stream still works.
	put, err := other.Put(ctx, "streams/x", "v")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := other.Get(ctx, "streams/x"); err != nil || len(got.Kvs) != 1 {
		t.Fatalf("get from another client: %v %v", got, err)
	}
	log.wait(t, ctx, streams)
	log.check(t, streams, map[int64]time.Time{put.Header.Revision: time.Now()})
	for _, ka := range kas[:100] {
		if err := ka.Send(&pb.LeaseKeepAliveRequest{ID: int64(lease.ID)}); err != nil {
			t.Fatal(err)
		}
		if resp, err := ka.Recv(); err != nil || resp.TTL <= 0 {
			t.Fatalf("second keep-alive: %v %v", resp, err)
		}
	}
	perWatch := (watching - before) / streams
	perKeepAlive := (all - watching) / streams
	for _, conn := range conns {
		_ = conn.Close()
	}
	p.waitMetric(t, "etcd_debugging_mvcc_watcher_total", 0, time.Minute)
	t.Logf("%d watch streams: %d bytes each; %d keep-alive streams: %d bytes each (live memory %s before, %s with all open, %s once the client closed)",
		streams, perWatch, streams, perKeepAlive, mib(before), mib(all), mib(p.live(t)))
	// Generous bounds: a stream costs the server its goroutines' stacks
	// and gRPC's state, about 18 KiB without the race detector (see
	// docs/benchmarks.md).
	if perWatch > 96<<10 || perKeepAlive > 96<<10 {
		t.Fatalf("a watch stream costs %d bytes, a keep-alive stream %d: over 96 KiB", perWatch, perKeepAlive)
	}
}

// TestHostileStuckRangeStream: clients open more RangeStreams than the
// database pool has connections and stop reading them. Other clients'
// reads and writes are answered meanwhile (a stream lets its snapshot, and
// its connection, go once its client has not taken a chunk for a moment);
// writes then change, delete and add keys of the range; when the clients
// read again, each gets exactly the range as it was at its stream's
// revision, limited ones with etcd's count and more.
func TestHostileStuckRangeStream(t *testing.T) {
	t.Parallel()
	for _, b := range []struct {
		name  string
		start starter
	}{{"sqlite", startSQLite}, {"postgres", startPostgres}} {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			s := b.start(t, serverOptions{})
			c := newClient(t, s)
			v := strings.Repeat("v", 32<<10) // 200 keys: several chunks
			for i := range 200 {
				if _, err := c.Put(ctx, fmt.Sprintf("rs/%04d", i), v); err != nil {
					t.Fatal(err)
				}
			}
			// More streams than the pools have connections (SQLite 8
			// readers, PostgreSQL max(4, CPUs)).
			n := 2 * max(8, runtime.NumCPU())
			conn := rawConnWindowed(t, strings.TrimPrefix(s.Endpoint, "http://"))
			streams := make([]pb.KV_RangeStreamClient, n)
			reqs := make([]*pb.RangeRequest, n)
			for i := range streams {
				reqs[i] = &pb.RangeRequest{Key: []byte("rs/"), RangeEnd: []byte("rs0")}
				if i%2 == 1 {
					reqs[i].Limit = 150
				}
				st, err := pb.NewKVClient(conn).RangeStream(ctx, reqs[i])
				if err != nil {
					t.Fatal(err)
				}
				streams[i] = st
			}
			// Nobody reads them: another client is served all the same.
			for i := range 50 {
				pctx, pcancel := context.WithTimeout(ctx, time.Minute)
				if _, err := c.Delete(pctx, fmt.Sprintf("rs/%04d", i)); err != nil {
					t.Fatalf("delete while %d RangeStreams are not read: %v", n, err)
				}
				if _, err := c.Put(pctx, fmt.Sprintf("rs/%04d", 50+i), "changed"); err != nil {
					t.Fatal(err)
				}
				if _, err := c.Put(pctx, fmt.Sprintf("rs/%04d", 200+i), "new"); err != nil {
					t.Fatal(err)
				}
				if _, err := c.Get(pctx, "rs/0100"); err != nil {
					t.Fatalf("get while %d RangeStreams are not read: %v", n, err)
				}
				pcancel()
			}
			for i, st := range streams {
				got := &pb.RangeResponse{}
				for {
					m, err := st.Recv()
					if errors.Is(err, io.EOF) {
						break
					}
					if err != nil {
						t.Fatalf("stream %d: %v", i, err)
					}
					rr := m.GetRangeResponse()
					got.Kvs = append(got.Kvs, rr.GetKvs()...)
					if rr.GetHeader() != nil {
						got.Header, got.Count, got.More = rr.Header, rr.Count, rr.More
					}
				}
				if got.Header == nil {
					t.Fatalf("stream %d ended without a header", i)
				}
				want := proto.Clone(reqs[i]).(*pb.RangeRequest)
				want.Revision = got.Header.Revision
				exp, err := pb.NewKVClient(conn).Range(ctx, want)
				if err != nil {
					t.Fatal(err)
				}
				if len(got.Kvs) != len(exp.Kvs) || got.Count != exp.Count || got.More != exp.More {
					t.Fatalf("stream %d at revision %d: %d kvs, count %d, more %v; a Range at that revision: %d, %d, %v",
						i, got.Header.Revision, len(got.Kvs), got.Count, got.More, len(exp.Kvs), exp.Count, exp.More)
				}
				for j := range got.Kvs {
					if !proto.Equal(got.Kvs[j], exp.Kvs[j]) {
						t.Fatalf("stream %d, key-value %d: %q at %d, want %q at %d", i, j, got.Kvs[j].Key, got.Kvs[j].ModRevision, exp.Kvs[j].Key, exp.Kvs[j].ModRevision)
					}
				}
			}
		})
	}
}
