package integration

// Tests that drive etcdctl 3.6 (the version pinned in tools/etcdctl/go.mod)
// against the kvsql binary. Scripts whose output is deterministic also run
// against an in-process etcd, so every expected output below is checked
// against the real thing.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// ctlTimeout bounds one etcdctl command.
const ctlTimeout = 30 * time.Second

var (
	etcdctlOnce sync.Once
	etcdctlPath string
	etcdctlErr  error
)

// etcdctlBinary returns etcdctl: $ETCDCTL if set, otherwise built once per
// test run from tools/etcdctl. Without it the test is skipped, except under
// CI=true where it fails.
func etcdctlBinary(t testing.TB) string {
	t.Helper()
	root := repoRoot(t)
	etcdctlOnce.Do(func() {
		if p := os.Getenv("ETCDCTL"); p != "" {
			etcdctlPath, etcdctlErr = exec.LookPath(p)
			return
		}
		path := filepath.Join(toolDir, "etcdctl")
		cmd := exec.Command(goTool(), "build", "-buildvcs=false", "-o", path, "go.etcd.io/etcd/etcdctl/v3")
		cmd.Dir = filepath.Join(root, "tools", "etcdctl")
		if out, err := cmd.CombinedOutput(); err != nil {
			etcdctlErr = fmt.Errorf("%w\n%s", err, out)
			return
		}
		etcdctlPath = path
	})
	if etcdctlErr != nil {
		msg := fmt.Sprintf("no etcdctl (set ETCDCTL, or build it with `cd tools/etcdctl && go build -o DIR/etcdctl go.etcd.io/etcd/etcdctl/v3`, or run `make test`): %v", etcdctlErr)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return etcdctlPath
}

// ctl runs etcdctl against one endpoint.
type ctl struct {
	bin      string
	endpoint string // host:port or http://host:port
}

func newCtl(t testing.TB, endpoint string) ctl {
	t.Helper()
	return ctl{bin: etcdctlBinary(t), endpoint: endpoint}
}

func (c ctl) command(ctx context.Context, stdin string, args ...string) *exec.Cmd {
	all := append([]string{"--endpoints=" + c.endpoint, "--dial-timeout=5s", "--command-timeout=20s"}, args...)
	cmd := exec.CommandContext(ctx, c.bin, all...)
	cmd.Env = procEnv()
	cmd.Stdin = strings.NewReader(stdin)
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// ctlResult is one finished etcdctl run. Err is the last "Error: ..." line of
// stderr (etcdctl also logs client retries there), empty on exit 0.
type ctlResult struct {
	Out, Err string
	Code     int
	Stderr   string
}

func (c ctl) run(t testing.TB, stdin string, args ...string) ctlResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ctlTimeout)
	defer cancel()
	cmd := c.command(ctx, stdin, args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	r := ctlResult{Out: o.String(), Stderr: e.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee) && ctx.Err() == nil:
		r.Code = ee.ExitCode()
		for _, line := range strings.Split(r.Stderr, "\n") {
			if strings.HasPrefix(line, "Error:") {
				r.Err = line
			}
		}
	default:
		t.Fatalf("etcdctl %v: %v\nstderr: %s", args, err, r.Stderr)
	}
	return r
}

// ok runs etcdctl and fails the test unless it exits 0.
func (c ctl) ok(t testing.TB, args ...string) string {
	t.Helper()
	r := c.run(t, "", args...)
	if r.Code != 0 {
		t.Fatalf("etcdctl %s: exit %d\n%s", strings.Join(args, " "), r.Code, r.Stderr)
	}
	return r.Out
}

// ctlBackground is an etcdctl process that runs until stopped (watch, lock,
// elect).
type ctlBackground struct {
	t      testing.TB
	cmd    *exec.Cmd
	out    *syncBuffer
	errOut *syncBuffer
	exited chan struct{}
	cancel context.CancelFunc
}

func (c ctl) start(t testing.TB, args ...string) *ctlBackground {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	b := &ctlBackground{t: t, out: newSyncBuffer(), errOut: newSyncBuffer(), exited: make(chan struct{}), cancel: cancel}
	b.cmd = c.command(ctx, "", args...)
	b.cmd.Stdout, b.cmd.Stderr = b.out, b.errOut
	if err := b.cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	go func() {
		_ = b.cmd.Wait()
		close(b.exited)
	}()
	t.Cleanup(b.stop)
	return b
}

