package kvserver

import (
	"sync/atomic"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"go.etcd.io/etcd/api/v3/version"
	"google.golang.org/grpc"

	"github.com/kvsql/kvsql/backends"
)

// Metrics are kvsql's Prometheus metrics: etcd's names and meanings where
// the meaning carries over, so that etcd's dashboards and alerts (the etcd
// mixin) work unchanged, gRPC's standard server metrics, and kvsql_* ones
// for what etcd has no word for. Create them with NewMetrics, give them to
// the backend as its EngineConfig.Observer and to Config.Metrics; the
// server keeps the rest current. README's Metrics section says what each
// measures in kvsql.
type Metrics struct {
	grpc *grpcprom.ServerMetrics

	// etcd_server_*
	hasLeader, isLeader prometheus.Gauge
	leaderChanges       prometheus.Counter
	// etcd exports the committed and applied counts as gauges (they are
	// raft indexes there); kvsql keeps the type so that nothing reading
	// etcd's metadata is surprised.
	proposalsCommitted, proposalsApplied prometheus.Gauge
	proposalsPending                     prometheus.Gauge
	proposalsFailed                      prometheus.Counter
	quotaBytes                           prometheus.Gauge
	slowApplies                          prometheus.Counter

	// etcd_disk_*
	backendCommit, walFsync prometheus.Histogram

	// etcd_mvcc_* and etcd_debugging_mvcc_*
	dbTotal, dbInUse             prometheus.Gauge
	puts, deletes, ranges, txns  prometheus.Counter
	keys, watchers, watchStreams prometheus.Gauge

	// kvsql_*
	revision, watchLag prometheus.Gauge
	notifyReconnects   prometheus.Counter
	batchSize          prometheus.Histogram
	batchReplays       prometheus.Counter
	forwards           *prometheus.CounterVec
	pools              poolCollector
}

// etcd's histogram layouts, which its dashboards' bucket queries expect.
var (
	// diskBuckets: 1 ms to 8.192 s, factor 2 (etcd's backend commit and
	// WAL fsync histograms).
	diskBuckets = prometheus.ExponentialBuckets(0.001, 2, 14)
)

