package apiserver

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
)

// cluster is what a scenario runs against: writes go through a, the reads
// and watches that check them through b (the same apiserver when there is
// only one), and etcd is a client of a's kvsql instance.
type cluster struct {
	name string
	a, b *apiServer
	etcd *clientv3.Client

	// Set by earlier scenarios, checked by later ones.
	oldRV   string // a list resourceVersion from before many writes
	counter int    // the value the read-modify-write scenario reached
	paged   int    // objects in namespace "paged" after that scenario
	cm1RV   string // cm1's resourceVersion before the restart
}

func (c *cluster) ha() bool { return c.a != c.b }

// run runs the scenarios in order; each later one may use what earlier
// ones created, so the first failure of a setup step stops the run.
func (c *cluster) run(t *testing.T) {
	steps := []struct {
		name string
		f    func(*testing.T)
	}{
		{"Health", c.health},
		{"Namespaces", c.namespaces},
		{"ConfigMapsAndSecrets", c.configMapsAndSecrets},
		{"DuplicateCreateConflict", c.duplicateCreate},
		{"StaleUpdateConflict", c.staleUpdate},
		{"CustomResourceWithStatus", c.customResource},
		{"ReadModifyWriteNoLostUpdate", c.readModifyWrite},
		{"PagedListIsSnapshot", c.pagedList},
		{"ListAtExactResourceVersion", c.exactList},
		{"ConsistentListFromWatchCache", c.consistentList},
		{"WatchFromResourceVersion", c.watchFromRV},
		{"EventExpiresWithLease", c.eventTTL},
		{"WriteToWatchLatency", c.latency},
		{"RestartKeepsData", c.restart},
		{"CompactionGivesGone", c.compaction},
		{"HealthThroughout", c.healthThroughout},
	}
	for _, s := range steps {
		if !t.Run(s.name, s.f) {
			return
		}
	}
}

func ctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func (c *cluster) health(t *testing.T) {
	for _, a := range c.apiservers() {
		for _, p := range []struct{ path, need string }{
			{"/readyz?verbose", "[+]etcd ok"},
			{"/readyz?verbose", "[+]etcd-readiness ok"},
			{"/livez?verbose", "[+]etcd ok"},
		} {
			code, body, err := a.get(p.path)
			if err != nil || code != 200 || !strings.Contains(body, p.need) {
				t.Fatalf("%s %s: %d %v, want 200 with %q:\n%s", a.name, p.path, code, err, p.need, body)
			}
		}
	}
}

func (c *cluster) apiservers() []*apiServer {
	if c.ha() {
		return []*apiServer{c.a, c.b}
	}
	return []*apiServer{c.a}
}

func (c *cluster) namespaces(t *testing.T) {
	c.a.mustKubectl(t, nil, "create", "namespace", "e2e")
	if got := c.b.mustKubectl(t, nil, "get", "namespace", "e2e", "-o", "jsonpath={.status.phase}"); got != "Active" {
		t.Fatalf("namespace e2e through %s: phase %q, want Active", c.b.name, got)
	}
	for _, ns := range []string{"rmw", "paged", "exact", "watch", "lat"} {
		if _, err := c.a.clientset().CoreV1().Namespaces().Create(ctx(t), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create namespace %s: %v", ns, err)
		}
	}
	out := c.b.mustKubectl(t, nil, "get", "namespaces", "-o", "name")
	for _, ns := range []string{"default", "kube-system", "e2e", "rmw", "paged", "exact", "watch", "lat"} {
		if !strings.Contains(out, "namespace/"+ns+"\n") {
			t.Errorf("kubectl get namespaces through %s lacks %s:\n%s", c.b.name, ns, out)
		}
	}
}