// waitOut waits until stdout has at least len(want) bytes and then
// requires it to be exactly want.
func (b *ctlBackground) waitOut(want string) {
	b.t.Helper()
	got, _ := b.out.waitFor(ctlTimeout, b.exited, func(s string) bool { return len(s) >= len(want) })
	if got != want {
		b.t.Fatalf("etcdctl %v: stdout\n%q\nwant\n%q\nstderr: %s", b.cmd.Args[1:], got, want, b.errOut.String())
	}
}

// waitMatch waits until stdout matches re.
func (b *ctlBackground) waitMatch(re *regexp.Regexp) []string {
	b.t.Helper()
	got, ok := b.out.waitFor(ctlTimeout, b.exited, re.MatchString)
	if !ok {
		b.t.Fatalf("etcdctl %v: stdout %q does not match %s\nstderr: %s", b.cmd.Args[1:], got, re, b.errOut.String())
	}
	return re.FindStringSubmatch(got)
}

// interrupt sends SIGINT (etcdctl lock and elect then release what they
// hold) and waits for the exit.
func (b *ctlBackground) interrupt() {
	b.t.Helper()
	if err := b.cmd.Process.Signal(syscall.SIGINT); err != nil {
		b.t.Fatal(err)
	}
	select {
	case <-b.exited:
	case <-time.After(ctlTimeout):
		b.t.Fatalf("etcdctl %v did not exit after SIGINT", b.cmd.Args[1:])
	}
}

func (b *ctlBackground) stop() {
	b.cancel()
	<-b.exited
}

// ctlStep is one etcdctl command of a deterministic script.
type ctlStep struct {
	args  []string
	stdin string
	want  string // exact stdout (only the lines containing grep, if set)
	grep  string
	err   string // exact "Error: ..." line; non-empty means a non-zero exit
}

func step(want string, args ...string) ctlStep { return ctlStep{args: args, want: want} }

func countOnly(n string, args ...string) ctlStep {
	return ctlStep{args: args, grep: `"Count"`, want: `"Count" : ` + n + "\n"}
}

func stepErr(err string, args ...string) ctlStep { return ctlStep{args: args, err: err} }

// ctlTarget starts a fresh server for a script and returns its endpoint.
type ctlTarget struct {
	name  string
	start func(t *testing.T) string
}

// runScript runs steps in order against a fresh kvsql and a fresh etcd.
func runScript(t *testing.T, steps []ctlStep) {
	runScriptOn(t, []ctlTarget{
		{"kvsql", func(t *testing.T) string { return startKVSQLProc(t).Addr }},
		{"etcd", func(t *testing.T) string { return startEtcd(t, serverOptions{}).Endpoint }},
	}, steps)
}

// runScriptOn runs steps in order against each target, in parallel.
func runScriptOn(t *testing.T, targets []ctlTarget, steps []ctlStep) {
	for _, target := range targets {
		t.Run(target.name, func(t *testing.T) {
			t.Parallel()
			c := newCtl(t, target.start(t))
			for i, s := range steps {
				r := c.run(t, s.stdin, s.args...)
				if s.grep != "" {
					var kept []string
					for _, line := range strings.SplitAfter(r.Out, "\n") {
						if strings.Contains(line, s.grep) {
							kept = append(kept, line)
						}
					}
					r.Out = strings.Join(kept, "")
				}
				if r.Out != s.want || r.Err != s.err || (s.err == "") != (r.Code == 0) {
					t.Fatalf("step %d: etcdctl %s\nstdout %q\nwant   %q\nerror  %q (exit %d)\nwant   %q\nstderr: %s",
						i, strings.Join(s.args, " "), r.Out, s.want, r.Err, r.Code, s.err, r.Stderr)
				}
			}
		})
	}
}

const (
	errCompacted = "Error: etcdserver: mvcc: required revision has been compacted"
	errFutureRev = "Error: etcdserver: mvcc: required revision is a future revision"
)

