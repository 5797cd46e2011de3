package integration

// Tests that drive the kvsql binary as a process: signals, crash safety,
// --version/--help and flag errors. The binary is built once per test run
// (with -race when the tests run with -race) into toolDir.

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// procStartTimeout bounds how long a kvsql process may take to report that
// it serves (a -race binary on a busy machine is slow to start).
const procStartTimeout = 60 * time.Second

var (
	kvsqlBinOnce sync.Once
	kvsqlBinPath string
	kvsqlBinErr  error
)

// raceEnabled reports whether this test binary was built with -race.
func raceEnabled() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" && s.Value == "true" {
			return true
		}
	}
	return false
}

// goTool returns the go command that runs these tests.
func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "/usr/local/go/bin/go" // where CI installs Go
}

// repoRoot is the module root; tests run in integration/.
func repoRoot(t testing.TB) string {
	t.Helper()
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// kvsqlBinary builds ./cmd/kvsql once per test run and returns its path.
func kvsqlBinary(t testing.TB) string {
	t.Helper()
	root := repoRoot(t)
	kvsqlBinOnce.Do(func() {
		path := filepath.Join(toolDir, "kvsql")
		args := []string{"build", "-buildvcs=false", "-o", path}
		if raceEnabled() {
			args = append(args, "-race")
		}
		cmd := exec.Command(goTool(), append(args, "./cmd/kvsql")...)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			kvsqlBinErr = fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out)
			return
		}
		kvsqlBinPath = path
	})
	if kvsqlBinErr != nil {
		t.Fatal(kvsqlBinErr)
	}
	return kvsqlBinPath
}

// syncBuffer is a bytes.Buffer safe for one writer and concurrent readers.
type syncBuffer struct {
	mu  sync.Mutex // guards b
	b   bytes.Buffer
	put chan struct{} // closed and replaced on every Write
}

func newSyncBuffer() *syncBuffer { return &syncBuffer{put: make(chan struct{})} }

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	close(s.put)
	s.put = make(chan struct{})
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// changed returns a channel closed at the next Write.
func (s *syncBuffer) changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.put
}

// waitFor waits until cond holds for the buffer's contents, the process
// behind it exits (exited closed), or timeout passes; it returns the last
// contents and whether cond held.
func (s *syncBuffer) waitFor(timeout time.Duration, exited <-chan struct{}, cond func(string) bool) (string, bool) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		ch := s.changed()
		if out := s.String(); cond(out) {
			return out, true
		}
		select {
		case <-ch:
		case <-exited:
			out := s.String()
			return out, cond(out)
		case <-deadline.C:
			out := s.String()
			return out, cond(out)
		}
	}
}

// procFreeAddr returns a 127.0.0.1 address with a port that was free just now.
func procFreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// kvsqlProc is a kvsql process under test. restart runs it again on the
// same data dir and address.
type kvsqlProc struct {
	t       testing.TB
	bin     string
	Addr    string // host:port it serves on
	DataDir string
	args    []string // extra flags
	scheme  string   // of the client URL: http or https

	cmd    *exec.Cmd
	log    *syncBuffer   // stdout and stderr of the current run
	exited chan struct{} // closed when the current run has exited
	state  *os.ProcessState
	allLog strings.Builder // logs of earlier runs, for failure reports
}

// startKVSQLProc starts kvsql on a free loopback port with a fresh data dir
// and stops it (SIGKILL if still running) at cleanup.
func startKVSQLProc(t testing.TB, extraArgs ...string) *kvsqlProc {
	t.Helper()
	return startKVSQLProcURL(t, "http", extraArgs...)
}

// startKVSQLProcURL is startKVSQLProc with the client URL's scheme
// (https needs the TLS flags in extraArgs).
func startKVSQLProcURL(t testing.TB, scheme string, extraArgs ...string) *kvsqlProc {
	t.Helper()
	p := &kvsqlProc{t: t, bin: kvsqlBinary(t), DataDir: filepath.Join(t.TempDir(), "data"), args: extraArgs, scheme: scheme}
	t.Cleanup(p.cleanup)
	// The port is free when picked but another process may take it before
	// kvsql binds it; try a few.
	for attempt := 0; ; attempt++ {
		p.Addr = procFreeAddr(t)
		err := p.start()
		if err == nil {
			return p
		}
		if attempt == 3 || !strings.Contains(err.Error(), "address already in use") {
			t.Fatal(err)
		}
	}
}

