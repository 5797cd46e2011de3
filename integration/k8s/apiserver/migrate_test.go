package apiserver

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"

	"github.com/kvsql/kvsql/integration/k8s/etcdtest"
	"github.com/kvsql/kvsql/internal/testdb"
)

// kineBinary returns $KINE, the pinned kine `make test` builds with
// scripts/kine.sh.
func kineBinary(t *testing.T) string {
	t.Helper()
	p := os.Getenv("KINE")
	if p == "" {
		testdb.SkipOrFail(t, fmt.Errorf("$KINE is not set: run `make test`, or set KINE to the kine binary in the directory `bash scripts/kine.sh` prints"))
	}
	if _, err := os.Stat(p); err != nil {
		testdb.SkipOrFail(t, fmt.Errorf("$KINE: %w", err))
	}
	return p
}

// startKine runs kine on endpoint and waits until it accepts connections.
func startKine(t *testing.T, endpoint string) (url string, p *process) {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	dir := t.TempDir()
	p = startProcess(t, "kine", filepath.Join(dir, "kine.log"), kineBinary(t),
		"--listen-address", addr, "--endpoint", endpoint, "--metrics-bind-address", "0")
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("kine log (end):\n%s", p.tail(4000))
		}
	})
	deadline := time.Now().Add(60 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			_ = c.Close()
			return "http://" + addr, p
		}
		if p.exited() || time.Now().After(deadline) {
			t.Fatalf("kine did not come up: %v\n%s", err, p.tail(4000))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// objects is what an apiserver lists: namespace/name -> resourceVersion
// and data, per resource, and each list's resourceVersion.
type objects struct {
	items  map[string]string
	listRV map[string]string
}

func listAll(t *testing.T, a *apiServer) objects {
	t.Helper()
	cs := a.clientset()
	o := objects{items: map[string]string{}, listRV: map[string]string{}}
	cms, err := cs.CoreV1().ConfigMaps("").List(ctx(t), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	o.listRV["configmaps"] = cms.ResourceVersion
	for _, cm := range cms.Items {
		o.items["configmap "+cm.Namespace+"/"+cm.Name] = fmt.Sprintf("rv=%s uid=%s data=%v", cm.ResourceVersion, cm.UID, cm.Data)
	}
	secs, err := cs.CoreV1().Secrets("").List(ctx(t), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	o.listRV["secrets"] = secs.ResourceVersion
	for _, s := range secs.Items {
		o.items["secret "+s.Namespace+"/"+s.Name] = fmt.Sprintf("rv=%s uid=%s data=%v", s.ResourceVersion, s.UID, s.Data)
	}
	nss, err := cs.CoreV1().Namespaces().List(ctx(t), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	o.listRV["namespaces"] = nss.ResourceVersion
	for _, ns := range nss.Items {
		o.items["namespace "+ns.Name] = fmt.Sprintf("rv=%s uid=%s", ns.ResourceVersion, ns.UID)
	}
	return o
}

// TestMigrateFromKine: a kube-apiserver on a real kine (on SQLite as k3s
// runs it, on PostgreSQL and on MariaDB) creates, updates and deletes
// objects; kine stops and `kvsql migrate` copies its database into kvsql
// on the same kind of database; a kube-apiserver on the migrated kvsql
// lists the same objects with the same resourceVersions, UIDs and data,
// watches, and gives new writes higher resourceVersions.
func TestMigrateFromKine(t *testing.T) {
	bin := kubeBinaries(t)
	kineBinary(t)
	kvsql, err := kvsqlBinary()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		// source returns kine's --endpoint, the --from for kvsql migrate,
		// and the kvsql endpoint to migrate into.
		source func(t *testing.T) (kine, from, to string)
	}{
		{"sqlite", func(t *testing.T) (string, string, string) {
			path := filepath.Join(t.TempDir(), "state.db")
			return "sqlite://" + path + "?_journal=WAL&cache=shared&_busy_timeout=30000&_txlock=immediate",
				"kine+sqlite://" + path, "sqlite://" + filepath.Join(t.TempDir(), "kvsql", "state.db")
		}},
		{"postgres", func(t *testing.T) (string, string, string) {
			u := testdb.FreshPostgresURL(t)
			return u, "kine+" + u, testdb.FreshPostgresURL(t)
		}},
		{"mariadb", func(t *testing.T) (string, string, string) {
			ep := testdb.FreshMySQLEndpoint(t)
			return ep, "kine+" + ep, testdb.FreshMySQLEndpoint(t)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			kineEP, from, to := tc.source(t)
			kineURL, kp := startKine(t, kineEP)
			saKey := newServiceAccountKey(t, t.TempDir())
			a := newAPIServer(t, bin, "on-kine", kineURL, saKey, apiserverFlags...)
			a.mustKubectl(t, nil, "create", "namespace", "migrated")
			for i := range 5 {
				a.mustKubectl(t, nil, "-n", "migrated", "create", "configmap", fmt.Sprintf("cm%d", i), fmt.Sprintf("--from-literal=n=%d", i))
			}
			a.mustKubectl(t, nil, "-n", "migrated", "create", "secret", "generic", "s1", "--from-literal=password=s3cret")
			a.mustKubectl(t, nil, "-n", "migrated", "create", "secret", "generic", "s2", "--from-literal=password=gone")
			for i := range 3 {
				a.mustKubectl(t, nil, "-n", "migrated", "label", "configmap", "cm1", fmt.Sprintf("round=%d", i), "--overwrite")
			}
			a.mustKubectl(t, nil, "-n", "migrated", "delete", "configmap", "cm3")
			a.mustKubectl(t, nil, "-n", "migrated", "delete", "secret", "s2")
			before := listAll(t, a)
			a.monitor.stop()
			a.proc.stop()
			kp.stop()

			out, err := exec.Command(kvsql, "migrate", "--from", from, "--endpoint", to).CombinedOutput()
			if err != nil {
				t.Fatalf("kvsql migrate: %v\n%s", err, out)
			}
			t.Logf("%s", strings.TrimSpace(string(out)))
			k := startKVSQL(t, "migrated", to)
			b := newAPIServer(t, bin, "on-kvsql", k.url, saKey, apiserverFlags...)
			after := listAll(t, b)
			for key, want := range before.items {
				if got := after.items[key]; got != want {
					t.Errorf("%s after the migration: %q, on kine %q", key, got, want)
				}
			}
			for key, got := range after.items {
				if _, ok := before.items[key]; !ok {
					t.Errorf("%s after the migration was not on kine: %q", key, got)
				}
			}
			// Lists and watches on kvsql go on from there. (A watch from
			// the list resourceVersion taken on kine gets 410 "too old"
			// from any freshly started apiserver, whose watch cache starts
			// at the store's current revision: a client relists, as after
			// any apiserver restart.)
			if rvOf(t, after.listRV["configmaps"]) < rvOf(t, before.listRV["configmaps"]) {
				t.Errorf("list resourceVersion %s after the migration is below kine's %s", after.listRV["configmaps"], before.listRV["configmaps"])
			}
			w, err := b.clientset().CoreV1().ConfigMaps("migrated").Watch(ctx(t), metav1.ListOptions{ResourceVersion: after.listRV["configmaps"]})
			if err != nil {
				t.Fatalf("watch from resourceVersion %s: %v", after.listRV["configmaps"], err)
			}
			defer w.Stop()
			created, err := b.clientset().CoreV1().ConfigMaps("migrated").Create(ctx(t), &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "after"}}, metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if rvOf(t, created.ResourceVersion) <= rvOf(t, before.listRV["configmaps"]) {
				t.Errorf("first object after the migration at resourceVersion %s, not above kine's %s", created.ResourceVersion, before.listRV["configmaps"])
			}
			select {
			case ev := <-w.ResultChan():
				cm, ok := ev.Object.(*corev1.ConfigMap)
				if ev.Type != watch.Added || !ok || cm.Name != "after" {
					t.Errorf("watch: first event %s %v, want ADDED of after", ev.Type, ev.Object)
				}
			case <-time.After(30 * time.Second):
				t.Error("watch: no event within 30s")
			}
		})
	}
}

// TestRestoreFromEtcd: a kube-apiserver on etcd (compacting every 2 s)
// creates, updates and deletes objects; etcd's snapshot goes through
// `kvsql snapshot restore`; a kube-apiserver on that kvsql lists the same
// objects with the same resourceVersions, UIDs and data, and its compactor
// carries on from etcd's compact_rev_key (its version-compare transaction
// succeeds, so the key's version moves past the restored one).
func TestRestoreFromEtcd(t *testing.T) {
	bin := kubeBinaries(t)
	kvsql, err := kvsqlBinary()
	if err != nil {
		t.Fatal(err)
	}
	etcdURL := etcdtest.Start(t, 0)
	saKey := newServiceAccountKey(t, t.TempDir())
	a := newAPIServer(t, bin, "on-etcd", etcdURL, saKey, compactingFlags...)
	a.mustKubectl(t, nil, "create", "namespace", "restored")
	for i := range 5 {
		a.mustKubectl(t, nil, "-n", "restored", "create", "configmap", fmt.Sprintf("cm%d", i), fmt.Sprintf("--from-literal=n=%d", i))
	}
	a.mustKubectl(t, nil, "-n", "restored", "create", "secret", "generic", "s1", "--from-literal=password=s3cret")
	for i := range 3 {
		a.mustKubectl(t, nil, "-n", "restored", "label", "configmap", "cm1", fmt.Sprintf("round=%d", i), "--overwrite")
	}
	a.mustKubectl(t, nil, "-n", "restored", "delete", "configmap", "cm3")
	ec := newEtcdClient(t, etcdURL)
	// let the compactor record a compaction, so the snapshot has one
	if err := eventually(30*time.Second, func() error {
		r, err := ec.Get(ctx(t), "compact_rev_key")
		if err != nil {
			return err
		}
		if len(r.Kvs) == 0 || r.Kvs[0].Version < 2 {
			return fmt.Errorf("compact_rev_key %v: no compaction yet", r)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	before := listAll(t, a)
	a.monitor.stop()
	a.proc.stop()
	file := filepath.Join(t.TempDir(), "etcd.db")
	rc, err := ec.Snapshot(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(f, rc); err != nil {
		t.Fatal(err)
	}
	_ = rc.Close()
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	ck, err := ec.Get(ctx(t), "compact_rev_key")
	if err != nil || len(ck.Kvs) != 1 {
		t.Fatalf("etcd's compact_rev_key: %v, %v", ck, err)
	}
	restoredVersion := ck.Kvs[0].Version

	to := "sqlite://" + filepath.Join(t.TempDir(), "kvsql", "state.db")
	out, err := exec.Command(kvsql, "snapshot", "restore", file, "--endpoint", to).CombinedOutput()
	if err != nil {
		t.Fatalf("kvsql snapshot restore: %v\n%s", err, out)
	}
	t.Logf("%s", strings.TrimSpace(string(out)))
	k := startKVSQL(t, "restored", to)
	b := newAPIServer(t, bin, "on-kvsql", k.url, saKey, compactingFlags...)
	after := listAll(t, b)
	for key, want := range before.items {
		if got := after.items[key]; got != want {
			t.Errorf("%s after the restore: %q, on etcd %q", key, got, want)
		}
	}
	for key, got := range after.items {
		if _, ok := before.items[key]; !ok {
			t.Errorf("%s after the restore was not on etcd: %q", key, got)
		}
	}
	kc := newEtcdClient(t, k.url)
	if err := eventually(60*time.Second, func() error {
		r, err := kc.Get(ctx(t), "compact_rev_key")
		if err != nil {
			return err
		}
		if len(r.Kvs) == 0 || r.Kvs[0].Version <= restoredVersion {
			return fmt.Errorf("compact_rev_key on kvsql %v: still at the restored version %d", r, restoredVersion)
		}
		return nil
	}); err != nil {
		t.Errorf("the apiserver's compactor on the restored kvsql: %v", err)
	}
}