// TestEtcdctlKV: put/get with every read option, del, txn -i, compact.
func TestEtcdctlKV(t *testing.T) {
	t.Parallel()
	runScript(t, []ctlStep{
		// Revision 1 is the empty store.
		step("OK\n", "put", "foo", "bar"),     // rev 2
		step("OK\n", "put", "foo1", "bar1"),   // rev 3
		step("OK\n", "put", "foo2", "bar2"),   // rev 4
		step("OK\n", "put", "zoo", "val"),     // rev 5
		step("OK\n", "put", "foo", "bar-new"), // rev 6
		step("foo\nbar-new\n", "get", "foo"),
		step("", "get", "nope"),
		step("foo\nbar-new\nfoo1\nbar1\nfoo2\nbar2\n", "get", "foo", "--prefix"),
		step("foo\nbar-new\nfoo1\nbar1\n", "get", "foo", "foo2"),
		step("foo1\nbar1\nfoo2\nbar2\nzoo\nval\n", "get", "foo1", "--from-key"),
		step("foo\nbar-new\nfoo1\nbar1\nfoo2\nbar2\nzoo\nval\n", "get", "", "--from-key"),
		step("foo\nbar-new\nfoo1\nbar1\n", "get", "foo", "--prefix", "--limit=2"),
		step("foo\nbar\n", "get", "foo", "--rev=2"),
		step("foo\nbar\nfoo1\nbar1\nfoo2\nbar2\n", "get", "foo", "--prefix", "--rev=5"),
		step("", "get", "zoo", "--rev=4"),
		// --count-only needs -w fields, whose header varies: compare Count.
		countOnly("4", "get", "", "--prefix", "--count-only", "-w=fields"),
		countOnly("2", "get", "foo", "--prefix", "--count-only", "--rev=3", "-w=fields"),
		stepErr("Error: --count-only is only for `--write-out=fields`", "get", "foo", "--count-only"),
		step("foo\n\nfoo1\n\nfoo2\n\n", "get", "foo", "--prefix", "--keys-only"),
		step("foo\nbar-new\nzoo\nval\nfoo2\nbar2\nfoo1\nbar1\n", "get", "", "--prefix", "--sort-by=MODIFY", "--order=DESCEND"),
		step("foo1\nbar1\nfoo2\nbar2\nzoo\nval\nfoo\nbar-new\n", "get", "", "--prefix", "--sort-by=MODIFY", "--order=ASCEND"),
		step("foo\nbar-new\nfoo1\nbar1\nfoo2\nbar2\nzoo\nval\n", "get", "", "--prefix", "--sort-by=CREATE"),
		step("zoo\nval\nfoo2\nbar2\nfoo1\nbar1\nfoo\nbar-new\n", "get", "", "--prefix", "--sort-by=KEY", "--order=DESCEND"),
		step("zoo\nval\nfoo2\nbar2\n", "get", "", "--prefix", "--sort-by=VALUE", "--order=DESCEND", "--limit=2"),
		// Ties keep key order.
		step("foo\nbar-new\nfoo1\nbar1\n", "get", "", "--prefix", "--sort-by=VERSION", "--order=DESCEND", "--limit=2"),
		step("foo1\nbar1\nfoo2\nbar2\nzoo\nval\nfoo\nbar-new\n", "get", "", "--prefix", "--sort-by=VERSION"),
		step("foo2\nbar2\nzoo\nval\n", "get", "", "--prefix", "--min-mod-rev=4", "--max-mod-rev=5"),
		step("foo\nbar-new\n", "get", "", "--prefix", "--min-mod-rev=6"),
		step("foo1\nbar1\nfoo2\nbar2\n", "get", "", "--prefix", "--min-create-rev=3", "--max-create-rev=4"),
		step("foo\nbar-new\n", "get", "", "--prefix", "--max-create-rev=2"),
		stepErr(errFutureRev, "get", "foo", "--rev=100"),

		step("2\nfoo1\nbar1\nfoo2\nbar2\n", "del", "foo1", "foo3", "--prev-kv"), // rev 7
		step("0\n", "del", "foo1"),
		step("OK\n", "put", "foo3", "a"),      // rev 8
		step("OK\n", "put", "fop", "b"),       // rev 9
		step("2\n", "del", "foo", "--prefix"), // rev 10: foo, foo3
		step("fop\nb\nzoo\nval\n", "get", "", "--from-key"),

		// Txn, interactive from stdin: compares, blank line, success ops,
		// blank line, failure ops, blank line.
		{args: []string{"txn", "-i"}, // rev 11
			stdin: "value(\"zoo\") = \"val\"\nmod(\"zoo\") = \"5\"\ncreate(\"zoo\") < \"6\"\nversion(\"zoo\") = \"1\"\nvalue(\"fop\") != \"x\"\n\n" +
				"put t1 v1\nget zoo\ndel fop\n\nput t1 fail\n\n",
			want: "compares:\nsuccess requests (get, put, del):\nfailure requests (get, put, del):\nSUCCESS\n\nOK\n\nzoo\nval\n\n1\n"},
		{args: []string{"txn", "-i"}, // rev 12
			stdin: "value(\"t1\") = \"v1\"\nversion(\"t1\") > \"1\"\n\nput t2 x\n\nget t1\nput t3 y\n\n",
			want:  "compares:\nsuccess requests (get, put, del):\nfailure requests (get, put, del):\nFAILURE\n\nt1\nv1\n\nOK\n"},
		{args: []string{"txn", "-i"}, // no compares: success; only reads, so no new revision
			stdin: "\nget t --prefix\n\n\n",
			want:  "compares:\nsuccess requests (get, put, del):\nfailure requests (get, put, del):\nSUCCESS\n\nt1\nv1\nt3\ny\n"},
		step("t1\nv1\nt3\ny\nzoo\nval\n", "get", "", "--from-key"),
		step("", "get", "t2"),
		step("", "get", "fop"),

		// Compaction.
		step("compacted revision 5\n", "compact", "5", "--physical"),
		stepErr(errCompacted, "get", "zoo", "--rev=4"),
		step("zoo\nval\n", "get", "zoo", "--rev=5"),
		step("foo\nbar-new\nfoo1\nbar1\nfoo2\nbar2\n", "get", "foo", "--prefix", "--rev=6"),
		stepErr(errCompacted, "compact", "3"),
		stepErr(errFutureRev, "compact", "13"),
		step("compacted revision 12\n", "compact", "12"),
		stepErr(errCompacted, "get", "t1", "--rev=11"),
		step("3\n", "del", "", "--from-key"), // rev 13
		countOnly("0", "get", "", "--from-key", "--count-only", "-w=fields"),
		step("t1\nv1\nt3\ny\nzoo\nval\n", "get", "", "--from-key", "--rev=12"),
	})
}

