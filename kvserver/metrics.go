package kvserver

import (
	"context"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

// Metrics are kvsql's Prometheus metrics. Create them with NewMetrics on a
// registry, hand OnBatch to the backend's EngineConfig and the Metrics to
// Config; the server keeps the rest current.
type Metrics struct {
	requests   *prometheus.CounterVec
	latency    *prometheus.HistogramVec
	watchers   prometheus.Gauge
	revision   prometheus.Gauge
	batchSize  prometheus.Histogram
	batchTime  prometheus.Histogram
	batchFails prometheus.Counter
	forwards   *prometheus.CounterVec
}

// NewMetrics registers kvsql's metrics on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kvsql_grpc_requests_total", Help: "gRPC requests handled, by method and status code.",
		}, []string{"method", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "kvsql_grpc_request_seconds", Help: "Latency of unary gRPC requests, by method.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18),
		}, []string{"method"}),
		watchers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kvsql_watchers", Help: "Watches open on this instance.",
		}),
		revision: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kvsql_watch_revision", Help: "Newest revision this instance's watch tailer has read from the log.",
		}),
		batchSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "kvsql_write_batch_requests", Help: "Client writes per group-commit database transaction.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 10),
		}),
		batchTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "kvsql_write_batch_seconds", Help: "Duration of group-commit database transactions, commit included.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18),
		}),
		batchFails: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kvsql_write_batch_failures_total", Help: "Group-commit transactions the database failed (every request in them got the error).",
		}),
		forwards: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kvsql_write_forwards_total",
			Help: "Writes this instance handled while another instance led, by outcome: forwarded (the leader answered), direct (the leader was not reachable, so written directly), lost (the connection failed mid-request; outcome unknown).",
		}, []string{"outcome"}),
	}
	reg.MustRegister(m.requests, m.latency, m.watchers, m.revision, m.batchSize, m.batchTime, m.batchFails, m.forwards)
	return m
}

// OnBatch records one group-commit transaction (backends.EngineConfig.OnBatch).
func (m *Metrics) OnBatch(requests int, took time.Duration, err error) {
	m.batchSize.Observe(float64(requests))
	m.batchTime.Observe(took.Seconds())
	if err != nil {
		m.batchFails.Inc()
	}
}

func methodName(full string) string { return full[strings.LastIndex(full, "/")+1:] }

func (m *Metrics) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	start := time.Now()
	resp, err := handler(ctx, req)
	name := methodName(info.FullMethod)
	m.requests.WithLabelValues(name, status.Code(err).String()).Inc()
	m.latency.WithLabelValues(name).Observe(time.Since(start).Seconds())
	return resp, err
}

func (m *Metrics) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	err := handler(srv, ss)
	m.requests.WithLabelValues(methodName(info.FullMethod), status.Code(err).String()).Inc()
	return err
}
