// Command scale measures etcd and kvsql side by side at Kubernetes scale, in
// one invocation, each server fresh: etcd 3.6, kvsql on embedded SQLite,
// kvsql on a throwaway PostgreSQL cluster and kvsql on a throwaway MariaDB
// server (both started from the machine's packages by internal/testdb, one
// per target). On each it
//
//  1. creates -objects keys /registry/pods/default/pod-NNNNNNN of -value
//     random bytes the way kube-apiserver creates an object (a txn: if the
//     key's create_revision is 0 then put), -writers writers over -conns
//     connections, and reports keys/s;
//  2. measures the bytes on disk and what Maintenance.Status reports;
//  3. times a count-only Range of every object (median of 5);
//  4. times a paginated list of every object, -page keys per page, each page
//     at the first page's revision (kube-apiserver's continue shape);
//  5. runs -writers CAS writers (Kubernetes' GuaranteedUpdate: txn if
//     mod_revision = r then put else get) over every object for -cas-time
//     and reports successful updates/s;
//  6. opens -watchers watchers on one prefix over -watch-streams streams,
//     puts -watch-events values of -watch-value bytes at -watch-rate per second
//     and reports the put (sent) -> event p99 over every watcher;
//  7. runs -compact-writers CAS writers, compacts (physical) to the
//     current revision after -compact-before, and reports the write p99 of
//     the writes issued while Compact ran against the p99 before it;
//  8. reads every object with one unpaginated Range and reports its time
//     and the server's resident set size (VmRSS) after it, and its peak.
//
// then prints one markdown table with every server's numbers and each
// kvsql's ratio to etcd's. `make bench-scale` builds etcd (pinned by
// tools/etcd/go.mod) and kvsql and runs it; flags go in ARGS, e.g.
//
//	make bench-scale ARGS="-objects 200000 -watchers 10000"
//
// TMPDIR must be a real disk: on tmpfs an fsync costs nothing.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

type config struct {
	etcd, kvsql      string
	targets          []string
	objects, value   int
	writers, conns   int
	casTime          time.Duration
	watchers         int
	watchStreams     int
	watchEvents      int
	watchRate        float64
	watchValue       int
	page             int
	compactWriters   int
	compactBefore    time.Duration
	quota            int64
	phases           map[string]bool
	keepGoingOnError bool
	kvsqlArgs        []string
	pgConf           []string // extra PostgreSQL settings, name=value
	mariadbArgs      []string // extra mariadbd options, --name=value
}

func main() {
	var c config
	var targets, phases string
	flag.StringVar(&c.etcd, "etcd", ".cache/bin/etcd", "the etcd binary (make bench-scale builds the pinned one)")
	flag.StringVar(&c.kvsql, "kvsql", "bin/kvsql", "the kvsql binary (build it without -race)")
	flag.StringVar(&targets, "targets", "etcd,sqlite,postgres,mariadb", "comma-separated servers to measure, in order")
	flag.IntVar(&c.objects, "objects", 20000, "objects to create (200000 or 1000000 for the issue's sizes)")
	flag.IntVar(&c.value, "value", 2048, "bytes per object (random, so incompressible)")
	flag.IntVar(&c.writers, "writers", 64, "concurrent writers of the create load and the CAS churn")
	flag.IntVar(&c.conns, "conns", 8, "client connections the writers share")
	flag.DurationVar(&c.casTime, "cas-time", 10*time.Second, "how long the CAS churn runs")
	flag.IntVar(&c.watchers, "watchers", 1000, "watchers on one prefix (the issue: 10000)")
	flag.IntVar(&c.watchStreams, "watch-streams", 10, "watch streams the watchers share")
	flag.IntVar(&c.watchEvents, "watch-events", 100, "puts timed to every watcher")
	flag.Float64Var(&c.watchRate, "watch-rate", 20, "puts per second while watching")
	flag.IntVar(&c.watchValue, "watch-value", 0, "bytes per watched put (0: -value); every watcher receives every put")
	flag.IntVar(&c.page, "page", 500, "keys per page of the paginated list")
	flag.IntVar(&c.compactWriters, "compact-writers", 16, "CAS writers running while Compact runs")
	flag.DurationVar(&c.compactBefore, "compact-before", 5*time.Second, "how long those writers run before Compact starts")
	flag.Int64Var(&c.quota, "quota", 0, "backend quota in bytes for every server (0: 8 GiB when the objects need more than 1 GiB, else each server's default)")
	flag.StringVar(&phases, "phases", "load,disk,count,list,cas,watch,compact,range", "comma-separated phases to run (load always runs)")
	flag.BoolVar(&c.keepGoingOnError, "k", false, "keep going with the next target when one fails")
	kvsqlArgs := flag.String("kvsql-args", "", "extra kvsql flags, space-separated (e.g. --enable-pprof --listen-metrics-urls=http://127.0.0.1:9090 to profile it)")
	pgConf := flag.String("pg-conf", "", "extra PostgreSQL server settings, space-separated name=value (e.g. shared_buffers=1GB max_wal_size=8GB)")
	mariadbArgs := flag.String("mariadb-args", "", "extra mariadbd options, space-separated (e.g. --innodb-log-file-size=1G)")
	flag.Parse()
	c.kvsqlArgs = strings.Fields(*kvsqlArgs)
	c.pgConf = strings.Fields(*pgConf)
	c.mariadbArgs = strings.Fields(*mariadbArgs)
	c.targets = strings.Split(targets, ",")
	c.phases = map[string]bool{"load": true}
	for _, p := range strings.Split(phases, ",") {
		c.phases[strings.TrimSpace(p)] = true
	}
	if c.watchValue == 0 {
		c.watchValue = c.value
	}
	if c.quota == 0 && int64(c.objects)*int64(c.value) > 1<<30 {
		c.quota = 8 << 30
	}
	if err := run(c); err != nil {
		fmt.Fprintln(os.Stderr, "scale:", err)
		os.Exit(1)
	}
}

