package kvserver

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/version"
)

// HealthCheckTimeout bounds the database read behind /health, /livez and
// /readyz: a database that does not answer within it makes them fail
// rather than hang the probe.
const HealthCheckTimeout = 3 * time.Second

// The checks etcd 3.6 runs under /livez and /readyz, by name. kvsql has no
// local copy of the data and no raft, so both reads go to the database, no
// member is ever a learner, and no alarm is ever raised (Alarm lists none).
const (
	checkSerializableRead = "serializable_read"
	checkLinearizableRead = "linearizable_read"
	checkDataCorruption   = "data_corruption"
	checkNonLearner       = "non_learner"
)

// HTTPHandler returns the handler for the HTTP side of a client URL, as
// etcd serves it: /health, /livez, /readyz, /version, metrics (if given)
// at /metrics, and gateway (if given: etcd's gRPC-gateway) under /v3/.
func (s *Server) HTTPHandler(metrics, gateway http.Handler) http.Handler {
	mux := http.NewServeMux()
	s.HandleHealth(mux)
	mux.HandleFunc("/version", s.serveVersion)
	if metrics != nil {
		mux.Handle("/metrics", metrics)
	}
	if gateway != nil {
		mux.Handle("/v3/", gateway)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// etcd still answers its pre-3.4 gateway prefix.
		if rest, ok := strings.CutPrefix(r.URL.Path, "/v3beta/"); ok {
			r.URL.Path = "/v3/" + rest
		}
		mux.ServeHTTP(w, r)
	})
}

// HandleHealth registers /health, /livez and /readyz (and one path per
// check below the last two) on mux, with etcd 3.6's bodies and status
// codes. The metrics listener serves them too, as etcd's does.
func (s *Server) HandleHealth(mux *http.ServeMux) {
	mux.HandleFunc("/health", s.serveHealth)
	s.handleChecks(mux, "/livez", map[string]func(context.Context) error{
		checkSerializableRead: s.readCheck,
	})
	s.handleChecks(mux, "/readyz", map[string]func(context.Context) error{
		checkDataCorruption:   func(context.Context) error { return nil },
		checkSerializableRead: s.readCheck,
		checkLinearizableRead: s.readCheck,
		checkNonLearner:       func(context.Context) error { return nil },
	})
}

// healthBody is etcd's /health answer.
type healthBody struct {
	Health string `json:"health"`
	Reason string `json:"reason"`
}

// readCheck reads the database's revisions within HealthCheckTimeout.
func (s *Server) readCheck(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, HealthCheckTimeout)
	defer cancel()
	_, _, err := s.be.Revisions(ctx)
	return toGRPC(err)
}

// allowGet answers a method other than GET as etcd does and reports
// whether the request may go on.
func allowGet(w http.ResponseWriter, r *http.Request) bool {
	if r.Method == http.MethodGet {
		return true
	}
	w.Header().Set("Allow", http.MethodGet)
	http.Error(w, "Method Not Allowed", http.StatusMethodNotAllowed)
	return false
}

// serveHealth answers {"health":"true","reason":""} when the database
// answers a read in time, else "false" with the error and 503, as etcd
// answers when its range fails. etcd's ?serializable=true and ?exclude=
// are accepted; neither changes the check (there is no raft leader to
// require and no alarm to exclude).
func (s *Server) serveHealth(w http.ResponseWriter, r *http.Request) {
	if !allowGet(w, r) {
		return
	}
	h := healthBody{Health: "true"}
	if err := s.readCheck(r.Context()); err != nil {
		h = healthBody{Health: "false", Reason: "RANGE ERROR:" + err.Error()}
		s.log.Warn("serving /health false", "err", err)
	}
	body, _ := json.Marshal(h)
	if h.Health != "true" {
		http.Error(w, string(body), http.StatusServiceUnavailable)
		return
	}
	_, _ = w.Write(body)
}

// handleChecks registers root, which runs every check but those named in
// ?exclude=, and root/NAME for each one, answering as etcd's /livez and
// /readyz do: "ok" (with each check's line under ?verbose), or 503 with
// each check's line.
func (s *Server) handleChecks(mux *http.ServeMux, root string, checks map[string]func(context.Context) error) {
	names := make([]string, 0, len(checks))
	for n := range checks {
		names = append(names, n)
	}
	sort.Strings(names)
	run := func(w http.ResponseWriter, r *http.Request, which []string) {
		if !allowGet(w, r) {
			return
		}
		var out strings.Builder
		failed := false
		for _, n := range which {
			if err := checks[n](r.Context()); err != nil {
				fmt.Fprintf(&out, "[-]%s failed: %v\n", n, err)
				failed = true
			} else {
				fmt.Fprintf(&out, "[+]%s ok\n", n)
			}
		}
		if failed {
			s.log.Warn("health check failed", "path", r.URL.Path, "reason", out.String())
			http.Error(w, out.String(), http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		if _, verbose := r.URL.Query()["verbose"]; verbose {
			fmt.Fprint(w, out.String())
		}
		fmt.Fprint(w, "ok\n")
	}
	mux.HandleFunc(root, func(w http.ResponseWriter, r *http.Request) {
		excluded := map[string]bool{}
		for _, e := range r.URL.Query()["exclude"] {
			excluded[e] = true
		}
		var which []string
		for _, n := range names {
			if !excluded[n] {
				which = append(which, n)
			}
		}
		run(w, r, which)
	})
	for _, n := range names {
		mux.HandleFunc(root+"/"+n, func(w http.ResponseWriter, r *http.Request) { run(w, r, []string{n}) })
	}
}

// serveVersion answers etcd's /version: the etcd version kvsql implements
// and the cluster and storage versions it reports in Status.
func (s *Server) serveVersion(w http.ResponseWriter, r *http.Request) {
	if !allowGet(w, r) {
		return
	}
	cluster := version.Cluster(EtcdVersion)
	body, _ := json.Marshal(version.Versions{Server: EtcdVersion, Cluster: cluster + ".0", Storage: cluster + ".0"})
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(body)
}
