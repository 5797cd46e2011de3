// The metrics listeners: etcd's --listen-metrics-urls, plain HTTP apart
// from the client URLs, serving /metrics, the health probes (HandleHealth)
// and, if asked for, Go's profiler.

package kvserver

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"time"
)

// metricsReadHeaderTimeout bounds how long a metrics client may take to
// send its request's headers.
const metricsReadHeaderTimeout = 10 * time.Second

// MetricsServerConfig configures ListenMetrics.
type MetricsServerConfig struct {
	// Addrs are the host:port addresses to listen on.
	Addrs []string
	// Metrics serves /metrics.
	Metrics http.Handler
	// Pprof serves Go's profiler under /debug/pprof/.
	Pprof  bool
	Logger *slog.Logger
}

// MetricsServer serves metrics on listeners of their own. Close stops it.
type MetricsServer struct {
	mux     *http.ServeMux
	servers []*http.Server
	wg      sync.WaitGroup // the Serve goroutines
}

// ListenMetrics listens on every address of cfg and serves its handlers
// there until Close. With no address it serves nothing, and Mux still
// takes handlers.
func ListenMetrics(cfg MetricsServerConfig) (*MetricsServer, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	m := &MetricsServer{mux: http.NewServeMux()}
	if len(cfg.Addrs) == 0 {
		return m, nil
	}
	m.mux.Handle("/metrics", cfg.Metrics)
	if cfg.Pprof {
		// Not /debug/pprof/cmdline: the command line may hold
		// --endpoint's password.
		m.mux.HandleFunc("/debug/pprof/", pprof.Index)
		m.mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		m.mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		m.mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	for _, addr := range cfg.Addrs {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			m.Close()
			return nil, fmt.Errorf("listen for metrics on %s: %w", addr, err)
		}
		hs := &http.Server{Handler: m.mux, ReadHeaderTimeout: metricsReadHeaderTimeout}
		m.servers = append(m.servers, hs)
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			_ = hs.Serve(ln) // ErrServerClosed once Close is called
		}()
		log.Info("serving metrics", "addr", ln.Addr().String())
	}
	return m, nil
}

// Mux is the handlers the metrics listeners serve; Server.HandleHealth
// adds the health probes to it, as etcd's metrics URLs answer them.
func (m *MetricsServer) Mux() *http.ServeMux { return m.mux }

// Close closes the listeners and their connections and waits until they
// are no longer served.
func (m *MetricsServer) Close() {
	for _, hs := range m.servers {
		_ = hs.Close()
	}
	m.wg.Wait()
}