// result is one server's numbers; a negative or zero field was not measured.
type result struct {
	target                    string
	createPerSec              float64
	casPerSec, casP99         float64
	watchP99, watchP50        float64
	compactP99, beforeP99     float64
	compactSecs               float64
	compactRevs               int64
	listSecs, rangeSecs       float64
	countMS                   float64
	diskMB, statusMB, inUseMB float64
	rssMB, peakMB             float64
	failures                  []string // phases that failed
	err                       error
}

func run(c config) error {
	for _, b := range []string{c.etcd, c.kvsql} {
		if _, err := os.Stat(b); err != nil {
			return fmt.Errorf("%w (make bench-scale builds it)", err)
		}
	}
	var results []*result
	for _, t := range c.targets {
		logf("== %s: %d objects of %d B", t, c.objects, c.value)
		r, err := measure(c, t)
		if err != nil {
			if !c.keepGoingOnError {
				return fmt.Errorf("%s: %w", t, err)
			}
			logf("%s failed: %v", t, err)
			r = &result{target: t, err: err}
		}
		results = append(results, r)
		printTable(os.Stderr, c, results) // progress: the table so far
	}
	printTable(os.Stdout, c, results)
	return nil
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, time.Now().Format("15:04:05 ")+format+"\n", args...)
}

