package integration

// Snapshot round trips with etcd's own tools: kvsql -> etcdctl snapshot
// save -> etcdutl snapshot status / restore -> a real etcd on the restored
// data dir; and a real etcd -> its Snapshot -> kvsql snapshot restore ->
// kvsql, on every backend.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/kvsql/kvsql/backends"
	"github.com/kvsql/kvsql/backends/backendtest"
	"github.com/kvsql/kvsql/backends/sqlite"
	"github.com/kvsql/kvsql/notify/local"
)

var (
	etcdutlOnce sync.Once
	etcdutlPath string
	etcdutlErr  error
)

// etcdutlBinary returns etcdutl: $ETCDUTL if set, otherwise built once per
// test run from tools/etcdutl. Without it the test is skipped, except
// under CI=true where it fails.
func etcdutlBinary(t testing.TB) string {
	t.Helper()
	root := repoRoot(t)
	etcdutlOnce.Do(func() {
		if p := os.Getenv("ETCDUTL"); p != "" {
			etcdutlPath, etcdutlErr = exec.LookPath(p)
			return
		}
		path := filepath.Join(toolDir, "etcdutl")
		cmd := exec.Command(goTool(), "build", "-buildvcs=false", "-o", path, "go.etcd.io/etcd/etcdutl/v3")
		cmd.Dir = filepath.Join(root, "tools", "etcdutl")
		if out, err := cmd.CombinedOutput(); err != nil {
			etcdutlErr = fmt.Errorf("%w\n%s", err, out)
			return
		}
		etcdutlPath = path
	})
	if etcdutlErr != nil {
		msg := fmt.Sprintf("no etcdutl (set ETCDUTL, or run `make etcdutl` and ETCDUTL=.cache/bin/etcdutl, or `make test`): %v", etcdutlErr)
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return etcdutlPath
}

// runTool runs a command to completion and fails the test unless it exits 0.
func runTool(t testing.TB, bin string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = procEnv()
	cmd.Dir = t.TempDir()
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\nstdout: %s\nstderr: %s", filepath.Base(bin), strings.Join(args, " "), err, o.String(), e.String())
	}
	return o.String()
}

// dbTarget is a fresh, empty kvsql database on one backend: an endpoint for
// the kvsql binary, and a way to serve it in-process.
type dbTarget struct {
	name  string
	fresh func(t testing.TB) string
	serve func(t testing.TB, endpoint string) server
}

var dbTargets = []dbTarget{
	{"sqlite",
		func(t testing.TB) string { return "sqlite://" + filepath.Join(t.TempDir(), "state.db") },
		func(t testing.TB, ep string) server {
			src := local.New()
			be, err := sqlite.Open(context.Background(), sqlite.Config{Path: strings.TrimPrefix(ep, "sqlite://"), Engine: backends.EngineConfig{OnCommit: src.Publish}})
			if err != nil {
				t.Fatal(err)
			}
			return serveKVSQL(t, be, src, serverOptions{})
		}},
	{"postgres", freshPostgresURL, func(t testing.TB, ep string) server {
		st, src := openPostgres(t, ep)
		t.Cleanup(func() { _ = src.Close() })
		return serveKVSQL(t, st, src, serverOptions{})
	}},
	{"mysql", freshMySQLEndpoint, func(t testing.TB, ep string) server {
		st, src := openMySQL(t, ep)
		t.Cleanup(func() { _ = src.Close() })
		return serveKVSQL(t, st, src, serverOptions{})
	}},
}

// history is what writeClientHistory wrote.
type history struct {
	compact, current int64
	leases           []clientv3.LeaseID
}

