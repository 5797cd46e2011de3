package integration

// Migration from a real kine (k3s-io/kine, pinned in tools/kine and built
// by scripts/kine.sh): kine on SQLite (a k3s-style state.db), PostgreSQL
// and MariaDB is written to through etcdctl, stopped, and migrated with
// `kvsql migrate`; kvsql must then serve every key as kine did.

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kvsql/kvsql/internal/testdb"
)

// kineBinary returns $KINE (`make test` builds it with scripts/kine.sh).
// Without it the test is skipped, except under CI=true where it fails.
func kineBinary(t testing.TB) string {
	t.Helper()
	p := os.Getenv("KINE")
	if p == "" {
		testdb.SkipOrFail(t, errors.New("no kine: set KINE to a kine binary (`bash scripts/kine.sh` builds the pinned one and prints its directory; `make test` does this)"))
	}
	path, err := exec.LookPath(p)
	if err != nil {
		testdb.SkipOrFail(t, fmt.Errorf("KINE=%s: %w", p, err))
	}
	return path
}

// kineProc is a running kine.
type kineProc struct {
	cmd    *exec.Cmd
	addr   string
	log    *syncBuffer
	exited chan struct{}
}

// startKine runs kine on endpoint (kine's own --endpoint syntax) and waits
// until it answers on its client address.
func startKine(t testing.TB, endpoint string) *kineProc {
	t.Helper()
	addr := procFreeAddr(t)
	k := &kineProc{addr: addr, log: newSyncBuffer(), exited: make(chan struct{})}
	// --compact-min-retain 0: let an explicit Compact compact (kine keeps
	// the newest 1000 revisions by default).
	k.cmd = exec.Command(kineBinary(t), "--listen-address", addr, "--endpoint", endpoint,
		"--metrics-bind-address", "0", "--compact-min-retain", "0")
	k.cmd.Env = procEnv()
	k.cmd.Dir = t.TempDir()
	k.cmd.Stdout, k.cmd.Stderr = k.log, k.log
	k.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := k.cmd.Start(); err != nil {
		t.Fatalf("start kine: %v", err)
	}
	go func() {
		_ = k.cmd.Wait()
		close(k.exited)
	}()
	t.Cleanup(func() { k.stop(t) })
	deadline := time.Now().Add(60 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			_ = c.Close()
			break
		}
		select {
		case <-k.exited:
			t.Fatalf("kine exited at start:\n%s", k.log.String())
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("kine did not listen on %s within 60s:\n%s", addr, k.log.String())
		}
	}
	return k
}

// stop stops kine (SIGTERM) and waits for it.
func (k *kineProc) stop(t testing.TB) {
	select {
	case <-k.exited:
		return
	default:
	}
	_ = k.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-k.exited:
	case <-time.After(30 * time.Second):
		_ = k.cmd.Process.Kill()
		<-k.exited
		t.Errorf("kine did not stop on SIGTERM within 30s")
	}
}