// forTargets runs f against a fresh kvsql and a fresh etcd, in parallel.
func forTargets(t *testing.T, f func(t *testing.T, c ctl)) {
	t.Run("kvsql", func(t *testing.T) {
		t.Parallel()
		f(t, newCtl(t, startKVSQLProc(t).Addr))
	})
	t.Run("etcd", func(t *testing.T) {
		t.Parallel()
		f(t, newCtl(t, startEtcd(t, serverOptions{}).Endpoint))
	})
}

// TestEtcdctlWatch: historic replay (--rev), --prefix, key ranges,
// --prev-kv, a live watch in the background, and a watch below the compact
// revision.
func TestEtcdctlWatch(t *testing.T) {
	t.Parallel()
	forTargets(t, func(t *testing.T, c ctl) {
		c.ok(t, "put", "w/a", "1") // rev 2
		c.ok(t, "put", "w/b", "2") // rev 3
		c.ok(t, "del", "w/a")      // rev 4
		c.ok(t, "put", "x", "0")   // rev 5
		c.ok(t, "put", "w/b", "3") // rev 6

		// Historic replay from the log.
		c.start(t, "watch", "--prefix", "w/", "--rev=2", "--prev-kv").waitOut(
			"PUT\nw/a\n1\nPUT\nw/b\n2\nDELETE\nw/a\n1\nw/a\n\nPUT\nw/b\n2\nw/b\n3\n")
		c.start(t, "watch", "w/b", "--rev=1").waitOut("PUT\nw/b\n2\nPUT\nw/b\n3\n")
		c.start(t, "watch", "w/a", "w/c", "--rev=4").waitOut("DELETE\nw/a\n\nPUT\nw/b\n3\n")

		// Live: a watch started at the next revision sees exactly the
		// writes that follow, whatever the time it takes to connect.
		live := c.start(t, "watch", "--prefix", "w/", "--rev=7", "--prev-kv")
		c.ok(t, "put", "w/c", "4")              // rev 7
		c.ok(t, "put", "x", "1")                // rev 8
		c.ok(t, "put", "w/c", "5")              // rev 9
		c.ok(t, "del", "w/", "--prefix")        // rev 10
		c.ok(t, "put", "w/d", "6", "--prev-kv") // rev 11
		live.waitOut("PUT\nw/c\n4\n" + "PUT\nw/c\n4\nw/c\n5\n" + "DELETE\nw/b\n3\nw/b\n\nDELETE\nw/c\n5\nw/c\n\n" + "PUT\nw/d\n6\n")

		// A watch from a compacted revision is cancelled by the server.
		c.ok(t, "compact", "6")
		r := c.run(t, "", "watch", "--prefix", "w/", "--rev=3")
		if r.Out != "" || !strings.Contains(r.Stderr, "watch was canceled (etcdserver: mvcc: required revision has been compacted)\n") ||
			r.Err != "Error: watch is canceled by the server" || r.Code == 0 {
			t.Fatalf("watch below the compact revision: stdout %q, error %q, exit %d", r.Out, r.Err, r.Code)
		}
		// At the compact revision itself the history is still there.
		c.start(t, "watch", "--prefix", "w/", "--rev=6").waitOut("PUT\nw/b\n3\nPUT\nw/c\n4\nPUT\nw/c\n5\nDELETE\nw/b\n\nDELETE\nw/c\n\nPUT\nw/d\n6\n")
	})
}