// writeClientHistory writes the same history through any etcd client:
// creates, overwrites, deletes, a multi-key txn, a range delete, keys on
// two leases, a compaction, and writes after it.
func writeClientHistory(t testing.TB, c *clientv3.Client) history {
	t.Helper()
	ctx := context.Background()
	var h history
	put := func(k, v string, opts ...clientv3.OpOption) int64 {
		t.Helper()
		resp, err := c.Put(ctx, k, v, opts...)
		if err != nil {
			t.Fatal(err)
		}
		return resp.Header.Revision
	}
	for i := range 6 {
		put(fmt.Sprintf("/registry/pods/default/p%d", i), fmt.Sprintf("pod %d v1", i))
	}
	for i := range 3 {
		put("/registry/pods/default/p1", fmt.Sprintf("pod 1 v%d", i+2))
	}
	if _, err := c.Delete(ctx, "/registry/pods/default/p2"); err != nil {
		t.Fatal(err)
	}
	// A day or more: TestSnapshotFromEtcd's reference etcd must still hold
	// these leases (and their keys) when its parallel subtests get to run,
	// which on a busy 2-vCPU CI machine was once more than 15 minutes later.
	for _, ttl := range []int64{86400, 129600} {
		l, err := c.Grant(ctx, ttl)
		if err != nil {
			t.Fatal(err)
		}
		h.leases = append(h.leases, l.ID)
	}
	put("/registry/events/e1", "event 1", clientv3.WithLease(h.leases[0]))
	put("/registry/events/e2", "event 2", clientv3.WithLease(h.leases[0]))
	put("/registry/leases/l1", "lease 1", clientv3.WithLease(h.leases[1]))
	if _, err := c.Txn(ctx).Then(
		clientv3.OpPut("/registry/pods/default/p3", "pod 3 v2"),
		clientv3.OpPut("/registry/pods/default/p6", "pod 6 v1"),
		clientv3.OpDelete("/registry/pods/default/p4"),
	).Commit(); err != nil {
		t.Fatal(err)
	}
	mid := put("/registry/pods/default/p0", "pod 0 v2")
	put("/registry/configmaps/c1", "cm 1")
	if _, err := c.Delete(ctx, "/registry/pods/default/p5", clientv3.WithPrefix()); err != nil {
		t.Fatal(err)
	}
	put("/registry/pods/default/p2", "pod 2 again")
	put("compact_rev_key", "compacted")
	if _, err := c.Compact(ctx, mid); err != nil {
		t.Fatal(err)
	}
	h.compact = mid
	put("/registry/pods/default/p1", "pod 1 v5")
	put("/registry/configmaps/c2", "cm 2")
	if _, err := c.Delete(ctx, "/registry/configmaps/c1"); err != nil {
		t.Fatal(err)
	}
	h.current = put("/registry/pods/default/p0", "pod 0 v3")
	return h
}

// sortedString prints a list of strings or byte strings in sorted order.
func sortedString[T string | []byte](items []T) string {
	out := make([]string, len(items))
	for i, it := range items {
		out[i] = string(it)
	}
	slices.Sort(out)
	return fmt.Sprintf("%q", out)
}

func kvEqual(a, b *mvccpb.KeyValue) bool { return proto.Equal(a, b) }

func kvsString(rev int64, kvs []*mvccpb.KeyValue) string { return backendtest.KVString(rev, kvs) }

// sameStore checks that got serves what want serves for h's history: the
// latest state with its header revision, every revision from the compact
// revision on, ErrCompacted below it, a watch from just above the compact
// revision (with prev_kv), and the leases with their TTL and keys.
func sameStore(t testing.TB, want, got *clientv3.Client, h history) {
	t.Helper()
	ctx := context.Background()
	for rev := int64(0); rev <= h.current; rev++ {
		if rev > 0 && rev < h.compact {
			continue
		}
		w, err := want.Get(ctx, "\x00", clientv3.WithFromKey(), clientv3.WithRev(rev))
		if err != nil {
			t.Fatal(err)
		}
		g, err := got.Get(ctx, "\x00", clientv3.WithFromKey(), clientv3.WithRev(rev))
		if err != nil {
			t.Fatalf("read at revision %d: %v", rev, err)
		}
		same := len(w.Kvs) == len(g.Kvs) && w.Header.Revision == g.Header.Revision
		for i := 0; same && i < len(w.Kvs); i++ {
			same = kvEqual(w.Kvs[i], g.Kvs[i])
		}
		if !same {
			t.Errorf("read at revision %d:\n got %s\nwant %s", rev, kvsString(g.Header.Revision, g.Kvs), kvsString(w.Header.Revision, w.Kvs))
		}
	}
	if _, err := got.Get(ctx, "/registry/pods/default/p1", clientv3.WithRev(h.compact-1)); !errors.Is(err, rpctypes.ErrCompacted) {
		t.Errorf("read below the compact revision %d: %v, want %v", h.compact, err, rpctypes.ErrCompacted)
	}
	watch := func(c *clientv3.Client) []*clientv3.Event {
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		return collectEvents(t, wctx, c.Watch(wctx, "\x00", clientv3.WithFromKey(), clientv3.WithRev(h.compact+1), clientv3.WithPrevKV()), h.current)
	}
	we, ge := watch(want), watch(got)
	if len(we) != len(ge) {
		t.Errorf("watch from %d: %d events, want %d", h.compact+1, len(ge), len(we))
	}
	for i := 0; i < min(len(we), len(ge)); i++ {
		if we[i].Type != ge[i].Type || !kvEqual(we[i].Kv, ge[i].Kv) || !kvEqual(we[i].PrevKv, ge[i].PrevKv) {
			t.Errorf("watch event %d:\n got %s\nwant %s", i, backendtest.EventString((*mvccpb.Event)(ge[i])), backendtest.EventString((*mvccpb.Event)(we[i])))
		}
	}
	for _, id := range h.leases {
		w, err := want.TimeToLive(ctx, id, clientv3.WithAttachedKeys())
		if err != nil {
			t.Fatal(err)
		}
		g, err := got.TimeToLive(ctx, id, clientv3.WithAttachedKeys())
		if err != nil {
			t.Fatal(err)
		}
		// etcd lists a lease's keys (and the leases) in no particular order
		if g.GrantedTTL != w.GrantedTTL || g.TTL <= 0 || sortedString(g.Keys) != sortedString(w.Keys) {
			t.Errorf("lease %x: granted %d, ttl %d, keys %q; want granted %d, keys %q", id, g.GrantedTTL, g.TTL, g.Keys, w.GrantedTTL, w.Keys)
		}
	}
	wl, err := want.Leases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	gl, err := got.Leases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ids := func(ls []clientv3.LeaseStatus) []string {
		var out []string
		for _, l := range ls {
			out = append(out, fmt.Sprintf("%016x", l.ID))
		}
		return out
	}
	if sortedString(ids(wl.Leases)) != sortedString(ids(gl.Leases)) {
		t.Errorf("leases %v, want %v", gl.Leases, wl.Leases)
	}
}