func (c *cluster) configMapsAndSecrets(t *testing.T) {
	c.a.mustKubectl(t, nil, "-n", "e2e", "create", "configmap", "cm1", "--from-literal=greeting=hello")
	if got := c.b.mustKubectl(t, nil, "-n", "e2e", "get", "configmap", "cm1", "-o", "jsonpath={.data.greeting}"); got != "hello" {
		t.Fatalf("cm1 greeting through %s = %q, want hello", c.b.name, got)
	}
	c.a.mustKubectl(t, nil, "-n", "e2e", "create", "secret", "generic", "s1", "--from-literal=password=s3cret")
	cb := c.b.clientset()
	sec, err := cb.CoreV1().Secrets("e2e").Get(ctx(t), "s1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := string(sec.Data["password"]); got != "s3cret" {
		t.Fatalf("secret s1 password = %q", got)
	}
	// The object is in kvsql under the apiserver's default prefix.
	resp, err := c.etcd.Get(ctx(t), "/registry/secrets/e2e/s1", clientv3.WithCountOnly())
	if err != nil || resp.Count != 1 {
		t.Fatalf("kvsql key /registry/secrets/e2e/s1: count %v, err %v", resp, err)
	}
	c.a.mustKubectl(t, nil, "-n", "e2e", "delete", "secret", "s1")
	if _, err := cb.CoreV1().Secrets("e2e").Get(ctx(t), "s1", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("get deleted secret through %s: %v, want NotFound", c.b.name, err)
	}
	if out := c.b.mustKubectl(t, nil, "-n", "e2e", "get", "configmaps,secrets", "-o", "name"); !strings.Contains(out, "configmap/cm1") || strings.Contains(out, "secret/s1") {
		t.Fatalf("kubectl get configmaps,secrets through %s:\n%s", c.b.name, out)
	}
}

// statusCode is the HTTP code of an apiserver error.
func statusCode(err error) int32 {
	var s apierrors.APIStatus
	if errors.As(err, &s) {
		return s.Status().Code
	}
	return 0
}

func (c *cluster) duplicateCreate(t *testing.T) {
	cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "dup"}, Data: map[string]string{"v": "1"}}
	if _, err := c.a.clientset().CoreV1().ConfigMaps("e2e").Create(ctx(t), cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	_, err := c.b.clientset().CoreV1().ConfigMaps("e2e").Create(ctx(t), cm, metav1.CreateOptions{})
	if !apierrors.IsAlreadyExists(err) || statusCode(err) != 409 {
		t.Fatalf("second create through %s: %v (code %d), want 409 AlreadyExists", c.b.name, err, statusCode(err))
	}
	_, err = c.a.kubectl(nil, "-n", "e2e", "create", "configmap", "dup")
	if err == nil || !strings.Contains(err.Error(), `configmaps "dup" already exists`) {
		t.Fatalf("kubectl create of an existing configmap: %v, want \"already exists\"", err)
	}
}