var (
	leaseGrantRe = regexp.MustCompile(`^lease ([0-9a-f]{16}) granted with TTL\((\d+)s\)\n$`)
	leaseTTLRe   = regexp.MustCompile(`^lease ([0-9a-f]{16}) granted with TTL\((\d+)s\), remaining\((\d+)s\), attached keys\(\[(.*)\]\)\n$`)
)

// grantLease runs lease grant and returns the lease ID and the granted TTL.
func grantLease(t *testing.T, c ctl, ttl int) (string, int) {
	t.Helper()
	out := c.ok(t, "lease", "grant", strconv.Itoa(ttl))
	m := leaseGrantRe.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("lease grant %d: %q", ttl, out)
	}
	granted, _ := strconv.Atoi(m[2])
	return m[1], granted
}

// TestEtcdctlLease: grant, put --lease, timetolive --keys, list,
// keep-alive --once, revoke (deletes the keys), and expiry deleting a key.
func TestEtcdctlLease(t *testing.T) {
	t.Parallel()
	forTargets(t, func(t *testing.T, c ctl) {
		id, ttl := grantLease(t, c, 100)
		if ttl != 100 {
			t.Fatalf("granted TTL %d, want 100", ttl)
		}
		c.ok(t, "put", "--lease="+id, "lk1", "v1")
		c.ok(t, "put", "--lease="+id, "lk2", "v2")
		out := c.ok(t, "lease", "timetolive", "--keys", id)
		m := leaseTTLRe.FindStringSubmatch(out)
		// etcd lists the attached keys in map order.
		if m == nil || m[1] != id || m[2] != "100" || (m[4] != "lk1 lk2" && m[4] != "lk2 lk1") {
			t.Fatalf("timetolive --keys: %q", out)
		}
		if rem, _ := strconv.Atoi(m[3]); rem < 90 || rem > 100 {
			t.Fatalf("remaining TTL %d", rem)
		}
		if out := c.ok(t, "lease", "timetolive", id); !strings.HasPrefix(out, "lease "+id+" granted with TTL(100s), remaining(") || strings.Contains(out, "attached") {
			t.Fatalf("timetolive: %q", out)
		}
		if out := c.ok(t, "lease", "list"); out != "found 1 leases\n"+id+"\n" {
			t.Fatalf("lease list: %q", out)
		}
		if out := c.ok(t, "lease", "keep-alive", "--once", id); out != "lease "+id+" keepalived with TTL(100)\n" {
			t.Fatalf("keep-alive --once: %q", out)
		}
		if out := c.ok(t, "get", "lk", "--prefix", "--keys-only"); out != "lk1\n\nlk2\n\n" {
			t.Fatalf("get: %q", out)
		}
		if out := c.ok(t, "lease", "revoke", id); out != "lease "+id+" revoked\n" {
			t.Fatalf("revoke: %q", out)
		}
		if out := c.ok(t, "get", "lk", "--prefix"); out != "" {
			t.Fatalf("keys of a revoked lease: %q", out)
		}
		if out := c.ok(t, "lease", "timetolive", id); out != "lease "+id+" already expired\n" {
			t.Fatalf("timetolive after revoke: %q", out)
		}
		r := c.run(t, "", "lease", "revoke", id)
		if r.Err != "Error: failed to revoke lease (etcdserver: requested lease not found)" {
			t.Fatalf("revoke twice: %q %q", r.Out, r.Err)
		}
		r = c.run(t, "", "put", "--lease="+id, "lk3", "v")
		if r.Err != "Error: etcdserver: requested lease not found" {
			t.Fatalf("put with a revoked lease: %q %q", r.Out, r.Err)
		}
		if out := c.ok(t, "lease", "list"); out != "found 0 leases\n" {
			t.Fatalf("lease list: %q", out)
		}

		// Expiry: a TTL below the minimum is raised to it (2s); the key goes
		// when the lease expires.
		short, ttl := grantLease(t, c, 1)
		if ttl != 2 {
			t.Fatalf("lease grant 1: TTL %d, want 2 (etcd's minimum)", ttl)
		}
		c.ok(t, "put", "--lease="+short, "ek", "v")
		deadline := time.Now().Add(20 * time.Second)
		for c.ok(t, "get", "ek") != "" {
			if time.Now().After(deadline) {
				t.Fatal("key of an expired lease still there after 20s")
			}
			// One etcdctl run takes tens of milliseconds: that paces the poll.
		}
		if out := c.ok(t, "lease", "timetolive", short); out != "lease "+short+" already expired\n" {
			t.Fatalf("timetolive after expiry: %q", out)
		}
	})
}

