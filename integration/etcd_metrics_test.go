package integration

import (
	"context"
	"net/http"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// scrapeMetrics reads a kvsql process's /metrics.
func scrapeMetrics(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return mfs
}

// sample returns the value of the series of family name whose labels
// include want (a counter, gauge or untyped value, or a histogram's
// count); found is false if there is no such series.
func sample(mfs map[string]*dto.MetricFamily, name string, want map[string]string) (v float64, found bool) {
	mf := mfs[name]
	if mf == nil {
		return 0, false
	}
next:
	for _, m := range mf.Metric {
		for k, wv := range want {
			ok := false
			for _, l := range m.Label {
				if l.GetName() == k && l.GetValue() == wv {
					ok = true
				}
			}
			if !ok {
				continue next
			}
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		case m.Histogram != nil:
			return float64(m.Histogram.GetSampleCount()), true
		case m.Untyped != nil:
			return m.Untyped.GetValue(), true
		}
	}
	return 0, false
}

// etcdMetricNames are the etcd metrics kvsql exports with etcd's names.
var etcdMetricNames = []string{
	"etcd_server_has_leader", "etcd_server_is_leader", "etcd_server_leader_changes_seen_total",
	"etcd_server_proposals_committed_total", "etcd_server_proposals_applied_total",
	"etcd_server_proposals_pending", "etcd_server_proposals_failed_total",
	"etcd_server_quota_backend_bytes", "etcd_server_slow_apply_total", "etcd_server_version", "etcd_cluster_version",
	"etcd_disk_backend_commit_duration_seconds", "etcd_disk_wal_fsync_duration_seconds",
	"etcd_mvcc_db_total_size_in_bytes", "etcd_mvcc_db_total_size_in_use_in_bytes",
	"etcd_mvcc_put_total", "etcd_mvcc_delete_total", "etcd_mvcc_range_total", "etcd_mvcc_txn_total",
	"etcd_debugging_mvcc_keys_total", "etcd_debugging_mvcc_watcher_total", "etcd_debugging_mvcc_watch_stream_total",
	"grpc_server_started_total", "grpc_server_handled_total", "grpc_server_handling_seconds",
	"kvsql_watch_revision", "kvsql_watch_lag_revisions", "kvsql_notify_reconnects_total",
	"kvsql_write_batch_requests", "kvsql_write_forwards_total",
	"kvsql_db_pool_max_connections", "kvsql_db_pool_in_use_connections",
}

// TestEtcdMetrics: on every backend, /metrics has etcd's metrics under
// etcd's names (and gRPC's standard ones), and they move as etcd's do:
// a put, a range, a delete and a txn each count once, each write is a
// committed proposal in a timed group commit, the key count follows the
// keys, and the one instance leads.
func TestEtcdMetrics(t *testing.T) {
	t.Parallel()
	type start func(t *testing.T, metricsAddr string) *kvsqlProc
	cases := []struct {
		name  string
		start start
	}{{"sqlite", func(t *testing.T, addr string) *kvsqlProc {
		return startKVSQLProc(t, "--listen-metrics-urls=http://"+addr)
	}}}
	for _, se := range sharedEndpoints {
		cases = append(cases, struct {
			name  string
			start start
		}{se.name, func(t *testing.T, addr string) *kvsqlProc {
			return startKVSQLProc(t, "--endpoint="+se.endpoint(t), "--listen-metrics-urls=http://"+addr)
		}})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			addr := procFreeAddr(t)
			p := tc.start(t, addr)
			c := p.client(t)
			pollUntil(t, 20*time.Second, "the instance reports that it leads", func() bool {
				v, _ := sample(scrapeMetrics(t, addr), "etcd_server_is_leader", nil)
				return v == 1
			})
			before := scrapeMetrics(t, addr)
			for _, name := range etcdMetricNames {
				if before[name] == nil {
					t.Errorf("/metrics lacks %s", name)
				}
			}
			wch := c.Watch(ctx, "m/", clientv3.WithPrefix())
			if _, err := c.Put(ctx, "m/a", "1"); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Put(ctx, "m/b", "2"); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Get(ctx, "m/", clientv3.WithPrefix()); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Delete(ctx, "m/b"); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Txn(ctx).Then(clientv3.OpPut("m/c", "3"), clientv3.OpGet("m/a")).Commit(); err != nil {
				t.Fatal(err)
			}
			for seen := 0; seen < 4; {
				select {
				case wr := <-wch:
					seen += len(wr.Events)
				case <-ctx.Done():
					t.Fatal("watch events did not arrive")
				}
			}
			var after map[string]*dto.MetricFamily
			pollUntil(t, 20*time.Second, "the key count reaches the live keys (m/a, m/c)", func() bool {
				after = scrapeMetrics(t, addr)
				v, _ := sample(after, "etcd_debugging_mvcc_keys_total", nil)
				return v == 2
			})
			delta := func(name string, labels map[string]string) float64 {
				a, ok := sample(after, name, labels)
				if !ok {
					t.Errorf("no series %s%v", name, labels)
				}
				b, _ := sample(before, name, labels)
				return a - b
			}
			for _, want := range []struct {
				name   string
				labels map[string]string
				min    float64
				max    float64
			}{
				{"etcd_mvcc_put_total", nil, 3, 3},   // two Puts and the txn's
				{"etcd_mvcc_range_total", nil, 2, 2}, // the Get and the txn's
				{"etcd_mvcc_delete_total", nil, 1, 1},
				{"etcd_mvcc_txn_total", nil, 1, 1},
				{"etcd_server_proposals_committed_total", nil, 4, 4},
				{"etcd_server_proposals_applied_total", nil, 4, 4},
				{"grpc_server_handled_total", map[string]string{"grpc_method": "Put", "grpc_code": "OK"}, 2, 2},
				{"grpc_server_started_total", map[string]string{"grpc_method": "Range"}, 1, 1},
				{"grpc_server_handling_seconds", map[string]string{"grpc_method": "DeleteRange"}, 1, 1},
				{"etcd_disk_backend_commit_duration_seconds", nil, 1, 4},
				{"etcd_disk_wal_fsync_duration_seconds", nil, 1, 4},
			} {
				if d := delta(want.name, want.labels); d < want.min || d > want.max {
					t.Errorf("%s%v moved by %v, want %v..%v", want.name, want.labels, d, want.min, want.max)
				}
			}
			for name, want := range map[string]float64{
				"etcd_server_has_leader":            1,
				"etcd_server_is_leader":             1,
				"etcd_server_proposals_pending":     0,
				"etcd_debugging_mvcc_watcher_total": 1,
				"etcd_server_quota_backend_bytes":   2 << 30,
			} {
				if v, _ := sample(after, name, nil); v != want {
					t.Errorf("%s = %v, want %v", name, v, want)
				}
			}
			if v, _ := sample(after, "etcd_server_leader_changes_seen_total", nil); v < 1 {
				t.Errorf("etcd_server_leader_changes_seen_total = %v: the first leader counts, as in etcd", v)
			}
			total, _ := sample(after, "etcd_mvcc_db_total_size_in_bytes", nil)
			inUse, _ := sample(after, "etcd_mvcc_db_total_size_in_use_in_bytes", nil)
			if total <= 0 || inUse <= 0 || inUse > total {
				t.Errorf("db size %v, in use %v: want 0 < in use <= total", total, inUse)
			}
			if v, ok := sample(after, "kvsql_db_pool_max_connections", nil); !ok || v < 1 {
				t.Errorf("kvsql_db_pool_max_connections = %v (found %v)", v, ok)
			}
		})
	}
}