func (c *cluster) staleUpdate(t *testing.T) {
	ca, cb := c.a.clientset().CoreV1().ConfigMaps("e2e"), c.b.clientset().CoreV1().ConfigMaps("e2e")
	got, err := ca.Get(ctx(t), "dup", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	fresh := got.DeepCopy()
	fresh.Data["v"] = "2"
	if _, err := cb.Update(ctx(t), fresh, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	stale := got.DeepCopy()
	stale.Data["v"] = "3"
	_, err = ca.Update(ctx(t), stale, metav1.UpdateOptions{})
	if !apierrors.IsConflict(err) || statusCode(err) != 409 {
		t.Fatalf("update with resourceVersion %s after it changed: %v (code %d), want 409 Conflict", got.ResourceVersion, err, statusCode(err))
	}
	final, err := cb.Get(ctx(t), "dup", metav1.GetOptions{})
	if err != nil || final.Data["v"] != "2" {
		t.Fatalf("dup after the conflict: %v %v, want v=2", final.Data, err)
	}
}

const widgetCRD = `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.e2e.kvsql.io
spec:
  group: e2e.kvsql.io
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, listKind: WidgetList}
  versions:
  - name: v1
    served: true
    storage: true
    subresources:
      status: {}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer}
          status:
            type: object
            properties:
              ready: {type: boolean}
`

const widget = `apiVersion: e2e.kvsql.io/v1
kind: Widget
metadata: {name: w1, namespace: e2e}
spec: {size: 1}
status: {ready: true}
`

var widgets = schema.GroupVersionResource{Group: "e2e.kvsql.io", Version: "v1", Resource: "widgets"}

func (c *cluster) customResource(t *testing.T) {
	c.a.mustKubectl(t, []byte(widgetCRD), "apply", "-f", "-")
	c.a.mustKubectl(t, nil, "wait", "--for=condition=Established", "crd/widgets.e2e.kvsql.io", "--timeout=60s")
	da, db := c.a.dynamic().Resource(widgets).Namespace("e2e"), c.b.dynamic().Resource(widgets).Namespace("e2e")
	// The other apiserver serves the new resource once its CRD informer
	// has seen the CRD.
	if err := eventually(time.Minute, func() error {
		_, err := db.List(ctx(t), metav1.ListOptions{})
		return err
	}); err != nil {
		t.Fatalf("widgets through %s: %v", c.b.name, err)
	}
	// The status subresource: status is dropped on create.
	c.a.mustKubectl(t, []byte(widget), "create", "-f", "-")
	w, err := db.Get(ctx(t), "w1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, found, _ := unstructured.NestedFieldNoCopy(w.Object, "status"); found {
		t.Fatalf("status was stored on create: %v", w.Object["status"])
	}
	// Status updates change only status.
	w.Object["status"] = map[string]any{"ready": true}
	_ = unstructured.SetNestedField(w.Object, int64(99), "spec", "size")
	w, err = da.UpdateStatus(ctx(t), w, metav1.UpdateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if size, _, _ := unstructured.NestedInt64(w.Object, "spec", "size"); size != 1 {
		t.Fatalf("status update changed spec.size to %d", size)
	}
	if w.GetGeneration() != 1 {
		t.Fatalf("status update changed generation to %d", w.GetGeneration())
	}
	// Main-resource updates change only spec, and bump the generation.
	_ = unstructured.SetNestedField(w.Object, int64(2), "spec", "size")
	_ = unstructured.SetNestedField(w.Object, false, "status", "ready")
	w, err = db.Update(ctx(t), w, metav1.UpdateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ready, _, _ := unstructured.NestedBool(w.Object, "status", "ready")
	if !ready || w.GetGeneration() != 2 {
		t.Fatalf("spec update: status.ready=%v generation=%d, want true and 2", ready, w.GetGeneration())
	}
	out := c.b.mustKubectl(t, nil, "-n", "e2e", "get", "widgets", "-o", "jsonpath={range .items[*]}{.metadata.name}={.spec.size},{.status.ready};{end}")
	if out != "w1=2,true;" {
		t.Fatalf("kubectl get widgets through %s: %q, want w1=2,true;", c.b.name, out)
	}
}

// readModifyWrite runs increment loops on one configmap from 8 workers,
// half through each apiserver, retrying on 409 Conflict; the final value
// must count every increment once.
func (c *cluster) readModifyWrite(t *testing.T) {
	const workers, each = 8, 25
	ca := c.a.clientset()
	if _, err := ca.CoreV1().ConfigMaps("rmw").Create(ctx(t), &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "counter"}, Data: map[string]string{"n": "0"},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	clients := []*kubernetes.Clientset{ca, c.b.clientset()}
	var conflicts atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			cms := clients[w%2].CoreV1().ConfigMaps("rmw")
			for range each {
				for attempt := 0; ; attempt++ {
					if attempt == 1000 {
						errs <- errors.New("1000 conflicts in a row")
						return
					}
					cm, err := cms.Get(context.Background(), "counter", metav1.GetOptions{})
					if err != nil {
						errs <- err
						return
					}
					n, _ := strconv.Atoi(cm.Data["n"])
					cm.Data["n"] = strconv.Itoa(n + 1)
					_, err = cms.Update(context.Background(), cm, metav1.UpdateOptions{})
					if apierrors.IsConflict(err) {
						conflicts.Add(1)
						continue
					}
					if err != nil {
						errs <- err
						return
					}
					break
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	cm, err := c.b.clientset().CoreV1().ConfigMaps("rmw").Get(ctx(t), "counter", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if cm.Data["n"] != strconv.Itoa(workers*each) {
		t.Fatalf("counter = %s after %d acknowledged increments (%d conflicts retried): lost updates", cm.Data["n"], workers*each, conflicts.Load())
	}
	c.counter = workers * each
	t.Logf("%d increments from %d workers, %d conflicts retried", workers*each, workers, conflicts.Load())
}

// ack is a write a concurrent writer had acknowledged.
type ack struct {
	name string
	rv   int64
}

func rvOf(t *testing.T, s string) int64 {
	t.Helper()
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		t.Fatalf("resourceVersion %q: %v", s, err)
	}
	return n
}

// pagedList lists 1000 configmaps 100 at a time through b while a writer
// updates them and creates more through a. The pages must form one
// snapshot: every write acknowledged at or below the list's resourceVersion
// shows, none above it does, and the result equals a list at that exact
// resourceVersion.
func (c *cluster) pagedList(t *testing.T) {
	const objects = 1000
	cms := c.a.clientset().CoreV1().ConfigMaps("paged")
	work := make(chan int)
	var wg sync.WaitGroup
	var createErr atomic.Value
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				_, err := cms.Create(context.Background(), &corev1.ConfigMap{
					ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("p-%04d", i)}, Data: map[string]string{"v": "0"},
				}, metav1.CreateOptions{})
				if err != nil {
					createErr.Store(err)
				}
			}
		}()
	}
	start := time.Now()
	for i := range objects {
		work <- i
	}
	close(work)
	wg.Wait()
	if err := createErr.Load(); err != nil {
		t.Fatalf("create: %v", err)
	}
	t.Logf("created %d configmaps with 16 workers in %v", objects, time.Since(start).Round(time.Millisecond))

	// The writer: updates of existing objects and creates of new ones.
	var (
		mu   sync.Mutex
		acks []ack
		stop = make(chan struct{})
		done = make(chan error, 1)
		snap atomic.Int64 // the list's revision once known
	)
	go func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			var got *corev1.ConfigMap
			var err error
			if i%2 == 0 {
				got, err = cms.Create(context.Background(), &corev1.ConfigMap{
					ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("late-%d", i)}, Data: map[string]string{"v": "0"},
				}, metav1.CreateOptions{})
			} else {
				var cm *corev1.ConfigMap
				cm, err = cms.Get(context.Background(), fmt.Sprintf("p-%04d", (i*37)%objects), metav1.GetOptions{})
				if err == nil {
					cm.Data["v"] = strconv.Itoa(i)
					got, err = cms.Update(context.Background(), cm, metav1.UpdateOptions{})
				}
			}
			if err != nil {
				done <- err
				return
			}
			rv, err := strconv.ParseInt(got.ResourceVersion, 10, 64)
			if err != nil {
				done <- fmt.Errorf("resourceVersion %q: %w", got.ResourceVersion, err)
				return
			}
			mu.Lock()
			acks = append(acks, ack{got.Name, rv})
			mu.Unlock()
		}
	}()
	// Let the writer get going before the first page.
	if err := eventually(time.Minute, func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(acks) < 5 {
			return fmt.Errorf("%d writes", len(acks))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	lb := c.b.clientset().CoreV1().ConfigMaps("paged")
	items := map[string]int64{}
	var listRV string
	pages := 0
	opts := metav1.ListOptions{Limit: 100}
	for {
		l, err := lb.List(ctx(t), opts)
		if err != nil {
			t.Fatalf("page %d: %v", pages, err)
		}
		pages++
		if listRV == "" {
			listRV = l.ResourceVersion
			snap.Store(rvOf(t, listRV))
		} else if l.ResourceVersion != listRV {
			t.Fatalf("page %d has resourceVersion %s, the first page %s", pages, l.ResourceVersion, listRV)
		}
		for _, it := range l.Items {
			if _, dup := items[it.Name]; dup {
				t.Fatalf("%s listed twice", it.Name)
			}
			items[it.Name] = rvOf(t, it.ResourceVersion)
		}
		if l.Continue == "" {
			break
		}
		opts.Continue = l.Continue
	}
	// Keep writing until some writes are known to be past the snapshot, so
	// the check below always covers both sides.
	if err := eventually(time.Minute, func() error {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, a := range acks {
			if a.rv > snap.Load() {
				n++
			}
		}
		if n < 3 {
			return fmt.Errorf("%d writes after the list's revision", n)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	close(stop)
	if err := <-done; err != nil {
		t.Fatalf("writer: %v", err)
	}

	s := snap.Load()
	late := 0
	for name, rv := range items {
		if rv > s {
			t.Errorf("%s has resourceVersion %d, above the list's %d", name, rv, s)
		}
	}
	before, after := 0, 0
	for _, a := range acks {
		got, listed := items[a.name]
		if a.rv <= s {
			before++
			if !listed || got < a.rv {
				t.Errorf("write %s@%d, acknowledged at or below the list's revision %d, missing (listed %v at %d)", a.name, a.rv, s, listed, got)
			}
			if strings.HasPrefix(a.name, "late-") {
				late++
			}
		} else {
			after++
			if listed && got >= a.rv {
				t.Errorf("write %s@%d, above the list's revision %d, is in the list", a.name, a.rv, s)
			}
		}
	}
	if len(items) != objects+late {
		t.Errorf("paged list has %d objects, want %d + %d created before its revision", len(items), objects, late)
	}
	// The same revision read in one piece.
	whole, err := lb.List(ctx(t), metav1.ListOptions{ResourceVersion: listRV, ResourceVersionMatch: metav1.ResourceVersionMatchExact})
	if err != nil {
		t.Fatalf("list at exact resourceVersion %s: %v", listRV, err)
	}
	exact := map[string]int64{}
	for _, it := range whole.Items {
		exact[it.Name] = rvOf(t, it.ResourceVersion)
	}
	if !mapsEqual(items, exact) {
		t.Errorf("paged list (%d objects) differs from the list at its exact resourceVersion %s (%d objects)", len(items), listRV, len(exact))
	}
	t.Logf("%d pages, %d objects at revision %d; %d concurrent writes below it, %d above", pages, len(items), s, before, after)

	// kubectl pages too (--chunk-size); nothing writes now.
	total := 0
	mu.Lock()
	for _, a := range acks {
		if strings.HasPrefix(a.name, "late-") {
			total++
		}
	}
	mu.Unlock()
	out := c.b.mustKubectl(t, nil, "-n", "paged", "get", "configmaps", "--chunk-size=50", "-o", "name")
	if n := strings.Count(out, "configmap/"); n != objects+total {
		t.Errorf("kubectl get --chunk-size=50 listed %d configmaps, want %d", n, objects+total)
	}
	c.paged = objects + total
}

func mapsEqual(a, b map[string]int64) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// exactList lists at a resourceVersion from before a delete, an update and
// a create, and must see the state of then.
func (c *cluster) exactList(t *testing.T) {
	ca, cb := c.a.clientset().CoreV1().ConfigMaps("exact"), c.b.clientset().CoreV1().ConfigMaps("exact")
	for i := 1; i <= 5; i++ {
		if _, err := ca.Create(ctx(t), &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("x%d", i)}, Data: map[string]string{"v": "orig"}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	l, err := ca.List(ctx(t), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r1 := l.ResourceVersion
	if err := ca.Delete(ctx(t), "x1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	x2, err := ca.Get(ctx(t), "x2", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	x2.Data["v"] = "new"
	if _, err := ca.Update(ctx(t), x2, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := ca.Create(ctx(t), &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "x6"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	old, err := cb.List(ctx(t), metav1.ListOptions{ResourceVersion: r1, ResourceVersionMatch: metav1.ResourceVersionMatchExact})
	if err != nil {
		t.Fatalf("list at exact resourceVersion %s through %s: %v", r1, c.b.name, err)
	}
	var got []string
	for _, it := range old.Items {
		got = append(got, it.Name+"="+it.Data["v"])
	}
	want := []string{"x1=orig", "x2=orig", "x3=orig", "x4=orig", "x5=orig"}
	if !slices.Equal(got, want) || old.ResourceVersion != r1 {
		t.Fatalf("list at exact resourceVersion %s: %v at %s, want %v", r1, got, old.ResourceVersion, want)
	}
	now, err := cb.List(ctx(t), metav1.ListOptions{ResourceVersion: r1, ResourceVersionMatch: metav1.ResourceVersionMatchNotOlderThan})
	if err != nil {
		t.Fatal(err)
	}
	if rvOf(t, now.ResourceVersion) < rvOf(t, r1) {
		t.Fatalf("NotOlderThan %s answered at %s", r1, now.ResourceVersion)
	}
	c.oldRV = r1
}

// consistentList writes through a and at once lists through b with no
// resourceVersion (a consistent read): the write must show, and b must
// serve those lists from its watch cache (ConsistentListFromCache), as its
// apiserver_watch_cache_consistent_read_total metric counts.
func (c *cluster) consistentList(t *testing.T) {
	const rounds = 20
	labels := []string{`resource="configmaps"`, `success="true"`, `fallback="false"`}
	before := c.b.metric(t, "apiserver_watch_cache_consistent_read_total", labels...)
	ca, cb := c.a.clientset().CoreV1().ConfigMaps("e2e"), c.b.clientset().CoreV1().ConfigMaps("e2e")
	for i := range rounds {
		name := fmt.Sprintf("c-%d", i)
		created, err := ca.Create(ctx(t), &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		l, err := cb.List(ctx(t), metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.ContainsFunc(l.Items, func(cm corev1.ConfigMap) bool { return cm.Name == name }) {
			t.Fatalf("consistent list through %s at %s lacks %s, created through %s at %s", c.b.name, l.ResourceVersion, name, c.a.name, created.ResourceVersion)
		}
		if rvOf(t, l.ResourceVersion) < rvOf(t, created.ResourceVersion) {
			t.Fatalf("consistent list at %s, older than the write it follows (%s)", l.ResourceVersion, created.ResourceVersion)
		}
	}
	// A consistent read falls back to storage when the cache has not caught
	// up within 3 s; a loaded test machine may see that now and then, a
	// broken RequestProgress every time.
	after := c.b.metric(t, "apiserver_watch_cache_consistent_read_total", labels...)
	fallback := c.b.metric(t, "apiserver_watch_cache_consistent_read_total", `resource="configmaps"`, `fallback="true"`)
	if after-before < rounds/2 {
		t.Fatalf("%v of %d consistent lists served from the watch cache (fallbacks to storage so far: %v)", after-before, rounds, fallback)
	}
	t.Logf("%v of %d consistent lists served from the watch cache (fallbacks to storage so far: %v)", after-before, rounds, fallback)
}

// op is one write of the watch scenario and what its event must be.
type op struct {
	typ  watch.EventType
	name string
	rv   int64 // 0 for deletes, whose revision the client is not told
}

// watchFromRV starts a watch through b from a resourceVersion after half
// of a sequence of writes through a; it must get every write after that
// resourceVersion, in order, with the acknowledged resourceVersions.
func (c *cluster) watchFromRV(t *testing.T) {
	ca := c.a.clientset().CoreV1().ConfigMaps("watch")
	w0, err := ca.Create(ctx(t), &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "w0"}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var ops []op
	write := func(i int) {
		name := fmt.Sprintf("w%d", i/3+1)
		switch i % 3 {
		case 0:
			cm, err := ca.Create(ctx(t), &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: map[string]string{"v": "1"}}, metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			ops = append(ops, op{watch.Added, name, rvOf(t, cm.ResourceVersion)})
		case 1:
			cm, err := ca.Get(ctx(t), name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			cm.Data["v"] = "2"
			cm, err = ca.Update(ctx(t), cm, metav1.UpdateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			ops = append(ops, op{watch.Modified, name, rvOf(t, cm.ResourceVersion)})
		case 2:
			if err := ca.Delete(ctx(t), name, metav1.DeleteOptions{}); err != nil {
				t.Fatal(err)
			}
			ops = append(ops, op{watch.Deleted, name, 0})
		}
	}
	const total = 48
	for i := range total / 2 {
		write(i)
	}
	w, err := c.b.clientset().CoreV1().ConfigMaps("watch").Watch(ctx(t), metav1.ListOptions{ResourceVersion: w0.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	for i := total / 2; i < total; i++ {
		write(i)
	}
	timeout := time.After(time.Minute)
	var last int64
	for i := range ops {
		var ev watch.Event
		select {
		case ev = <-w.ResultChan():
		case <-timeout:
			t.Fatalf("watch from %s through %s: %d of %d events after a minute", w0.ResourceVersion, c.b.name, i, len(ops))
		}
		cm, ok := ev.Object.(*corev1.ConfigMap)
		if !ok {
			t.Fatalf("event %d: %s %T %v", i, ev.Type, ev.Object, ev.Object)
		}
		rv := rvOf(t, cm.ResourceVersion)
		want := ops[i]
		if ev.Type != want.typ || cm.Name != want.name || (want.rv != 0 && rv != want.rv) || rv <= last {
			t.Fatalf("event %d: %s %s@%d, want %s %s@%d (previous event at %d)", i, ev.Type, cm.Name, rv, want.typ, want.name, want.rv, last)
		}
		last = rv
	}
	select {
	case ev := <-w.ResultChan():
		t.Fatalf("extra event %s %v", ev.Type, ev.Object)
	case <-time.After(500 * time.Millisecond):
	}
}

// eventTTL creates an Event; the apiserver stores it with an etcd lease of
// --event-ttl (5 s), and kvsql must delete it when the lease expires.
func (c *cluster) eventTTL(t *testing.T) {
	ev := &corev1.Event{
		ObjectMeta:     metav1.ObjectMeta{Name: "ev1"},
		InvolvedObject: corev1.ObjectReference{Kind: "ConfigMap", Namespace: "e2e", Name: "cm1", APIVersion: "v1"},
		Reason:         "Testing",
		Message:        "expires with its lease",
		Type:           corev1.EventTypeNormal,
		FirstTimestamp: metav1.Now(),
		LastTimestamp:  metav1.Now(),
		Count:          1,
		Source:         corev1.EventSource{Component: "kvsql-e2e"},
	}
	start := time.Now()
	if _, err := c.a.clientset().CoreV1().Events("e2e").Create(ctx(t), ev, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	resp, err := c.etcd.Get(ctx(t), "/registry/events/e2e/ev1")
	if err != nil || len(resp.Kvs) != 1 || resp.Kvs[0].Lease == 0 {
		t.Fatalf("kvsql key /registry/events/e2e/ev1: %v %v, want one key with a lease", resp, err)
	}
	cb := c.b.clientset().CoreV1().Events("e2e")
	if _, err := cb.Get(ctx(t), "ev1", metav1.GetOptions{}); err != nil {
		t.Fatalf("event through %s: %v", c.b.name, err)
	}
	if err := eventually(2*time.Minute, func() error {
		_, err := cb.Get(ctx(t), "ev1", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("event still there: %w", err)
	}); err != nil {
		t.Fatal(err)
	}
	t.Logf("event gone through %s %v after its creation (--event-ttl=5s)", c.b.name, time.Since(start).Round(100*time.Millisecond))
}

// latency measures write-to-watch-event time: 200 creates through a
// ($KVSQL_E2E_LATENCY_CREATES to change), each awaited on a watch through a
// and (for a pair) through b. It logs p50/p99; docs/benchmarks.md records
// them. Timing is not asserted.
func (c *cluster) latency(t *testing.T) {
	n := 200
	if v, err := strconv.Atoi(os.Getenv("KVSQL_E2E_LATENCY_CREATES")); err == nil && v >= 100 {
		n = v
	}
	ca := c.a.clientset().CoreV1().ConfigMaps("lat")
	l, err := ca.List(ctx(t), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	type arrival struct {
		ev watch.Event
		at time.Time
	}
	type watcher struct {
		name string
		got  chan arrival
		lat  []time.Duration
	}
	var ws []*watcher
	for _, a := range c.apiservers() {
		w, err := a.clientset().CoreV1().ConfigMaps("lat").Watch(ctx(t), metav1.ListOptions{ResourceVersion: l.ResourceVersion})
		if err != nil {
			t.Fatal(err)
		}
		defer w.Stop()
		// Each watch is read by its own goroutine, which stamps the
		// arrival, so one watch's delay does not show in another's figure.
		got := make(chan arrival, n)
		go func() {
			for ev := range w.ResultChan() {
				got <- arrival{ev, time.Now()}
			}
		}()
		ws = append(ws, &watcher{name: a.name, got: got})
	}
	for i := range n {
		name := fmt.Sprintf("l-%d", i)
		start := time.Now()
		if _, err := ca.Create(ctx(t), &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		for _, w := range ws {
			select {
			case ar := <-w.got:
				cm, ok := ar.ev.Object.(*corev1.ConfigMap)
				if !ok || ar.ev.Type != watch.Added || cm.Name != name {
					t.Fatalf("watch through %s: %s %v, want ADDED %s", w.name, ar.ev.Type, ar.ev.Object, name)
				}
				w.lat = append(w.lat, ar.at.Sub(start))
			case <-time.After(30 * time.Second):
				t.Fatalf("watch through %s: no event for %s in 30 s", w.name, name)
			}
		}
	}
	for _, w := range ws {
		slices.Sort(w.lat)
		t.Logf("%s: create through %s -> event through %s: p50 %.2f ms, p99 %.2f ms, max %.2f ms (%d creates)",
			c.name, c.a.name, w.name, ms(w.lat[n/2]), ms(w.lat[n*99/100]), ms(w.lat[n-1]), n)
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// restart stops apiserver a and starts it again with its compactor on; the
// data must be as it was.
func (c *cluster) restart(t *testing.T) {
	ca := c.a.clientset().CoreV1().ConfigMaps("e2e")
	cm1, err := ca.Get(ctx(t), "cm1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c.cm1RV = cm1.ResourceVersion
	start := time.Now()
	c.a.restart(compactingFlags...)
	t.Logf("kube-apiserver %s restarted and ready in %v", c.a.name, time.Since(start).Round(100*time.Millisecond))
	ca = c.a.clientset().CoreV1().ConfigMaps("e2e")
	got, err := ca.Get(ctx(t), "cm1", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got.ResourceVersion != c.cm1RV || got.Data["greeting"] != "hello" {
		t.Fatalf("cm1 after restart: %v at %s, want greeting=hello at %s", got.Data, got.ResourceVersion, c.cm1RV)
	}
	counter, err := c.a.clientset().CoreV1().ConfigMaps("rmw").Get(ctx(t), "counter", metav1.GetOptions{})
	if err != nil || counter.Data["n"] != strconv.Itoa(c.counter) {
		t.Fatalf("counter after restart: %v %v, want %d", counter.Data, err, c.counter)
	}
	l, err := c.a.clientset().CoreV1().ConfigMaps("paged").List(ctx(t), metav1.ListOptions{})
	if err != nil || len(l.Items) != c.paged {
		t.Fatalf("paged namespace after restart: %d objects (%v), want %d", len(l.Items), err, c.paged)
	}
	out := c.a.mustKubectl(t, nil, "-n", "e2e", "get", "widgets", "-o", "jsonpath={range .items[*]}{.metadata.name}={.spec.size},{.status.ready};{end}")
	if out != "w1=2,true;" {
		t.Fatalf("widgets after restart: %q", out)
	}
}

// compaction waits for the restarted apiserver's compactor to compact
// kvsql past oldRV, then asks the restarted apiserver for oldRV: a list at
// that exact resourceVersion (which its watch cache, filled after the
// restart, hands to storage) and a watch from it must both get 410 Gone.
// The other apiserver of a pair is not asked: its watch cache still holds
// that history and serves it, as it would on etcd.
func (c *cluster) compaction(t *testing.T) {
	old := rvOf(t, c.oldRV)
	if err := eventually(2*time.Minute, func() error {
		_, err := c.etcd.Get(ctx(t), "/registry/configmaps/exact/x1", clientv3.WithRev(old))
		if errors.Is(err, rpctypes.ErrCompacted) {
			return nil
		}
		return fmt.Errorf("read at revision %d: %w", old, err)
	}); err != nil {
		t.Fatalf("the apiserver's compactor (--etcd-compaction-interval=2s) did not compact past %d: %v", old, err)
	}
	for _, a := range []*apiServer{c.a} {
		cms := a.clientset().CoreV1().ConfigMaps("exact")
		_, err := cms.List(ctx(t), metav1.ListOptions{ResourceVersion: c.oldRV, ResourceVersionMatch: metav1.ResourceVersionMatchExact})
		if !apierrors.IsResourceExpired(err) && !apierrors.IsGone(err) || statusCode(err) != 410 {
			t.Errorf("list at compacted resourceVersion %s through %s: %v (code %d), want 410 Gone", c.oldRV, a.name, err, statusCode(err))
		}
		w, err := cms.Watch(ctx(t), metav1.ListOptions{ResourceVersion: c.oldRV})
		if err != nil {
			if statusCode(err) != 410 {
				t.Errorf("watch from compacted resourceVersion %s through %s: %v, want 410 Gone", c.oldRV, a.name, err)
			}
			continue
		}
		select {
		case ev := <-w.ResultChan():
			if ev.Type != watch.Error || statusCode(apierrors.FromObject(ev.Object)) != 410 {
				t.Errorf("watch from compacted resourceVersion %s through %s: %s %v, want an ERROR event with 410 Gone", c.oldRV, a.name, ev.Type, ev.Object)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("watch from compacted resourceVersion %s through %s: nothing in 30 s, want 410 Gone", c.oldRV, a.name)
		}
		w.Stop()
	}
}

// healthThroughout checks what the health monitors saw: /readyz and /livez
// answered 200 with the etcd checks passing at every poll, restart aside.
func (c *cluster) healthThroughout(t *testing.T) {
	for _, a := range c.apiservers() {
		checks, fails := a.monitor.result()
		if checks == 0 {
			t.Errorf("%s: no health checks ran", a.name)
		}
		for _, f := range fails {
			t.Errorf("%s: %s", a.name, f)
		}
		t.Logf("%s: %d /readyz and /livez checks, %d failed", a.name, checks, len(fails))
	}
}