// TestEtcdctlMaintenance: endpoint status and health, member list, alarm
// list, defrag, and the refusals of what kvsql does not implement.
func TestEtcdctlMaintenance(t *testing.T) {
	t.Parallel()
	p := startKVSQLProc(t, "--name=kvsql-test")
	c := newCtl(t, p.Addr)
	c.ok(t, "put", "k", "v")

	var status []struct {
		Endpoint string
		Status   struct {
			Header struct {
				MemberID uint64 `json:"member_id"`
				Revision int64
			}
			Version string
			DBSize  int64 `json:"dbSize"`
			Leader  uint64
		}
	}
	if err := json.Unmarshal([]byte(c.ok(t, "endpoint", "status", "-w", "json")), &status); err != nil {
		t.Fatal(err)
	}
	if len(status) != 1 {
		t.Fatalf("endpoint status: %+v", status)
	}
	st := status[0].Status
	var major, minor int
	if _, err := fmt.Sscanf(st.Version, "%d.%d.", &major, &minor); err != nil || major != 3 || minor < 6 {
		t.Errorf("version %q, want 3.6 or newer", st.Version)
	}
	if st.DBSize <= 0 || st.Header.Revision != 2 || st.Header.MemberID == 0 || st.Leader != st.Header.MemberID {
		t.Errorf("endpoint status: %+v", st)
	}
	out := c.ok(t, "endpoint", "status")
	if !strings.HasPrefix(out, fmt.Sprintf("%s, %x, %s, ", p.Addr, st.Header.MemberID, st.Version)) {
		t.Errorf("endpoint status: %q", out)
	}

	if out := c.ok(t, "endpoint", "health"); !regexp.MustCompile(`^` + regexp.QuoteMeta(p.Addr) + ` is healthy: successfully committed proposal: took = \S+\n$`).MatchString(out) {
		t.Errorf("endpoint health: %q", out)
	}
	var health []struct {
		Endpoint string
		Health   bool
	}
	if err := json.Unmarshal([]byte(c.ok(t, "endpoint", "health", "-w", "json")), &health); err != nil || len(health) != 1 || !health[0].Health {
		t.Errorf("endpoint health -w json: %+v %v", health, err)
	}

	if out, want := c.ok(t, "member", "list"), fmt.Sprintf("%x, started, kvsql-test, , http://%s, false\n", st.Header.MemberID, p.Addr); out != want {
		t.Errorf("member list: %q, want %q", out, want)
	}
	if out := c.ok(t, "alarm", "list"); out != "" {
		t.Errorf("alarm list: %q", out)
	}
	if out := c.ok(t, "defrag"); !regexp.MustCompile(`^Finished defragmenting etcd member\[` + regexp.QuoteMeta(p.Addr) + `\]\. took \S+\n$`).MatchString(out) {
		t.Errorf("defrag: %q", out)
	}
	if out := c.ok(t, "endpoint", "hashkv"); !strings.HasPrefix(out, p.Addr+", ") {
		t.Errorf("endpoint hashkv: %q", out)
	}

	// the kvsql binary serves snapshots (TestSnapshotToEtcd checks their content)
	snap := filepath.Join(t.TempDir(), "snap.db")
	if out := c.ok(t, "snapshot", "save", snap); out != "Snapshot saved at "+snap+"\nServer version 3.6.0\n" {
		t.Errorf("snapshot save: %q", out)
	}

	for _, tc := range []struct {
		args []string
		want string // in the error
	}{
		{[]string{"member", "add", "m2", "--peer-urls=http://127.0.0.1:1"}, "membership"},
		{[]string{"member", "remove", "1234"}, "membership"},
		{[]string{"move-leader", "1234"}, ""},
	} {
		r := c.run(t, "", tc.args...)
		if r.Code == 0 || !strings.Contains(r.Stderr, tc.want) {
			t.Errorf("etcdctl %s: exit %d, stdout %q, stderr %q; want a failure mentioning %q", strings.Join(tc.args, " "), r.Code, r.Out, r.Stderr, tc.want)
		}
	}
	// Auth (docs/auth.md; TestEtcdctlAuth runs it against etcd): off,
	// at etcd's first auth revision, no users.
	if out := c.ok(t, "auth", "status"); out != "Authentication Status: false\nAuthRevision: 1\n" {
		t.Errorf("auth status: %q", out)
	}
	if out := c.ok(t, "user", "list"); out != "" {
		t.Errorf("user list: %q", out)
	}
}