func (p *kvsqlProc) start() error {
	p.t.Helper()
	args := append([]string{
		"--listen-client-urls=" + p.scheme + "://" + p.Addr,
		"--data-dir=" + p.DataDir,
		"--log-level=debug",
	}, p.args...)
	p.log = newSyncBuffer()
	p.exited = make(chan struct{})
	p.state = nil
	cmd := exec.Command(p.bin, args...)
	cmd.Env = procEnv()
	cmd.Stdout, cmd.Stderr = p.log, p.log
	if err := cmd.Start(); err != nil {
		return err
	}
	p.cmd = cmd
	exited := p.exited
	go func() {
		_ = cmd.Wait()
		p.state = cmd.ProcessState
		close(exited)
	}()
	out, ok := p.log.waitFor(procStartTimeout, exited, func(s string) bool { return strings.Contains(s, `msg="kvsql started"`) })
	if !ok {
		select {
		case <-exited:
			p.retire()
			return fmt.Errorf("kvsql exited before serving: %v\n%s", p.state, out)
		default:
			return fmt.Errorf("kvsql did not start within %v:\n%s", procStartTimeout, out)
		}
	}
	return nil
}

// procEnv is the environment for child processes: no KVSQL_* or ETCDCTL_*
// settings leak in from the caller's shell.
func procEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "KVSQL_") || strings.HasPrefix(kv, "ETCDCTL_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// retire moves the current run's log to allLog.
func (p *kvsqlProc) retire() {
	fmt.Fprintf(&p.allLog, "--- kvsql run (%v) ---\n%s", p.state, p.log.String())
	p.cmd = nil
}

// restart starts kvsql again on the same data dir and address; the
// previous run must have exited.
func (p *kvsqlProc) restart() {
	p.t.Helper()
	if p.cmd != nil {
		p.t.Fatal("restart: kvsql is still running")
	}
	if err := p.start(); err != nil {
		p.t.Fatal(err)
	}
}

func (p *kvsqlProc) signal(sig os.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("signal %v: %v", sig, err)
	}
}

// wait waits up to timeout for the current run to exit and returns its exit
// code and how long it took; it fails the test on timeout.
func (p *kvsqlProc) wait(timeout time.Duration) (int, time.Duration) {
	p.t.Helper()
	start := time.Now()
	select {
	case <-p.exited:
	case <-time.After(timeout):
		p.t.Fatalf("kvsql did not exit within %v", timeout)
	}
	took := time.Since(start)
	code := p.state.ExitCode()
	if ws, ok := p.state.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		code = -int(ws.Signal())
	}
	p.retire()
	return code, took
}

// kill SIGKILLs the current run and waits for it.
func (p *kvsqlProc) kill() {
	p.t.Helper()
	p.signal(syscall.SIGKILL)
	p.wait(10 * time.Second)
}

func (p *kvsqlProc) cleanup() {
	if p.cmd != nil {
		_ = p.cmd.Process.Kill()
		<-p.exited
		p.retire()
	}
	logs := p.allLog.String()
	if strings.Contains(logs, "WARNING: DATA RACE") {
		p.t.Errorf("kvsql reported a data race:\n%s", logs)
	} else if p.t.Failed() {
		p.t.Logf("kvsql logs:\n%s", logs)
	}
}

// client returns a clientv3 client for the process, closed at cleanup.
func (p *kvsqlProc) client(t testing.TB) *clientv3.Client {
	t.Helper()
	return newClient(t, server{Endpoint: "http://" + p.Addr})
}