// kineWrites writes through etcdctl what k3s's apiserver writes through
// kine: creates, updates (etcdctl put), deletes (kine's delete txn), keys
// with a lease (kine's lease ID is its TTL), the apiserver's
// compact_rev_key transaction, and a compaction. It returns, per key, the
// version kvsql must report after the migration (the count of the key's
// changes kine still holds), and the revision compacted at.
func kineWrites(t testing.TB, ctl ctl) (versions map[string]int64, compact int64) {
	t.Helper()
	versions = map[string]int64{}
	modRev := map[string]int64{}
	put := func(k, v string, args ...string) int64 {
		t.Helper()
		rev := jsonRevision(t, ctl.ok(t, append([]string{"put", k, v, "-w", "json"}, args...)...))
		versions[k]++
		modRev[k] = rev
		return rev
	}
	// kine's delete, as the apiserver sends it: delete if the key is still
	// at its mod revision, else get it
	txnDelete := func(k string) {
		t.Helper()
		out := runStdin(t, ctl, fmt.Sprintf("mod(%q) = \"%d\"\n\ndel %s\n\nget %s\n\n", k, modRev[k], k, k), "txn", "-i")
		if !strings.Contains(out, "SUCCESS") {
			t.Fatalf("etcdctl txn delete %s: %q", k, out)
		}
		delete(versions, k)
	}
	for i := range 5 {
		put(fmt.Sprintf("/registry/pods/default/p%d", i), fmt.Sprintf("pod %d v1", i))
	}
	put("/registry/pods/default/p1", "pod 1 v2")
	put("/registry/pods/default/p1", "pod 1 v3")
	txnDelete("/registry/pods/default/p2")
	out := ctl.ok(t, "lease", "grant", "900")
	if !strings.Contains(out, "lease 0000000000000384 granted with TTL(900s)") {
		t.Fatalf("etcdctl lease grant 900 on kine: %q (kine's lease IDs are their TTL)", out)
	}
	put("/registry/events/default/e1", "event 1", "--lease=384")
	put("/registry/events/default/e2", "event 2", "--lease=384")
	// the apiserver's compaction bookkeeping: compact_rev_key, versioned
	compactTxn := func(version int64, value string) {
		t.Helper()
		out := runStdin(t, ctl, fmt.Sprintf("version(\"compact_rev_key\") = \"%d\"\n\nput compact_rev_key %s\n\nget compact_rev_key\n\n", version, value), "txn", "-i")
		if !strings.Contains(out, "SUCCESS") {
			t.Fatalf("compact_rev_key txn at version %d: %q", version, out)
		}
	}
	compactTxn(0, "4")
	put("/registry/pods/default/p3", "pod 3 v2")
	put("/registry/pods/default/p2", "pod 2 again")
	compactTxn(1, "9")
	// compact at the revision of this put: everything before it goes
	compact = put("/registry/configmaps/default/c1", "cm 1")
	ctl.ok(t, "compact", fmt.Sprint(compact))
	// kine stores no versions, and its compaction leaves one row of each
	// key: the migration counts versions from the rows kept, so from here
	// on each key's count starts again at that one row.
	for k := range versions {
		versions[k] = 1
	}
	put("/registry/pods/default/p1", "pod 1 v4")
	put("/registry/configmaps/default/c2", "cm 2")
	txnDelete("/registry/pods/default/p4")
	put("/registry/pods/default/p0", "pod 0 v2")
	return versions, compact
}

// runStdin runs etcdctl with stdin and fails the test unless it exits 0.
func runStdin(t testing.TB, c ctl, stdin string, args ...string) string {
	t.Helper()
	r := c.run(t, stdin, args...)
	if r.Code != 0 {
		t.Fatalf("etcdctl %v: exit %d: %s", args, r.Code, r.Stderr)
	}
	return r.Out
}

// jsonRevision reads header.revision from etcdctl -w json output.
func jsonRevision(t testing.TB, out string) int64 {
	t.Helper()
	var rev int64
	i := strings.Index(out, `"revision":`)
	if i < 0 {
		t.Fatalf("no revision in %q", out)
	}
	if _, err := fmt.Sscanf(out[i+len(`"revision":`):], "%d", &rev); err != nil {
		t.Fatalf("revision in %q: %v", out, err)
	}
	return rev
}

// kineState is what kine serves: every key under / and compact_rev_key,
// and the current revision.
type kineState struct {
	rev int64
	kvs []*mvccpb.KeyValue
}

func readState(t testing.TB, c *clientv3.Client, rev int64) kineState {
	t.Helper()
	ctx := context.Background()
	resp, err := c.Get(ctx, "/", clientv3.WithPrefix(), clientv3.WithRev(rev))
	if err != nil {
		t.Fatalf("get / at %d: %v", rev, err)
	}
	st := kineState{rev: resp.Header.Revision, kvs: resp.Kvs}
	cr, err := c.Get(ctx, "compact_rev_key", clientv3.WithRev(rev))
	if err != nil {
		t.Fatalf("get compact_rev_key: %v", err)
	}
	st.kvs = append(st.kvs, cr.Kvs...)
	return st
}