func measure(c config, target string) (*result, error) {
	r := &result{target: target}
	s, err := start(c, target)
	defer s.stop()
	if err != nil {
		return nil, err
	}
	conns, err := dialAll(s.addr, c.conns)
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, cc := range conns {
			_ = cc.Close()
		}
	}()
	ctx := context.Background()
	kv := pb.NewKVClient(conns[0])
	if err := waitReady(ctx, kv, s); err != nil {
		return nil, err
	}
	pid := s.cmd.Process.Pid

	took, err := timed(func() error { return load(ctx, c, conns) })
	if err != nil {
		return nil, fmt.Errorf("load: %w", err)
	}
	r.createPerSec = float64(c.objects) / took.Seconds()
	logf("%s: created %d objects in %.1fs: %.0f keys/s", target, c.objects, took.Seconds(), r.createPerSec)

	if c.phases["disk"] {
		n, err := s.disk()
		if err != nil {
			return nil, fmt.Errorf("disk size: %w", err)
		}
		r.diskMB = mb(n)
		st, err := pb.NewMaintenanceClient(conns[0]).Status(ctx, &pb.StatusRequest{})
		if err != nil {
			return nil, fmt.Errorf("status: %w", err)
		}
		r.statusMB, r.inUseMB = mb(st.DbSize), mb(st.DbSizeInUse)
		logf("%s: on disk %.0f MB; Status dbSize %.0f MB, in use %.0f MB", target, r.diskMB, r.statusMB, r.inUseMB)
	}
	all := &pb.RangeRequest{Key: []byte(prefix), RangeEnd: []byte(prefixEnd(prefix))}
	if c.phases["count"] {
		var ms []float64
		for range 5 {
			var n int64
			took, err := timed(func() error {
				resp, err := kv.Range(ctx, &pb.RangeRequest{Key: all.Key, RangeEnd: all.RangeEnd, CountOnly: true})
				if resp != nil {
					n = resp.Count
				}
				return err
			})
			if err != nil {
				return nil, fmt.Errorf("count: %w", err)
			}
			if n != int64(c.objects) {
				return nil, fmt.Errorf("count: %d objects, want %d", n, c.objects)
			}
			ms = append(ms, float64(took.Microseconds())/1000)
		}
		r.countMS = median(ms)
		logf("%s: count-only Range of every object: %.1f ms (median of %v)", target, r.countMS, ms)
	}
	if c.phases["list"] {
		var n int
		took, err := timed(func() (err error) { n, err = paginatedList(ctx, kv, c.page); return err })
		if err != nil {
			return nil, fmt.Errorf("paginated list: %w", err)
		}
		if n != c.objects {
			return nil, fmt.Errorf("paginated list: %d objects, want %d", n, c.objects)
		}
		r.listSecs = took.Seconds()
		logf("%s: paginated list (%d per page): %.2fs", target, c.page, r.listSecs)
	}
	if c.phases["cas"] {
		mods, err := modRevisions(ctx, kv, c.objects)
		if err != nil {
			return nil, fmt.Errorf("CAS churn: %w", err)
		}
		ops, lat, err := casLoad(ctx, c, conns, mods, c.writers, c.casTime, nil)
		if err != nil {
			return nil, fmt.Errorf("CAS churn: %w", err)
		}
		r.casPerSec = float64(ops) / c.casTime.Seconds()
		r.casP99 = p99(lat)
		logf("%s: CAS churn, %d writers: %.0f updates/s, p99 %.1f ms", target, c.writers, r.casPerSec, r.casP99)
	}
	if c.phases["watch"] {
		// A phase that fails (events that never arrive, a Compact the
		// server refuses) is reported; the other phases still run.
		if r.watchP50, r.watchP99, err = watchLatency(ctx, c, conns, kv); err != nil {
			r.failures = append(r.failures, fmt.Sprintf("watch: %v", err))
			logf("%s: watch failed: %v", target, err)
		} else {
			logf("%s: %d watchers: put -> event p50 %.1f ms, p99 %.1f ms", target, c.watchers, r.watchP50, r.watchP99)
		}
	}
	if c.phases["compact"] {
		if err := compactUnderLoad(ctx, c, conns, kv, r); err != nil {
			r.failures = append(r.failures, fmt.Sprintf("compact: %v", err))
			logf("%s: compact failed: %v", target, err)
		} else {
			logf("%s: Compact of %d revisions took %.2fs; write p99 during it %.1f ms, before it %.1f ms",
				target, r.compactRevs, r.compactSecs, r.compactP99, r.beforeP99)
		}
	}
	if c.phases["range"] {
		var n int
		took, err := timed(func() error {
			resp, err := kv.Range(ctx, all)
			if resp != nil {
				n = len(resp.Kvs)
			}
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("unpaginated range: %w", err)
		}
		if n != c.objects {
			return nil, fmt.Errorf("unpaginated range: %d objects, want %d", n, c.objects)
		}
		r.rangeSecs = took.Seconds()
		r.rssMB, r.peakMB = mb(procStatus(pid, "VmRSS")), mb(procStatus(pid, "VmHWM"))
		logf("%s: unpaginated Range: %.2fs; RSS after it %.0f MB, peak %.0f MB", target, r.rangeSecs, r.rssMB, r.peakMB)
	}
	return r, nil
}

func timed(f func() error) (time.Duration, error) {
	t := time.Now()
	err := f()
	return time.Since(t), err
}

func quantile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return -1
	}
	return sorted[min(int(q*float64(len(sorted))), len(sorted)-1)]
}