// TestProcessSIGTERM: SIGTERM stops kvsql promptly with exit code 0 while a
// watch stream, a keep-alive stream and writes are open; the watch stream
// ends with an error; after a restart on the same data dir and port a
// clientv3 watch resumes without a gap or duplicate and every acknowledged
// write is there.
func TestProcessSIGTERM(t *testing.T) {
	t.Parallel()
	p := startKVSQLProc(t)
	c := p.client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	put, err := c.Put(ctx, "sig/0", "v0")
	if err != nil {
		t.Fatal(err)
	}
	startRev := put.Header.Revision

	// A raw watch stream, to see exactly how it ends.
	conn, err := grpc.NewClient(p.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	raw, err := pb.NewWatchClient(conn).Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := raw.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: &pb.WatchCreateRequest{
		Key: []byte("sig/"), RangeEnd: []byte("sig0"), StartRevision: startRev,
	}}}); err != nil {
		t.Fatal(err)
	}
	rawErr := make(chan error, 1)
	go func() {
		for {
			if _, err := raw.Recv(); err != nil {
				rawErr <- err
				return
			}
		}
	}()

	// A clientv3 watch that must survive the restart.
	wch := c.Watch(ctx, "sig/", clientv3.WithPrefix(), clientv3.WithRev(startRev))
	// A lease with an open keep-alive stream.
	lease, err := c.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	ka, err := c.KeepAlive(ctx, lease.ID)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for range ka {
		}
	}()

	// Writers keep writing through the shutdown; acknowledged writes must
	// survive it.
	var (
		mu    sync.Mutex // guards acked
		acked = map[string]int64{}
	)
	stopWriters := make(chan struct{})
	var wg sync.WaitGroup
	someAcked := make(chan struct{})
	var ackOnce sync.Once
	for w := range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stopWriters:
					return
				default:
				}
				key := fmt.Sprintf("sig/w%d/%04d", w, i)
				pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
				r, err := c.Put(pctx, key, key)
				pcancel()
				if err != nil {
					return // kvsql is going away
				}
				mu.Lock()
				acked[key] = r.Header.Revision
				if len(acked) >= 30 {
					ackOnce.Do(func() { close(someAcked) })
				}
				mu.Unlock()
			}
		}()
	}
	select {
	case <-someAcked:
	case <-ctx.Done():
		t.Fatal("writers made no progress")
	}

	p.signal(syscall.SIGTERM)
	code, took := p.wait(3 * kvsqlShutdownGrace)
	t.Logf("kvsql exited %d after %v", code, took)
	if code != 0 {
		t.Fatalf("exit code %d, want 0", code)
	}
	if !strings.Contains(p.allLog.String(), `msg="shutting down"`) {
		t.Errorf("kvsql did not log its shutdown")
	}
	select {
	case err := <-rawErr:
		t.Logf("raw watch stream ended with: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the raw watch stream did not end after kvsql exited")
	}
	close(stopWriters)
	wg.Wait()

	p.restart()
	last, err := c.Put(ctx, "sig/after", "restart")
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	for k, rev := range acked {
		if rev > last.Header.Revision {
			t.Fatalf("acknowledged %s at rev %d but the revision after restart is %d", k, rev, last.Header.Revision)
		}
	}
	// The clientv3 watch resumes: every revision from startRev to the new
	// put exactly once, in order.
	events := collectEvents(t, ctx, wch, last.Header.Revision)
	checkContiguous(t, events, startRev, last.Header.Revision)
	got := map[string]int64{}
	for _, ev := range events {
		got[string(ev.Kv.Key)] = ev.Kv.ModRevision
	}
	for k, rev := range acked {
		if got[k] != rev {
			t.Errorf("acknowledged put %s at rev %d; watch saw it at rev %d", k, rev, got[k])
		}
	}
	t.Logf("%d acknowledged writes, %d events", len(acked), len(events))
}

// kvsqlShutdownGrace mirrors cmd/kvsql's shutdownGrace.
const kvsqlShutdownGrace = 5 * time.Second

// collectEvents reads wch until it has an event at revision >= upTo.
func collectEvents(t testing.TB, ctx context.Context, wch clientv3.WatchChan, upTo int64) []*clientv3.Event {
	t.Helper()
	var out []*clientv3.Event
	timeout := time.After(30 * time.Second)
	for len(out) == 0 || out[len(out)-1].Kv.ModRevision < upTo {
		select {
		case wr, ok := <-wch:
			if !ok {
				t.Fatalf("watch channel closed after %d events", len(out))
			}
			if err := wr.Err(); err != nil {
				t.Fatalf("watch: %v", err)
			}
			out = append(out, wr.Events...)
		case <-timeout:
			t.Fatalf("watch: no event at rev %d after 30s; got %d events", upTo, len(out))
		case <-ctx.Done():
			t.Fatal(ctx.Err())
		}
	}
	return out
}