// TestMigrateFromKine: kine on SQLite (k3s-style state.db), PostgreSQL and
// MariaDB, written to through etcdctl, then `kvsql migrate`: kvsql serves
// every key with kine's value, create and mod revision (and version: kine
// keeps none but compact_rev_key's, which must match; the others are
// counted from the changes kine kept), kine's current revision, historic reads above
// kine's compact revision as kine answers them, ErrCompacted below it,
// kine's lease, and the next write at the next revision.
func TestMigrateFromKine(t *testing.T) {
	kinds := []struct {
		name string
		// kine's endpoint, and the --from kvsql migrate is given for it
		source func(t testing.TB) (kineEndpoint, from string)
	}{
		{"sqlite", func(t testing.TB) (string, string) {
			path := filepath.Join(t.TempDir(), "state.db")
			// k3s's own DSN parameters for its state.db
			return "sqlite://" + path + "?_journal=WAL&cache=shared&_busy_timeout=30000&_txlock=immediate", "kine+sqlite://" + path
		}},
		{"postgres", func(t testing.TB) (string, string) {
			u := freshPostgresURL(t)
			return u, "kine+" + u
		}},
		{"mysql", func(t testing.TB) (string, string) {
			ep := freshMySQLEndpoint(t)
			return ep, "kine+" + ep
		}},
	}
	for _, kind := range kinds {
		t.Run(kind.name, func(t *testing.T) {
			t.Parallel()
			kineBinary(t)
			kineEP, from := kind.source(t)
			k := startKine(t, kineEP)
			ctl := newCtl(t, k.addr)
			versions, compact := kineWrites(t, ctl)
			kc := newClient(t, server{Endpoint: "http://" + k.addr})
			latest := readState(t, kc, 0)
			historic := map[int64]kineState{}
			for rev := compact; rev <= latest.rev; rev++ {
				historic[rev] = readState(t, kc, rev)
			}
			k.stop(t)

			for _, tg := range dbTargets {
				t.Run("to-"+tg.name, func(t *testing.T) {
					ep := tg.fresh(t)
					stdout, stderr, code := runKVSQL(t, nil, "migrate", "--from", from, "--endpoint", ep)
					if code != 0 {
						t.Fatalf("kvsql migrate: exit %d\n%s%s\nkine's log:\n%s", code, stdout, stderr, k.log.String())
					}
					if want := fmt.Sprintf("revision %d, compact revision %d,", latest.rev, compact); !strings.Contains(stdout, want) {
						t.Errorf("kvsql migrate printed %q, want it to contain %q", stdout, want)
					}
					c := newClient(t, tg.serve(t, ep))
					got := readState(t, c, 0)
					compareKine(t, "latest", got, latest, versions)
					for rev, want := range historic {
						compareKine(t, fmt.Sprintf("at revision %d", rev), readState(t, c, rev), want, nil)
					}
					if _, err := c.Get(context.Background(), "/registry/pods/default/p1", clientv3.WithRev(compact-1)); !errors.Is(err, rpctypes.ErrCompacted) {
						t.Errorf("read below kine's compact revision %d: %v, want %v", compact, err, rpctypes.ErrCompacted)
					}
					ttl, err := c.TimeToLive(context.Background(), 0x384, clientv3.WithAttachedKeys())
					if err != nil || ttl.GrantedTTL != 900 || sortedString(ttl.Keys) != sortedString([]string{"/registry/events/default/e1", "/registry/events/default/e2"}) {
						t.Errorf("kine's lease 900 after the migration: %+v, %v; want TTL 900 with the two events", ttl, err)
					}
					resp, err := c.Put(context.Background(), "/registry/after-migration", "x")
					if err != nil || resp.Header.Revision != latest.rev+1 {
						t.Errorf("first write after the migration: %v, %v; want revision %d", resp, err, latest.rev+1)
					}
					_, stderr, code = runKVSQL(t, nil, "migrate", "--from", from, "--endpoint", ep)
					if code == 0 || !strings.Contains(stderr, "database is not empty") {
						t.Errorf("second migration into the same database: exit %d, %q; want a refusal saying it is not empty", code, stderr)
					}
				})
			}
		})
	}
}

// compareKine checks got against kine's answer: same revision, same keys
// with the same value, create and mod revision, and lease. Versions: kine
// reports one only for compact_rev_key (which must match); for the keys in
// versions kvsql must report the count kineWrites expects, and never 0
// (a live key at version 0 would pass etcd's "does not exist" compare).
func compareKine(t testing.TB, what string, got, want kineState, versions map[string]int64) {
	t.Helper()
	if got.rev != want.rev {
		t.Errorf("%s: header revision %d, kine's %d", what, got.rev, want.rev)
	}
	if len(got.kvs) != len(want.kvs) {
		t.Errorf("%s: %d keys, kine has %d:\n got %s\nwant %s", what, len(got.kvs), len(want.kvs), kvsString(got.rev, got.kvs), kvsString(want.rev, want.kvs))
		return
	}
	for i, w := range want.kvs {
		g := got.kvs[i]
		wantVersion := w.Version
		if string(w.Key) != "compact_rev_key" {
			wantVersion = g.Version // kine's own keys (/registry/health) or a historic read
			if v, ok := versions[string(w.Key)]; ok {
				wantVersion = v
			}
		}
		if string(g.Key) != string(w.Key) || string(g.Value) != string(w.Value) || g.CreateRevision != w.CreateRevision ||
			g.ModRevision != w.ModRevision || g.Lease != w.Lease || g.Version != wantVersion || g.Version < 1 {
			t.Errorf("%s: %s, kine %s (version %d expected)", what, kvsString(got.rev, []*mvccpb.KeyValue{g}), kvsString(want.rev, []*mvccpb.KeyValue{w}), wantVersion)
		}
	}
}
