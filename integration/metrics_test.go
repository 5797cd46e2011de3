package integration

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestMetricsEndpoint: with --listen-metrics-urls, /metrics serves the
// request, group-commit, watch and revision metrics, and they move; the
// client URL serves the same metrics.
func TestMetricsEndpoint(t *testing.T) {
	t.Parallel()
	addr := procFreeAddr(t)
	p := startKVSQLProc(t, "--listen-metrics-urls=http://"+addr)
	c := p.client(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	wch := c.Watch(ctx, "m/", clientv3.WithPrefix())
	var rev int64
	for range 5 {
		resp, err := c.Put(ctx, "m/k", "v")
		if err != nil {
			t.Fatal(err)
		}
		rev = resp.Header.Revision
	}
	for seen := 0; seen < 5; {
		select {
		case wr := <-wch:
			seen += len(wr.Events)
		case <-ctx.Done():
			t.Fatal("watch events did not arrive")
		}
	}
	scrape := func(addr string) string {
		resp, err := http.Get("http://" + addr + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET /metrics: %d %v", resp.StatusCode, err)
		}
		return string(b)
	}
	// The client URL serves the same registry, as etcd's does.
	for _, body := range []string{scrape(addr), scrape(p.Addr)} {
		for _, want := range []string{
			`grpc_server_handled_total{grpc_code="OK",grpc_method="Put",grpc_service="etcdserverpb.KV",grpc_type="unary"} 5`,
			`etcd_debugging_mvcc_watcher_total 1`,
			`kvsql_watch_revision ` + strconv.FormatInt(rev, 10),
			`kvsql_write_batch_requests_count`,
			`etcd_disk_backend_commit_duration_seconds_bucket`,
			`go_goroutines`,
		} {
			if !strings.Contains(body, want) {
				t.Errorf("/metrics lacks %q", want)
			}
		}
	}
}

// TestPprofEndpoint: --enable-pprof adds Go's profiles to the metrics
// listener, but not the command line; without it they are not served, and without a metrics listener
// the flag is refused with a message that names the missing one.
func TestPprofEndpoint(t *testing.T) {
	t.Parallel()
	get := func(addr, path string) int {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	on := procFreeAddr(t)
	startKVSQLProc(t, "--listen-metrics-urls=http://"+on, "--enable-pprof")
	for _, path := range []string{"/debug/pprof/", "/debug/pprof/goroutine?debug=1", "/debug/pprof/profile?seconds=1"} {
		if code := get(on, path); code != http.StatusOK {
			t.Errorf("with --enable-pprof, GET %s: %d", path, code)
		}
	}
	// The command line may hold --endpoint's password (TestSecretsNeverShown).
	if code := get(on, "/debug/pprof/cmdline"); code != http.StatusNotFound {
		t.Errorf("GET /debug/pprof/cmdline: %d, want 404", code)
	}
	off := procFreeAddr(t)
	startKVSQLProc(t, "--listen-metrics-urls=http://"+off)
	if code := get(off, "/debug/pprof/"); code != http.StatusNotFound {
		t.Errorf("without --enable-pprof, GET /debug/pprof/: %d, want 404", code)
	}
	_, stderr, code := runKVSQL(t, nil, "--enable-pprof")
	if code == 0 || !strings.Contains(stderr, "--listen-metrics-urls") {
		t.Errorf("--enable-pprof alone: exit %d, stderr %q; want a refusal naming --listen-metrics-urls", code, stderr)
	}
}