// TestEtcdctlLockElect: etcdctl lock and elect (client-side recipes on KV,
// Lease and Watch) exclude each other and hand over on release.
func TestEtcdctlLockElect(t *testing.T) {
	t.Parallel()
	p := startKVSQLProc(t)
	c := newCtl(t, p.Addr)

	if r := c.run(t, "", "lock", "L", "echo", "hello"); r.Code != 0 || r.Out != "hello\n" {
		t.Fatalf("lock L echo hello: %q exit %d\n%s", r.Out, r.Code, r.Stderr)
	}

	// The first holder prints its lock key and holds the lock until SIGINT.
	first := c.start(t, "lock", "L")
	key1 := first.waitMatch(regexp.MustCompile(`^(L/[0-9a-f]+)\n\n$`))[1]
	second := c.start(t, "lock", "L", "echo", "second")
	// The second waits: its key appears behind the first's.
	deadline := time.Now().Add(ctlTimeout)
	for {
		keys := strings.Fields(c.ok(t, "get", "L/", "--prefix", "--keys-only"))
		if len(keys) == 2 && keys[0] == key1 || len(keys) == 2 && keys[1] == key1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("second locker never queued; keys %q", keys)
		}
	}
	if out := second.out.String(); out != "" {
		t.Fatalf("second locker ran while the first held the lock: %q", out)
	}
	first.interrupt()
	second.waitOut("second\n")
	<-second.exited
	if second.cmd.ProcessState.ExitCode() != 0 {
		t.Fatalf("second locker exit %d: %s", second.cmd.ProcessState.ExitCode(), second.errOut.String())
	}
	if out := c.ok(t, "get", "L/", "--prefix"); out != "" {
		t.Fatalf("lock keys left behind: %q", out)
	}

	// Election: p1 leads, p2 waits, p1 resigns, p2 leads.
	p1 := c.start(t, "elect", "E", "p1")
	key := p1.waitMatch(regexp.MustCompile(`^(E/[0-9a-f]+)\np1\n$`))[1]
	// elect -l observes: it prints the leader, then every change.
	observer := c.start(t, "elect", "-l", "E")
	observer.waitOut(key + "\np1\n")
	p2 := c.start(t, "elect", "E", "p2")
	deadline = time.Now().Add(ctlTimeout)
	for len(strings.Fields(c.ok(t, "get", "E/", "--prefix", "--keys-only"))) != 2 {
		if time.Now().After(deadline) {
			t.Fatal("second candidate never registered")
		}
	}
	if out := p2.out.String(); out != "" {
		t.Fatalf("second candidate elected while the first leads: %q", out)
	}
	p1.interrupt()
	key2 := p2.waitMatch(regexp.MustCompile(`^(E/[0-9a-f]+)\np2\n$`))[1]
	observer.waitOut(key + "\np1\n" + key2 + "\np2\n")
	p2.interrupt()
	observer.interrupt()
}