// NewMetrics registers kvsql's metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	gauge := func(ns, sub, name, help string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: name, Help: help})
	}
	counter := func(ns, sub, name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: name, Help: help})
	}
	m := &Metrics{
		// etcd enables the handling-time histogram with --metrics=extensive;
		// the mixin's etcdGRPCRequestsSlow needs it, so it is always on,
		// with the library's (and etcd's) default buckets.
		grpc: grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram()),

		hasLeader: gauge("etcd", "server", "has_leader",
			"Whether an instance holds the leader lock, as far as this instance knows. 1 is existence, 0 is not."),
		isLeader: gauge("etcd", "server", "is_leader",
			"Whether this instance holds the leader lock. 1 if it does, 0 otherwise."),
		leaderChanges: counter("etcd", "server", "leader_changes_seen_total",
			"The number of leader changes this instance has seen (the first leader it sees counts, as in etcd)."),
		proposalsCommitted: gauge("etcd", "server", "proposals_committed_total",
			"The total number of writes (proposals) this instance's group commit committed to the database."),
		proposalsApplied: gauge("etcd", "server", "proposals_applied_total",
			"The total number of writes (proposals) applied: equal to the committed ones, as kvsql applies a write by committing it."),
		proposalsPending: gauge("etcd", "server", "proposals_pending",
			"The current number of writes queued for or inside a group commit."),
		proposalsFailed: counter("etcd", "server", "proposals_failed_total",
			"The total number of writes that did not commit: the database failed their transaction, or the client gave up while they were queued."),
		quotaBytes: gauge("etcd", "server", "quota_backend_bytes",
			"Current backend storage quota size in bytes (--quota-backend-bytes; kvsql compares it with the size in use)."),
		slowApplies: counter("etcd", "server", "slow_apply_total",
			"The total number of requests that took longer than --warning-apply-duration."),

		backendCommit: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "etcd", Subsystem: "disk", Name: "backend_commit_duration_seconds",
			Help:    "The latency distributions of group-commit database transactions, from taking the write lock to the end of the commit.",
			Buckets: diskBuckets,
		}),
		walFsync: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: "etcd", Subsystem: "disk", Name: "wal_fsync_duration_seconds",
			Help:    "The latency distributions of group-commit commits: SQLite's COMMIT (WAL write and fsync); on PostgreSQL and MySQL the round trip carrying the batch's rows and COMMIT, answered after the server's log flush.",
			Buckets: diskBuckets,
		}),

		dbTotal: gauge("etcd", "mvcc", "db_total_size_in_bytes",
			"Total size of kvsql's tables in the database, physically allocated, in bytes (refreshed every few seconds)."),
		dbInUse: gauge("etcd", "mvcc", "db_total_size_in_use_in_bytes",
			"Size of kvsql's tables in the database logically in use, in bytes (refreshed every few seconds)."),
		puts:    counter("etcd", "mvcc", "put_total", "Total number of puts applied by this instance."),
		deletes: counter("etcd", "mvcc", "delete_total", "Total number of delete ranges applied by this instance."),
		ranges:  counter("etcd", "mvcc", "range_total", "Total number of ranges served by this instance."),
		txns:    counter("etcd", "mvcc", "txn_total", "Total number of txns served by this instance."),
		keys: gauge("etcd_debugging", "mvcc", "keys_total",
			"Total number of keys, as of the revision this instance's watch tailer has read."),
		watchers:     gauge("etcd_debugging", "mvcc", "watcher_total", "Total number of watchers on this instance."),
		watchStreams: gauge("etcd_debugging", "mvcc", "watch_stream_total", "Total number of watch streams on this instance."),

		revision: gauge("kvsql", "", "watch_revision",
			"Newest revision this instance's watch tailer has read from the log."),
		watchLag: gauge("kvsql", "", "watch_lag_revisions",
			"Revisions the database's change stream reported committed that this instance's watch tailer has not read yet."),
		notifyReconnects: counter("kvsql", "", "notify_reconnects_total",
			"Times the database change stream (LISTEN/NOTIFY, binlog) was lost and connected again."),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "kvsql_write_batch_requests", Help: "Writes per group-commit database transaction.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 10),
		}),
		batchReplays: counter("kvsql", "", "write_batch_replays_total",
			"Write batches prepared without the write lock that found the database changed by another instance (or had a write refused) and ran again under the lock."),
		forwards: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kvsql_write_forwards_total",
			Help: "Writes this instance handled while another instance led, by outcome: forwarded (the leader answered), direct (the leader was not reachable, so written directly), lost (the connection failed mid-request; outcome unknown).",
		}, []string{"outcome"}),
	}
	for _, o := range []string{fwdForwarded, fwdDirect, fwdLost} {
		m.forwards.WithLabelValues(o)
	}
	serverVersion := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "etcd", Subsystem: "server", Name: "version",
		Help: "Which etcd API version is served. 1 for 'server_version' label with current version.",
	}, []string{"server_version"})
	serverVersion.WithLabelValues(EtcdVersion).Set(1)
	clusterVersion := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "etcd", Name: "cluster_version",
		Help: "Which etcd cluster version is served. 1 for 'cluster_version' label with current version.",
	}, []string{"cluster_version"})
	clusterVersion.WithLabelValues(version.Cluster(EtcdVersion)).Set(1)
	reg.MustRegister(m.grpc,
		m.hasLeader, m.isLeader, m.leaderChanges,
		m.proposalsCommitted, m.proposalsApplied, m.proposalsPending, m.proposalsFailed,
		m.quotaBytes, m.slowApplies, serverVersion, clusterVersion,
		m.backendCommit, m.walFsync,
		m.dbTotal, m.dbInUse, m.puts, m.deletes, m.ranges, m.txns, m.keys, m.watchers, m.watchStreams,
		m.revision, m.watchLag, m.notifyReconnects, m.batchSize, m.batchReplays, m.forwards, &m.pools)
	return m
}