// checkContiguous fails unless events hold exactly one event per revision
// from first to last, in order (every write in these tests is one op).
func checkContiguous(t testing.TB, events []*clientv3.Event, first, last int64) {
	t.Helper()
	want := first
	for _, ev := range events {
		if ev.Kv.ModRevision != want {
			t.Fatalf("event %s at rev %d, want rev %d (gap, duplicate or reordering)", ev.Kv.Key, ev.Kv.ModRevision, want)
		}
		want++
	}
	if want != last+1 {
		t.Fatalf("events end at rev %d, want %d", want-1, last)
	}
}

// TestProcessSecondSignal: while the first SIGTERM waits for an open stream
// to finish, a second signal stops kvsql at once with exit code 1.
func TestProcessSecondSignal(t *testing.T) {
	t.Parallel()
	p := startKVSQLProc(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	// A gRPC health Watch stream stays open through GracefulStop (only the
	// client ends it), so the first signal leaves kvsql waiting for
	// shutdownGrace.
	conn, err := grpc.NewClient(p.Addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	hw, err := healthpb.NewHealthClient(conn).Watch(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := hw.Recv(); err != nil || r.Status != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health watch: %v %v", r, err)
	}

	p.signal(syscall.SIGTERM)
	if out, ok := p.log.waitFor(10*time.Second, p.exited, func(s string) bool {
		return strings.Contains(s, `msg="shutting down"`)
	}); !ok {
		t.Fatalf("no shutdown log after SIGTERM:\n%s", out)
	}
	select {
	case <-p.exited:
		t.Fatal("kvsql exited although a health watch stream was open; cannot test the second signal")
	default:
	}
	p.signal(syscall.SIGTERM)
	code, took := p.wait(3 * kvsqlShutdownGrace)
	t.Logf("kvsql exited %d %v after the second signal", code, took)
	if took > kvsqlShutdownGrace/2 {
		// Seen when the second signal arrives before cmd/kvsql re-registers
		// its handler: the signal is swallowed by the stopped NotifyContext.
		t.Fatalf("the second signal did not stop kvsql at once: it exited %d after %v", code, took)
	}
	if code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
	if !strings.Contains(p.allLog.String(), "second signal, exiting now") {
		t.Errorf("no 'second signal' message in the log")
	}
}

// TestProcessCrashSafety: SIGKILL during a concurrent write load loses no
// acknowledged write, the revision never goes backwards, and watchers
// resume after the restart with exactly the missing events.
func TestProcessCrashSafety(t *testing.T) {
	t.Parallel()
	p := startKVSQLProc(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := p.client(t)
	wc := p.client(t) // the watcher has its own connection
	first, err := c.Put(ctx, "crash/start", "x")
	if err != nil {
		t.Fatal(err)
	}
	startRev := first.Header.Revision

	type ack struct {
		key, value string
		rev        int64
	}
	var (
		mu    sync.Mutex // guards acks
		acks  []ack
		stop  = make(chan struct{})
		wg    sync.WaitGroup
		ready = make(chan struct{})
		once  sync.Once
	)
	const writers, killAfter = 6, 400

	// A watcher that was watching before the crash: it records events as
	// they arrive; seen is the highest revision received before the kill.
	var (
		wmu    sync.Mutex // guards events
		events []*clientv3.Event
	)
	wch := wc.Watch(ctx, "crash/", clientv3.WithPrefix(), clientv3.WithRev(startRev))
	watchDone := make(chan struct{})
	go func() {
		defer close(watchDone)
		for wr := range wch {
			wmu.Lock()
			events = append(events, wr.Events...)
			wmu.Unlock()
		}
	}()

	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				key := fmt.Sprintf("crash/w%d/%06d", w, i)
				val := fmt.Sprintf("value-%d-%d-%d", w, i, time.Now().UnixNano())
				pctx, pcancel := context.WithTimeout(ctx, 3*time.Second)
				r, err := c.Put(pctx, key, val)
				pcancel()
				if err != nil {
					return // kvsql was killed
				}
				mu.Lock()
				acks = append(acks, ack{key, val, r.Header.Revision})
				if len(acks) >= killAfter {
					once.Do(func() { close(ready) })
				}
				mu.Unlock()
			}
		}()
	}
	select {
	case <-ready:
	case <-ctx.Done():
		t.Fatal("write load made no progress")
	}
	p.kill()
	wmu.Lock()
	seen := startRev - 1
	if len(events) > 0 {
		seen = events[len(events)-1].Kv.ModRevision
	}
	wmu.Unlock()
	close(stop)
	wg.Wait() // no put is in flight from here on
	mu.Lock()
	maxAck := int64(0)
	for _, a := range acks {
		maxAck = max(maxAck, a.rev)
	}
	t.Logf("killed after %d acknowledged puts (max rev %d); watcher had seen rev %d", len(acks), maxAck, seen)
	mu.Unlock()

	p.restart()
	rc := p.client(t)
	// Every acknowledged write is present with its value and revision.
	cur, err := rc.Get(ctx, "crash/", clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	rev := cur.Header.Revision
	if rev < maxAck {
		t.Fatalf("revision after restart %d < acknowledged revision %d", rev, maxAck)
	}
	byKey := map[string]*mvccpb.KeyValue{}
	for _, kv := range cur.Kvs {
		byKey[string(kv.Key)] = kv
	}
	for _, a := range acks {
		kv := byKey[a.key]
		if kv == nil {
			t.Errorf("acknowledged put %s (rev %d) lost", a.key, a.rev)
			continue
		}
		if string(kv.Value) != a.value || kv.ModRevision != a.rev {
			t.Errorf("acknowledged put %s=%s at rev %d; after restart %s at rev %d", a.key, a.value, a.rev, kv.Value, kv.ModRevision)
		}
	}
	// Each key was written once, so the key space holds one key per
	// revision since startRev (unacknowledged puts may have committed too).
	if int64(len(cur.Kvs)) != rev-startRev+1 {
		t.Errorf("%d keys under crash/ but revisions %d..%d", len(cur.Kvs), startRev, rev)
	}

	// A new watch from seen+1 gets exactly the events the watcher missed.
	if seen < rev {
		resumed := collectEvents(t, ctx, rc.Watch(ctx, "crash/", clientv3.WithPrefix(), clientv3.WithRev(seen+1)), rev)
		checkContiguous(t, resumed, seen+1, rev)
		for _, ev := range resumed {
			kv := byKey[string(ev.Kv.Key)]
			if ev.Type != clientv3.EventTypePut || kv == nil || !bytes.Equal(ev.Kv.Value, kv.Value) {
				t.Fatalf("resumed event %v does not match the key space", ev)
			}
		}
	}
	// The watcher from before the crash resumes by itself (clientv3
	// re-creates the watch from its last revision + 1).
	deadline := time.After(30 * time.Second)
	for {
		wmu.Lock()
		n := len(events)
		done := n > 0 && events[n-1].Kv.ModRevision >= rev
		wmu.Unlock()
		if done {
			break
		}
		select {
		case <-deadline:
			t.Fatalf("the watcher from before the crash did not reach rev %d (has %d events)", rev, n)
		case <-time.After(20 * time.Millisecond):
		}
	}
	wmu.Lock()
	checkContiguous(t, events, startRev, rev)
	for _, ev := range events {
		kv := byKey[string(ev.Kv.Key)]
		if kv == nil || !bytes.Equal(ev.Kv.Value, kv.Value) || kv.ModRevision != ev.Kv.ModRevision {
			t.Fatalf("event %v does not match the key space", ev)
		}
	}
	wmu.Unlock()
	_ = wc.Close()
	<-watchDone
}

// runKVSQL runs the kvsql binary with args to completion.
func runKVSQL(t *testing.T, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, kvsqlBinary(t), args...)
	cmd.Env = append(procEnv(), env...)
	cmd.Dir = t.TempDir()
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatalf("kvsql %v: %v", args, err)
	}
	return o.String(), e.String(), code
}