// nextRevision checks that a write continues at h.current+1.
func nextRevision(t testing.TB, c *clientv3.Client, h history) {
	t.Helper()
	resp, err := c.Put(context.Background(), "/registry/after-restore", "x")
	if err != nil {
		t.Fatal(err)
	}
	if resp.Header.Revision != h.current+1 {
		t.Errorf("first write after restore at revision %d, want %d", resp.Header.Revision, h.current+1)
	}
}

// TestSnapshotToEtcd: kvsql -> etcdctl snapshot save -> etcdutl snapshot
// status reports its revision and key count -> etcdutl snapshot restore ->
// a real etcd on the restored data dir serves the same keys, values,
// create/mod revisions, versions, header revision and leases and continues
// at the next revision. The same file also restores into a fresh kvsql
// (kvsql -> snapshot -> kvsql).
func TestSnapshotToEtcd(t *testing.T) {
	for _, tg := range dbTargets {
		t.Run(tg.name, func(t *testing.T) {
			t.Parallel()
			ctl, utl := etcdctlBinary(t), etcdutlBinary(t)
			src := tg.serve(t, tg.fresh(t))
			sc := newClient(t, src)
			h := writeClientHistory(t, sc)
			file := filepath.Join(t.TempDir(), "kvsql.db")
			out := runTool(t, ctl, "--endpoints="+src.Endpoint, "snapshot", "save", file)
			if !strings.Contains(out, "Snapshot saved at "+file) {
				t.Fatalf("etcdctl snapshot save: %q", out)
			}
			var st struct {
				Revision int64  `json:"revision"`
				TotalKey int    `json:"totalKey"`
				Version  string `json:"version"`
			}
			out = runTool(t, utl, "snapshot", "status", file, "-w", "json")
			if err := json.Unmarshal([]byte(out), &st); err != nil {
				t.Fatalf("etcdutl snapshot status: %q: %v", out, err)
			}
			live, err := sc.Get(context.Background(), "\x00", clientv3.WithFromKey(), clientv3.WithCountOnly())
			if err != nil {
				t.Fatal(err)
			}
			if st.Revision != h.current || int64(st.TotalKey) != live.Count || st.Version != "3.6.0" {
				t.Errorf("etcdutl snapshot status: %+v; want revision %d, %d keys, version 3.6.0", st, h.current, live.Count)
			}

			cfg := etcdConfig(t, serverOptions{})
			dataDir := filepath.Join(t.TempDir(), "etcd")
			peer := cfg.AdvertisePeerUrls[0].String()
			runTool(t, utl, "snapshot", "restore", file, "--data-dir", dataDir, "--name", cfg.Name,
				"--initial-cluster", cfg.Name+"="+peer, "--initial-advertise-peer-urls", peer)
			cfg.Dir = dataDir
			e := runEtcd(t, cfg)
			t.Cleanup(e.Close)
			ec := newClient(t, server{Endpoint: cfg.ListenClientUrls[0].String()})
			sameStore(t, sc, ec, h)
			nextRevision(t, ec, h)

			ep := tg.fresh(t)
			stdout, stderr, code := runKVSQL(t, nil, "snapshot", "restore", file, "--endpoint", ep)
			if code != 0 {
				t.Fatalf("kvsql snapshot restore: exit %d\n%s%s", code, stdout, stderr)
			}
			kc := newClient(t, tg.serve(t, ep))
			sameStore(t, sc, kc, h)
			nextRevision(t, kc, h)
		})
	}
}