// TestEtcdLeaderMetricsTwoInstances: with two instances on one database,
// both see a leader, exactly the one holding the leader lock says it is
// it, and when it stops the other takes over and counts a leader change.
func TestEtcdLeaderMetricsTwoInstances(t *testing.T) {
	t.Parallel()
	for _, se := range sharedEndpoints {
		t.Run(se.name, func(t *testing.T) {
			t.Parallel()
			ep := se.endpoint(t)
			ma, mb := procFreeAddr(t), procFreeAddr(t)
			a := startKVSQLProc(t, "--endpoint="+ep, "--name=a", "--listen-metrics-urls=http://"+ma)
			pollUntil(t, 20*time.Second, "A takes the leader lock", func() bool { return se.leaderHeld(t, ep) })
			startKVSQLProc(t, "--endpoint="+ep, "--name=b", "--listen-metrics-urls=http://"+mb)
			gauge := func(addr, name string) float64 {
				v, _ := sample(scrapeMetrics(t, addr), name, nil)
				return v
			}
			pollUntil(t, 20*time.Second, "both instances see A as leader", func() bool {
				return gauge(ma, "etcd_server_has_leader") == 1 && gauge(mb, "etcd_server_has_leader") == 1 &&
					gauge(ma, "etcd_server_is_leader") == 1 && gauge(mb, "etcd_server_is_leader") == 0
			})
			changesB := gauge(mb, "etcd_server_leader_changes_seen_total")
			if changesB < 1 {
				t.Errorf("B: etcd_server_leader_changes_seen_total = %v, want >= 1 (it saw A become leader)", changesB)
			}
			a.signal(syscall.SIGTERM)
			if code, _ := a.wait(30 * time.Second); code != 0 {
				t.Fatalf("A exited with %d", code)
			}
			pollUntil(t, 30*time.Second, "B takes over and says so", func() bool {
				return gauge(mb, "etcd_server_is_leader") == 1 && gauge(mb, "etcd_server_has_leader") == 1
			})
			if got := gauge(mb, "etcd_server_leader_changes_seen_total"); got <= changesB {
				t.Errorf("B: leader changes %v after taking over, was %v: want more", got, changesB)
			}
		})
	}
}