// TestProcessVersionHelp: --version and --help exit 0; --help lists every
// flag with its environment variable rule.
func TestProcessVersionHelp(t *testing.T) {
	t.Parallel()
	out, errOut, code := runKVSQL(t, nil, "--version")
	if code != 0 || !strings.HasPrefix(out, "kvsql ") || !strings.Contains(out, "\netcd API 3.") {
		t.Errorf("--version: exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	for _, arg := range []string{"--help", "-h"} {
		out, errOut, code = runKVSQL(t, nil, arg)
		help := out + errOut
		if code != 0 {
			t.Errorf("%s: exit %d\n%s", arg, code, help)
		}
		for _, f := range []string{
			"listen-client-urls", "advertise-client-urls", "name", "data-dir", "endpoint",
			"max-request-bytes", "max-txn-ops", "watch-progress-notify-interval", "cert-file",
			"key-file", "trusted-ca-file", "client-cert-auth", "log-level", "log-format", "version",
			"auth-token", "auth-token-ttl", "bcrypt-cost", "auth-refresh-interval",
		} {
			if !strings.Contains(help, "\n  -"+f+" ") && !strings.Contains(help, "\n  -"+f+"\n") {
				t.Errorf("%s does not list -%s:\n%s", arg, f, help)
			}
		}
		if !strings.Contains(help, "KVSQL_DATA_DIR") {
			t.Errorf("%s does not explain the KVSQL_* environment variables", arg)
		}
	}
}

// TestProcessFlagErrors: bad flags, flag values, environment values and
// endpoints give a clear error and a non-zero exit, and never print a
// password.
func TestProcessFlagErrors(t *testing.T) {
	t.Parallel()
	listen := "--listen-client-urls=http://127.0.0.1:0"
	for _, tc := range []struct {
		name string
		env  []string
		args []string
		want string
	}{
		{"unknown flag", nil, []string{"--no-such-flag"}, "flag provided but not defined: -no-such-flag"},
		{"bad int", nil, []string{"--max-request-bytes=lots"}, `invalid value "lots" for flag -max-request-bytes`},
		{"bad duration", nil, []string{"--watch-progress-notify-interval=soon"}, `invalid value "soon" for flag -watch-progress-notify-interval`},
		{"bad log level", nil, []string{listen, "--log-level=loud"}, `--log-level "loud"`},
		{"bad log format", nil, []string{listen, "--log-format=xml"}, `--log-format "xml"`},
		{"bad env", []string{"KVSQL_MAX_TXN_OPS=many"}, []string{listen}, `KVSQL_MAX_TXN_OPS="many"`},
		{"positional arg", nil, []string{"serve"}, `unexpected argument "serve"`},
		{"listen scheme", nil, []string{"--listen-client-urls=ftp://127.0.0.1:0"}, "scheme must be http or https"},
		{"listen not a URL", nil, []string{"--listen-client-urls=127.0.0.1:2379"}, "want http://host:port"},
		{"https without cert", nil, []string{"--listen-client-urls=https://127.0.0.1:0"}, "needs --cert-file and --key-file"},
		{"bcrypt cost", nil, []string{listen, "--bcrypt-cost=3"}, "--bcrypt-cost 3: want 4..31"},
		{"auth token kind", nil, []string{listen, "--auth-token=magic"}, `--auth-token "magic": want simple, or jwt,`},
		{"jwt without keys", nil, []string{listen, "--auth-token=jwt,sign-method=RS256"}, "auth: missing key data"},
		{"jwt key file", nil, []string{listen, "--auth-token=jwt,priv-key=/nonexistent.key,sign-method=RS256"}, "/nonexistent.key"},
		{"unknown scheme", nil, []string{listen, "--endpoint=redis://127.0.0.1:6379/0"}, `unknown scheme "redis"`},
		{"not a URL", nil, []string{listen, "--endpoint=state.db"}, "--endpoint is not a URL"},
		{"empty sqlite path", nil, []string{listen, "--endpoint=sqlite://"}, "needs a file path"},
		// Nothing listens on port 1: whether or not the backend is
		// implemented yet, kvsql must fail without showing the password.
		{"postgres unreachable", nil, []string{listen, "--endpoint=postgres://kvsql:s3cret@127.0.0.1:1/kvsql"}, "kvsql: "},
		{"mysql unreachable", nil, []string{listen, "--endpoint=mysql://kvsql:s3cret@tcp(127.0.0.1:1)/kvsql"}, "kvsql: "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			args := append([]string{"--data-dir=" + filepath.Join(t.TempDir(), "d")}, tc.args...)
			out, errOut, code := runKVSQL(t, tc.env, args...)
			if code == 0 {
				t.Fatalf("exit 0, want non-zero; stdout %q stderr %q", out, errOut)
			}
			if !strings.Contains(errOut, tc.want) {
				t.Errorf("stderr does not contain %q:\n%s", tc.want, errOut)
			}
			if strings.Contains(out+errOut, "s3cret") {
				t.Errorf("output shows the password:\n%s", out+errOut)
			}
			if strings.Contains(errOut, "panic") || strings.Contains(errOut, "goroutine ") {
				t.Errorf("kvsql panicked:\n%s", errOut)
			}
		})
	}
}