func p99(s []sample) float64 {
	ms := make([]float64, len(s))
	for i, x := range s {
		ms[i] = float64(x.lat.Microseconds()) / 1000
	}
	slices.Sort(ms)
	return quantile(ms, 0.99)
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	return quantile(s, 0.5)
}

func mb(b int64) float64 { return float64(b) / (1 << 20) }

// procStatus returns a /proc/PID/status field (VmRSS, VmHWM) in bytes.
func procStatus(pid int, field string) int64 {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10
		}
	}
	return -1
}

// printTable writes the results as a markdown table, every kvsql number
// followed by its ratio to etcd's.
func printTable(w *os.File, c config, results []*result) {
	var etcd *result
	for _, r := range results {
		if r.target == "etcd" && r.err == nil {
			etcd = r
		}
	}
	type row struct {
		name   string
		get    func(*result) float64
		format string
	}
	rows := []row{
		{"create load (keys/s)", func(r *result) float64 { return r.createPerSec }, "%.0f"},
		{fmt.Sprintf("update CAS churn, %d writers (updates/s)", c.writers), func(r *result) float64 { return r.casPerSec }, "%.0f"},
		{"CAS churn p99 (ms)", func(r *result) float64 { return r.casP99 }, "%.1f"},
		{fmt.Sprintf("%d watchers, %d puts of %d B at %.0f/s: put -> event p99 (ms)", c.watchers, c.watchEvents, c.watchValue, c.watchRate), func(r *result) float64 { return r.watchP99 }, "%.1f"},
		{fmt.Sprintf("write p99 during Compact (ms; %d writers)", c.compactWriters), func(r *result) float64 { return r.compactP99 }, "%.1f"},
		{"write p99 before Compact (ms)", func(r *result) float64 { return r.beforeP99 }, "%.1f"},
		{"Compact duration (s)", func(r *result) float64 { return r.compactSecs }, "%.2f"},
		{"revisions compacted (the revision Compact was given)", func(r *result) float64 { return float64(r.compactRevs) }, "%.0f"},
		{fmt.Sprintf("paginated list of all objects, %d per page (s)", c.page), func(r *result) float64 { return r.listSecs }, "%.2f"},
		{"one unpaginated Range of all objects (s)", func(r *result) float64 { return r.rangeSecs }, "%.2f"},
		{"count-only Range of all objects (ms)", func(r *result) float64 { return r.countMS }, "%.1f"},
		{"on-disk size after the load (MB)", func(r *result) float64 { return r.diskMB }, "%.0f"},
		{"Status dbSize / in use after the load (MB)", func(r *result) float64 { return r.statusMB }, "%.0f"},
		{"server RSS after a full unpaginated list (MB)", func(r *result) float64 { return r.rssMB }, "%.0f"},
		{"server peak RSS (MB)", func(r *result) float64 { return r.peakMB }, "%.0f"},
	}
	fmt.Fprintf(w, "\n%d objects of %d B; ratio = kvsql ÷ etcd (times: lower is better, rates: higher is better)\n\n", c.objects, c.value)
	fmt.Fprint(w, "| at ", c.objects, " objects |")
	for _, r := range results {
		fmt.Fprintf(w, " %s |", r.target)
	}
	fmt.Fprint(w, "\n|---|")
	for range results {
		fmt.Fprint(w, "--:|")
	}
	fmt.Fprintln(w)
	for _, rw := range rows {
		fmt.Fprintf(w, "| %s |", rw.name)
		for _, r := range results {
			v := rw.get(r)
			switch {
			case r.err != nil:
				fmt.Fprint(w, " failed |")
				continue
			case v <= 0:
				fmt.Fprint(w, " - |")
				continue
			}
			cell := fmt.Sprintf(rw.format, v)
			if strings.HasPrefix(rw.name, "Status") {
				cell += fmt.Sprintf(" / %.0f", r.inUseMB)
			}
			if etcd != nil && r != etcd && rw.get(etcd) > 0 {
				cell += fmt.Sprintf(" (%.2f×)", v/rw.get(etcd))
			}
			fmt.Fprintf(w, " %s |", cell)
		}
		fmt.Fprintln(w)
	}
	for _, r := range results {
		if r.err != nil {
			fmt.Fprintf(w, "\n%s failed: %v\n", r.target, r.err)
		}
		for _, f := range r.failures {
			fmt.Fprintf(w, "\n%s: %s\n", r.target, f)
		}
	}
}
