package integration

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	promapi "github.com/prometheus/client_golang/api"
	promv1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// mixinAlerts is the etcd mixin's alerting rules, written out (see the
// file's header).
const mixinAlerts = "testdata/etcd-mixin-alerts.yaml"

// prometheusBinary finds Debian's prometheus (scripts/test-deps.sh
// installs it): the test skips without it, and fails under CI=true.
func prometheusBinary(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("prometheus")
	if err != nil {
		skipOrFail(t, fmt.Errorf("prometheus not found (Debian: apt-get install prometheus; scripts/test-deps.sh does it as root): %w", err))
	}
	return p
}

// startPrometheus runs a Prometheus that scrapes each job's targets every
// second and evaluates rules every second, until the test ends.
func startPrometheus(t *testing.T, bin string, jobs map[string][]string, rules string) promv1.API {
	t.Helper()
	dir := t.TempDir()
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - %s\nscrape_configs:\n", rules)
	names := make([]string, 0, len(jobs))
	for name := range jobs {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		fmt.Fprintf(&cfg, "  - job_name: %s\n    static_configs:\n      - targets: ['%s']\n", name, strings.Join(jobs[name], "', '"))
	}
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := procFreeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "--config.file="+cfgPath, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--log.level=warn")
	out := newSyncBuffer()
	cmd.Stdout, cmd.Stderr = out, out
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("prometheus output:\n%s", out.String())
		}
	})
	pollUntil(t, 60*time.Second, "prometheus is ready", func() bool {
		resp, err := http.Get("http://" + addr + "/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	c, err := promapi.NewClient(promapi.Config{Address: "http://" + addr})
	if err != nil {
		t.Fatal(err)
	}
	return promv1.NewAPI(c)
}

// query runs an instant query and returns the job labels of its series.
func query(t *testing.T, api promv1.API, q string) (map[string]bool, model.Vector) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	v, _, err := api.Query(ctx, q, time.Now())
	if err != nil {
		t.Fatalf("query %s: %v", q, err)
	}
	vec, ok := v.(model.Vector)
	if !ok {
		t.Fatalf("query %s: %s, want an instant vector", q, v.Type())
	}
	jobs := map[string]bool{}
	for _, s := range vec {
		jobs[string(s.Metric["job"])] = true
	}
	return jobs, vec
}

// TestEtcdMixinAlerts evaluates the etcd mixin's alerts (the rules
// kube-prometheus and managed Prometheus rule sets ship) with a real
// Prometheus scraping live kvsql instances: one on SQLite, a pair on
// PostgreSQL, and one on SQLite whose quota is far below its size. Every
// rule must evaluate without error; every metric an alert reads must be
// there for every job (each rule's kvsql_probe must return a series per
// job), except those the fixture names as absent and why; nothing fires
// on the healthy instances, and the two database-quota alerts do fire on
// the one over its quota.
func TestEtcdMixinAlerts(t *testing.T) {
	t.Parallel()
	bin := prometheusBinary(t)
	rules, err := filepath.Abs(mixinAlerts)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(filepath.Join(filepath.Dir(bin), "promtool"), "check", "rules", rules).CombinedOutput(); err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	jobs := map[string][]string{}
	var clients []*clientv3.Client
	addProc := func(job string, args ...string) *kvsqlProc {
		m := procFreeAddr(t)
		p := startKVSQLProc(t, append(args, "--listen-metrics-urls=http://"+m)...)
		jobs[job] = append(jobs[job], m)
		clients = append(clients, p.client(t))
		return p
	}
	addProc("etcd-sqlite")
	pgEndpoint := sharedEndpoints[0].endpoint(t)
	addProc("etcd-postgres", "--endpoint="+pgEndpoint, "--name=a")
	pollUntil(t, 20*time.Second, "the first PostgreSQL instance leads", func() bool { return sharedEndpoints[0].leaderHeld(t, pgEndpoint) })
	addProc("etcd-postgres", "--endpoint="+pgEndpoint, "--name=b")
	addProc("etcd-sqlite-over-quota", "--quota-backend-bytes=4096")
	for i, c := range clients {
		if _, err := c.Put(ctx, "mixin/k", "v"); err != nil && !(i == len(clients)-1 && isNoSpace(err)) {
			t.Fatalf("client %d: %v", i, err)
		}
		if _, err := c.Get(ctx, "mixin/", clientv3.WithPrefix()); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Delete(ctx, "mixin/k"); err != nil {
			t.Fatal(err)
		}
	}

	api := startPrometheus(t, bin, jobs, rules)
	all, targets := map[string]bool{}, 0
	for job, addrs := range jobs {
		all[job] = true
		targets += len(addrs)
	}
	pollUntil(t, 60*time.Second, "prometheus has scraped every instance 5 times", func() bool {
		_, vec := query(t, api, `count_over_time(up{job=~".*etcd.*"}[1m]) >= 5`)
		return len(vec) == targets
	})
	var res promv1.RulesResult
	pollUntil(t, 30*time.Second, "every rule has been evaluated", func() bool {
		res, err = api.Rules(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, g := range res.Groups {
			for _, r := range g.Rules {
				if ar, ok := r.(promv1.AlertingRule); ok && ar.Health == promv1.RuleHealthUnknown {
					return false
				}
			}
		}
		return true
	})
	n := 0
	for _, g := range res.Groups {
		for _, r := range g.Rules {
			ar, ok := r.(promv1.AlertingRule)
			if !ok {
				continue
			}
			n++
			if ar.Health != promv1.RuleHealthGood {
				t.Errorf("%s: health %s: %s", ar.Name, ar.Health, ar.LastError)
			}
			got, vec := query(t, api, ar.Query)
			switch ar.Name {
			case "etcdDatabaseQuotaLowSpace", "etcdExcessiveDatabaseGrowth":
				if len(got) != 1 || !got["etcd-sqlite-over-quota"] {
					t.Errorf("%s: fires for %v, want exactly the instance over its quota", ar.Name, got)
				}
			default:
				if len(vec) > 0 {
					t.Errorf("%s fires on healthy kvsql: %v", ar.Name, vec)
				}
			}
			probe, absent := ar.Annotations["kvsql_probe"], ar.Annotations["kvsql_absent"]
			if probe == "" {
				if absent == "" {
					t.Errorf("%s: neither a kvsql_probe nor a kvsql_absent reason", ar.Name)
				}
				t.Logf("%s: reads a metric kvsql does not export: %s", ar.Name, absent)
				continue
			}
			got, _ = query(t, api, string(probe))
			for job := range all {
				if !got[job] {
					t.Errorf("%s: probe %s has no series for job %s (a metric it reads is missing)", ar.Name, probe, job)
				}
			}
		}
	}
	if n != 15 {
		t.Errorf("%d alerting rules evaluated, want the mixin's 15", n)
	}
}