// TestSnapshotFromEtcd: a real etcd with history and a compaction ->
// Maintenance.Snapshot -> kvsql snapshot restore -> kvsql on each backend
// serves what etcd serves: every read from the compact revision on,
// ErrCompacted below it, a watch from an old revision, the leases with
// their TTL, and the next write at the next revision. A second restore
// into the same database is refused, saying it is not empty.
func TestSnapshotFromEtcd(t *testing.T) {
	t.Parallel()
	e := startEtcd(t, serverOptions{})
	ec := newClient(t, e)
	h := writeClientHistory(t, ec)
	file := filepath.Join(t.TempDir(), "etcd.db")
	rc, err := ec.Snapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := io.Copy(&buf, rc); err != nil {
		t.Fatal(err)
	}
	_ = rc.Close()
	if err := os.WriteFile(file, buf.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tg := range dbTargets {
		t.Run(tg.name, func(t *testing.T) {
			t.Parallel()
			ep := tg.fresh(t)
			stdout, stderr, code := runKVSQL(t, nil, "snapshot", "restore", file, "--endpoint", ep)
			if code != 0 {
				t.Fatalf("kvsql snapshot restore: exit %d\n%s%s", code, stdout, stderr)
			}
			want := fmt.Sprintf("restored %s: revision %d, compact revision %d,", file, h.current, h.compact)
			if !strings.Contains(stdout, want) {
				t.Errorf("kvsql snapshot restore printed %q, want it to contain %q", stdout, want)
			}
			_, stderr, code = runKVSQL(t, nil, "snapshot", "restore", file, "--endpoint", ep)
			if code == 0 || !strings.Contains(stderr, "database is not empty") {
				t.Errorf("second restore into the same database: exit %d, %q; want a refusal saying it is not empty", code, stderr)
			}
			kc := newClient(t, tg.serve(t, ep))
			sameStore(t, ec, kc, h)
			nextRevision(t, kc, h)
		})
	}
}

// TestProcessToolErrors: the snapshot and migrate subcommands say what is
// wrong and what to do, and never print a password.
func TestProcessToolErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"snapshot"}, "want save or restore"},
		{[]string{"snapshot", "restore"}, "name the snapshot FILE"},
		{[]string{"snapshot", "restore", filepath.Join(dir, "missing.db"), "--data-dir", filepath.Join(dir, "d1")}, "no such file"},
		{[]string{"snapshot", "restore", filepath.Join(dir, "missing.db"), "--endpoint", "sqlite://" + filepath.Join(dir, "d1", "state.db")}, "no such file"},
		{[]string{"migrate", "--data-dir", filepath.Join(dir, "d2")}, "--from names the kine database"},
		{[]string{"migrate", "--from", "etcd://x", "--data-dir", filepath.Join(dir, "d3")}, `unknown scheme "etcd"`},
		{[]string{"migrate", "--from", "kine+sqlite://" + filepath.Join(dir, "nope.db"), "--data-dir", filepath.Join(dir, "d4")}, "kine's SQLite database"},
		{[]string{"migrate", "--from", "kine+postgres://kine:hunter2@127.0.0.1:1/kine?connect_timeout=2", "--data-dir", filepath.Join(dir, "d1")}, "connect to kine+postgres://kine@127.0.0.1:1/kine"},
	} {
		stdout, stderr, code := runKVSQL(t, nil, tc.args...)
		if code == 0 || !strings.Contains(stderr, tc.want) || strings.Contains(stdout+stderr, "hunter2") {
			t.Errorf("kvsql %s: exit %d, stdout %q, stderr %q; want a failure saying %q, without the password", strings.Join(tc.args, " "), code, stdout, stderr, tc.want)
		}
		if _, err := os.Stat(filepath.Join(dir, "d1")); err == nil {
			t.Errorf("kvsql %s created the target database before failing", strings.Join(tc.args, " "))
		}
	}
}