var updateReadme = flag.Bool("update-readme", false, "rewrite the flags table in README.md from kvsql --help")

const (
	readmeFlagsBegin = "<!-- BEGIN FLAGS: generated from `kvsql --help` by `make readme`; do not edit -->\n"
	readmeFlagsEnd   = "<!-- END FLAGS -->\n"
)

// flagsTable renders kvsql's --help output as a Markdown table.
func flagsTable(t *testing.T, help string) string {
	t.Helper()
	type row struct{ name, typ, desc string }
	var rows []row
	for _, line := range strings.Split(help, "\n") {
		switch {
		case strings.HasPrefix(line, "  -"):
			name, typ, _ := strings.Cut(strings.TrimPrefix(line, "  -"), " ")
			rows = append(rows, row{name: name, typ: typ})
		case strings.HasPrefix(line, "    \t") && len(rows) > 0:
			r := &rows[len(rows)-1]
			r.desc = strings.TrimSpace(r.desc + " " + strings.TrimSpace(line))
		}
	}
	if len(rows) == 0 {
		t.Fatalf("no flags in --help output:\n%s", help)
	}
	esc := strings.NewReplacer("|", `\|`, "<", "&lt;", ">", "&gt;")
	var b strings.Builder
	b.WriteString("| Flag | Environment variable | Default | Meaning |\n|---|---|---|---|\n")
	for _, r := range rows {
		desc, def := r.desc, ""
		if i := strings.LastIndex(desc, " (default "); i >= 0 && strings.HasSuffix(desc, ")") {
			desc, def = desc[:i], strings.Trim(desc[i+len(" (default "):len(desc)-1], `"`)
		}
		switch {
		case def != "":
			def = "`" + def + "`"
		case r.typ == "":
			def = "`false`"
		case r.typ == "string":
			def = "(empty)"
		default:
			def = "`0`"
		}
		fmt.Fprintf(&b, "| `--%s` | `%s` | %s | %s |\n", r.name, envNameOf(r.name), def, esc.Replace(desc))
	}
	return b.String()
}

// envNameOf mirrors cmd/kvsql: data-dir -> KVSQL_DATA_DIR.
func envNameOf(flagName string) string {
	return "KVSQL_" + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// TestProcessReadmeFlags: README.md's flags table is the one generated from
// the binary's --help. After changing a flag, run `make readme`.
func TestProcessReadmeFlags(t *testing.T) {
	t.Parallel()
	out, errOut, code := runKVSQL(t, nil, "--help")
	if code != 0 {
		t.Fatalf("--help: exit %d", code)
	}
	table := flagsTable(t, out+errOut)
	path := filepath.Join(repoRoot(t), "README.md")
	readme, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := string(readme)
	i, j := strings.Index(s, readmeFlagsBegin), strings.Index(s, readmeFlagsEnd)
	if i < 0 || j < i {
		t.Fatalf("README.md has no %q ... %q section", readmeFlagsBegin, readmeFlagsEnd)
	}
	updated := s[:i+len(readmeFlagsBegin)] + table + s[j:]
	if *updateReadme {
		if err := os.WriteFile(path, []byte(updated), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	if updated != s {
		t.Errorf("README.md's flags table differs from kvsql --help; run `make readme`. Want:\n%s", table)
	}
}