var _ backends.Observer = (*Metrics)(nil)

// WriteQueued implements backends.Observer.
func (m *Metrics) WriteQueued() { m.proposalsPending.Inc() }

// BatchDone implements backends.Observer.
func (m *Metrics) BatchDone(b backends.BatchStats) {
	m.proposalsPending.Sub(float64(b.Requests))
	m.proposalsCommitted.Add(float64(b.Applied))
	m.proposalsApplied.Add(float64(b.Applied))
	m.proposalsFailed.Add(float64(b.Failed))
	if b.Took == 0 {
		return // failed at shutdown, never in a transaction
	}
	m.batchSize.Observe(float64(b.Requests))
	m.backendCommit.Observe(b.Took.Seconds())
	if b.Commit > 0 {
		m.walFsync.Observe(b.Commit.Seconds())
	}
}

// BatchReplayed implements backends.Observer.
func (m *Metrics) BatchReplayed() { m.batchReplays.Inc() }

// interceptors returns gRPC's standard server metric interceptors.
func (m *Metrics) interceptors() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(m.grpc.UnaryServerInterceptor()),
		grpc.ChainStreamInterceptor(m.grpc.StreamServerInterceptor()),
	}
}

// setLeader records this instance's view of leadership.
func (m *Metrics) setLeader(has, is bool) {
	m.hasLeader.Set(b2f(has))
	m.isLeader.Set(b2f(is))
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// poolCollector reports the database connection pools of a backend that
// has any (backends.PoolReporter), as kvsql_db_pool_*.
type poolCollector struct {
	stats atomic.Pointer[func() []backends.PoolStats]
}

var (
	poolLabels   = []string{"pool"}
	poolMaxDesc  = prometheus.NewDesc("kvsql_db_pool_max_connections", "Most connections the pool opens.", poolLabels, nil)
	poolOpenDesc = prometheus.NewDesc("kvsql_db_pool_open_connections", "Connections the pool holds open now.", poolLabels, nil)
	poolUseDesc  = prometheus.NewDesc("kvsql_db_pool_in_use_connections", "Connections in use now.", poolLabels, nil)
	poolIdleDesc = prometheus.NewDesc("kvsql_db_pool_idle_connections", "Idle connections now.", poolLabels, nil)
	poolWaitDesc = prometheus.NewDesc("kvsql_db_pool_waits_total", "Times a caller waited for a connection.", poolLabels, nil)
	poolWaitSecs = prometheus.NewDesc("kvsql_db_pool_wait_seconds_total", "Time callers spent waiting for a connection.", poolLabels, nil)
)

func (c *poolCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{poolMaxDesc, poolOpenDesc, poolUseDesc, poolIdleDesc, poolWaitDesc, poolWaitSecs} {
		ch <- d
	}
}

func (c *poolCollector) Collect(ch chan<- prometheus.Metric) {
	f := c.stats.Load()
	if f == nil {
		return
	}
	for _, p := range (*f)() {
		ch <- prometheus.MustNewConstMetric(poolMaxDesc, prometheus.GaugeValue, float64(p.MaxOpen), p.Name)
		ch <- prometheus.MustNewConstMetric(poolOpenDesc, prometheus.GaugeValue, float64(p.Open), p.Name)
		ch <- prometheus.MustNewConstMetric(poolUseDesc, prometheus.GaugeValue, float64(p.InUse), p.Name)
		ch <- prometheus.MustNewConstMetric(poolIdleDesc, prometheus.GaugeValue, float64(p.Idle), p.Name)
		ch <- prometheus.MustNewConstMetric(poolWaitDesc, prometheus.CounterValue, float64(p.WaitCount), p.Name)
		ch <- prometheus.MustNewConstMetric(poolWaitSecs, prometheus.CounterValue, p.WaitDuration.Seconds(), p.Name)
	}
}
