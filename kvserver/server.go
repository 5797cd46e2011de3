// Package kvserver serves etcd's v3 gRPC API (KV, Watch, Lease, Maintenance,
// Cluster, health) on a backends.Backend. It validates requests the way etcd
// does, converts backend errors to etcd's gRPC errors, and runs the watch
// hub that turns the database's history into watch events. It never imports
// a database driver.
package kvserver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/pkg/v3/idutil"
	"golang.org/x/crypto/bcrypt"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"

	"github.com/kvsql/kvsql/backends"
	"github.com/kvsql/kvsql/notify"
)

// Defaults for Config, matching etcd's where etcd has one.
const (
	DefaultMaxRequestBytes        = 1536 * 1024 // etcd --max-request-bytes
	DefaultMaxTxnOps              = 128         // etcd --max-txn-ops
	DefaultProgressNotifyInterval = 10 * time.Minute
	DefaultSafetyPoll             = 5 * time.Second
	DefaultLeaseCheckInterval     = 500 * time.Millisecond
	// MinLeaseTTL is etcd's minimum lease TTL with its default election
	// timeout: a shorter requested TTL is raised to it.
	MinLeaseTTL = 2
	// MaxLeaseTTL is etcd's maximum lease TTL (seconds).
	MaxLeaseTTL = 9000000000
	// grpcOverheadBytes is the slack etcd allows above MaxRequestBytes for
	// gRPC framing before the transport itself refuses a message.
	grpcOverheadBytes = 512 * 1024
	// raftTerm is reported in every header; kvsql has no raft, so it never changes.
	raftTerm = 1
)

// Config configures a Server.
type Config struct {
	Backend backends.Backend
	Notify  notify.Source
	Logger  *slog.Logger
	// Metrics, if set, receives request, watch and revision metrics.
	Metrics *Metrics

	// Name is this member's name; ClusterName seeds the cluster ID.
	Name        string
	ClusterName string
	// ClientURLs are the advertised client URLs (MemberList, Status).
	ClientURLs []string

	MaxRequestBytes        int
	MaxTxnOps              int
	ProgressNotifyInterval time.Duration
	// SafetyPoll is how often the watch tailer reads the log even without
	// a notification.
	SafetyPoll time.Duration
	// LeaseCheckInterval is how often expired leases are revoked.
	LeaseCheckInterval time.Duration
	// MaxRangeBytesInFlight bounds the bytes of Range results being read
	// or handed to gRPC at once (see rangeBudget); 0 means
	// DefaultMaxRangeBytesInFlight.
	MaxRangeBytesInFlight int64

	// SnapshotDir is where Maintenance.Snapshot builds its temporary file
	// (as large as the database's history); "" means os.TempDir().
	SnapshotDir string

	// ForwardWrites makes an instance that does not hold the leader lock
	// send its writes to the leader's advertised client URL, so that the
	// writes of every instance share one group commit (see forward.go).
	// It has an effect only on backends several instances share.
	ForwardWrites bool
	// ForwardTLS verifies the leader (and may present a client
	// certificate) when its advertised URL is https://; nil means the
	// system's roots.
	ForwardTLS *tls.Config

	// AuthToken is etcd's --auth-token: "simple" (the default) or
	// "jwt,pub-key=FILE,priv-key=FILE,sign-method=ALG[,ttl=DURATION]".
	AuthToken string
	// AuthTokenTTL is etcd's --auth-token-ttl: a simple token expires
	// this long after its last use.
	AuthTokenTTL time.Duration
	// BcryptCost is etcd's --bcrypt-cost for hashing passwords.
	BcryptCost int
	// ClientCertAuth is etcd's --client-cert-auth as far as auth goes: a
	// request without a token authenticates as the common name of its
	// verified TLS client certificate.
	ClientCertAuth bool
	// AuthRefreshInterval is how often an instance checks the stored auth
	// state for changes made through other instances: the bound within
	// which such a change binds this one.
	AuthRefreshInterval time.Duration
	// QuotaBackendBytes is etcd's --quota-backend-bytes: writes that would
	// make the database's size in use reach it are refused and raise the
	// NOSPACE alarm (see quota.go). 0 means DefaultQuotaBackendBytes, a
	// negative value turns the quota off, as in etcd.
	QuotaBackendBytes int64
	// WarningApplyDuration is etcd's --warning-apply-duration: requests
	// that take longer are logged (see slowlog.go). 0 means
	// DefaultWarningApplyDuration.
	WarningApplyDuration time.Duration
	// StatsInterval is how often the database size and the alarms are
	// read (0: DefaultStatsInterval).
	StatsInterval time.Duration
}

// Server implements etcd's gRPC services on a Backend.
type Server struct {
	cfg       Config
	be        backends.Backend
	log       *slog.Logger
	hub       *hub
	history   *history // log reads for watchers older than the hub's window
	ranges    *rangeBudget
	encoded   sync.Map      // *pb.RangeResponse -> *encodedKVs (see codec)
	release   chan struct{} // buffered(1): return unused memory to the system (releaser)
	clusterID uint64
	memberID  uint64
	health    *health.Server

	// shutdown is closed by Shutdown: streams end with Unavailable so that
	// clients retry elsewhere or after a restart.
	shutdown     chan struct{}
	shutdownOnce sync.Once

	// leasesReady is closed once Run has made its first attempt to take
	// over lease expiry (and so, if it did, extended every lease): lease
	// RPCs wait for it, so that no client sees a lease as expired only
	// because no instance was expiring leases a moment ago.
	leasesReady chan struct{}

	// leading says whether this instance holds the leader lock;
	// leadChanged wakes the heartbeat to announce a change at once.
	leading     atomic.Bool
	leadChanged chan struct{}
	// leaderID is the member marked as leader in the registry at the last
	// heartbeat (0: none seen yet).
	leaderID atomic.Uint64
	// seenLeader is the leader observeLeader last recorded (0: none).
	seenLeader atomic.Uint64
	// fwd is nil unless writes are forwarded to the leader.
	fwd *forwarder
	// auth authenticates requests and checks their permissions.
	auth *authGate

	// stats caches the database size and the alarms; quota is the
	// effective quota in bytes (<= 0: none).
	stats *stats
	quota int64
	// leadOp serialises this instance's changes of leadership: a lease
	// expiry tick's election and a MoveLeader's resignation.
	leadOp sync.Mutex
	// dbErrs rate-limits the database error log (see logDBError).
	dbErrs dbErrorLog
	// reqIDs numbers write requests the way an etcd member numbers its
	// proposals; only the size of the IDs matters (see checkSize).
	reqIDs *idutil.Generator
}

// New returns a Server. Call Register to serve it and Run to start the
// watch tailer and lease expiry.
func New(cfg Config) (*Server, error) {
	if cfg.Backend == nil || cfg.Notify == nil {
		return nil, errors.New("kvserver: Backend and Notify are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Name == "" {
		cfg.Name = "default"
	}
	if cfg.ClusterName == "" {
		cfg.ClusterName = "kvsql"
	}
	if cfg.MaxRequestBytes <= 0 {
		cfg.MaxRequestBytes = DefaultMaxRequestBytes
	}
	if cfg.MaxTxnOps <= 0 {
		cfg.MaxTxnOps = DefaultMaxTxnOps
	}
	if cfg.ProgressNotifyInterval <= 0 {
		cfg.ProgressNotifyInterval = DefaultProgressNotifyInterval
	}
	if cfg.SafetyPoll <= 0 {
		cfg.SafetyPoll = DefaultSafetyPoll
	}
	if cfg.LeaseCheckInterval <= 0 {
		cfg.LeaseCheckInterval = DefaultLeaseCheckInterval
	}
	if cfg.AuthToken == "" {
		cfg.AuthToken = DefaultAuthToken
	}
	if cfg.AuthTokenTTL <= 0 {
		cfg.AuthTokenTTL = DefaultAuthTokenTTL
	}
	if cfg.BcryptCost == 0 {
		cfg.BcryptCost = bcrypt.DefaultCost
	}
	if cfg.BcryptCost < bcrypt.MinCost || cfg.BcryptCost > bcrypt.MaxCost {
		return nil, fmt.Errorf("kvserver: bcrypt cost %d is outside %d..%d", cfg.BcryptCost, bcrypt.MinCost, bcrypt.MaxCost)
	}
	if cfg.AuthRefreshInterval <= 0 {
		cfg.AuthRefreshInterval = DefaultAuthRefreshInterval
	}
	if cfg.WarningApplyDuration <= 0 {
		cfg.WarningApplyDuration = DefaultWarningApplyDuration
	}
	if cfg.StatsInterval <= 0 {
		cfg.StatsInterval = DefaultStatsInterval
	}
	if cfg.MaxRangeBytesInFlight <= 0 {
		cfg.MaxRangeBytesInFlight = DefaultMaxRangeBytesInFlight
	}
	s := &Server{
		cfg:       cfg,
		be:        cfg.Backend,
		log:       cfg.Logger,
		clusterID: idOf(cfg.ClusterName),
		memberID:  idOf(cfg.ClusterName + "/" + cfg.Name + "/" + strings.Join(cfg.ClientURLs, ",")),
		health:    health.NewServer(),
		shutdown:  make(chan struct{}),
		ranges:    newRangeBudget(cfg.MaxRangeBytesInFlight),
		release:   make(chan struct{}, 1),

		leasesReady: make(chan struct{}),
		leadChanged: make(chan struct{}, 1),

		stats: newStats(cfg.Backend, cfg.Logger.With("component", "stats"), cfg.Metrics, cfg.StatsInterval),
		quota: cfg.QuotaBackendBytes,
	}
	if s.quota == 0 {
		s.quota = DefaultQuotaBackendBytes
	}
	s.reqIDs = idutil.NewGenerator(uint16(s.memberID), time.Now())
	_, elects := cfg.Backend.(leaderElector)
	_, registers := cfg.Backend.(memberRegistry)
	var err error
	if s.auth, err = newAuthGate(cfg, registers); err != nil {
		return nil, err
	}
	if cfg.ForwardWrites && elects && registers {
		s.fwd = &forwarder{self: s.memberID, cluster: s.clusterID, selfURL: map[string]bool{}, tls: cfg.ForwardTLS, metrics: cfg.Metrics, log: cfg.Logger.With("component", "forward"), sign: s.auth.sign}
		for _, u := range cfg.ClientURLs {
			s.fwd.selfURL[u] = true
		}
	}
	s.hub = newHub(cfg.Backend, cfg.Notify, cfg.SafetyPoll, cfg.Logger.With("component", "watch-hub"))
	s.history = newHistory(cfg.Backend)
	s.hub.onNewTimeline = s.history.reset
	if m := cfg.Metrics; m != nil {
		m.quotaBytes.Set(float64(s.quota))
		s.hub.metrics = m
		if pr, ok := cfg.Backend.(backends.PoolReporter); ok {
			f := pr.PoolStats
			m.pools.stats.Store(&f)
		}
	}
	return s, nil
}

// idOf derives a stable non-zero 64-bit ID from a name.
func idOf(name string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(name))
	if id := h.Sum64(); id != 0 {
		return id
	}
	return 1
}

// GRPCOptions returns the server options etcd uses for its limits.
func (s *Server) GRPCOptions() []grpc.ServerOption {
	opts := []grpc.ServerOption{
		grpc.MaxRecvMsgSize(s.cfg.MaxRequestBytes + grpcOverheadBytes),
		grpc.MaxSendMsgSize(1<<31 - 1),
		grpc.MaxConcurrentStreams(1<<32 - 1),
		// etcd's keepalive defaults (--grpc-keepalive-min-time 5s,
		// --grpc-keepalive-interval 2h, --grpc-keepalive-timeout 20s). gRPC's
		// own default (a 5-minute minimum between client pings) answers
		// clientv3's 30-second keepalive pings — kube-apiserver's — with
		// GOAWAY "too_many_pings" and tears its connection down.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second}),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 2 * time.Hour, Timeout: 20 * time.Second}),
		grpc.NumStreamWorkers(streamWorkers),
	}
	if m := s.cfg.Metrics; m != nil {
		opts = append(opts, m.interceptors()...)
	}
	opts = append(opts, grpc.ChainUnaryInterceptor(s.slowRequests, s.markAnswered))
	return append(opts, s.memoryOptions()...)
}

// Register registers every etcd service on g.
func (s *Server) Register(g *grpc.Server) {
	pb.RegisterKVServer(g, &kvService{s: s})
	pb.RegisterWatchServer(g, &watchService{s: s})
	pb.RegisterLeaseServer(g, &leaseService{s: s})
	pb.RegisterMaintenanceServer(g, &maintenanceService{s: s})
	pb.RegisterClusterServer(g, &clusterService{s: s})
	pb.RegisterAuthServer(g, &authService{s: s})
	healthpb.RegisterHealthServer(g, s.health)
	if m := s.cfg.Metrics; m != nil {
		m.grpc.InitializeMetrics(g)
	}
}

// Run takes over lease expiry if this instance can lead (see
// takeOverLeases), starts the watch tailer and the lease expiry loop, and
// returns when ctx ends (nil) or one of them fails. Call it once.
func (s *Server) Run(ctx context.Context) error {
	if err := s.stats.refresh(ctx); err != nil && ctx.Err() == nil {
		s.log.Warn("measuring the database size and reading alarms failed; will retry", "err", err)
	}
	if s.quota > 0 {
		s.log.Info("enabled backend quota", "quota_bytes", s.quota)
	}
	leading := s.takeOverLeases(ctx)
	s.setLeading(leading)
	close(s.leasesReady)
	if err := s.hub.init(ctx); err != nil {
		if ctx.Err() != nil {
			return nil // stopped while starting
		}
		return err
	}
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return s.hub.run(ctx) })
	g.Go(func() error { return s.expireLeases(ctx, leading) })
	g.Go(func() error { return s.heartbeat(ctx) })
	g.Go(func() error { return s.auth.run(ctx, s.leading.Load) })
	g.Go(func() error { return s.stats.run(ctx) })
	g.Go(func() error { return s.releaser(ctx) })
	err := g.Wait()
	s.history.close()
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	if s.fwd != nil {
		s.fwd.close()
	}
	return err
}

// Shutdown makes open watch and keep-alive streams end with Unavailable, so
// that grpc.Server.GracefulStop can finish.
func (s *Server) Shutdown() {
	s.shutdownOnce.Do(func() {
		s.health.Shutdown()
		close(s.shutdown)
	})
}

// header returns a response header for revision rev.
func (s *Server) header(rev int64) *pb.ResponseHeader {
	return &pb.ResponseHeader{ClusterId: s.clusterID, MemberId: s.memberID, Revision: rev, RaftTerm: raftTerm}
}

// fill completes a header a backend produced.
func (s *Server) fill(h *pb.ResponseHeader) *pb.ResponseHeader {
	if h == nil {
		h = &pb.ResponseHeader{}
	}
	h.ClusterId, h.MemberId, h.RaftTerm = s.clusterID, s.memberID, raftTerm
	return h
}

// currentRev returns the database's current revision.
func (s *Server) currentRev(ctx context.Context) (int64, error) {
	cur, _, err := s.be.Revisions(ctx)
	return cur, err
}

// streamWorkers is how many goroutines serve RPCs one after another
// (grpc.NumStreamWorkers); an RPC that finds them all busy gets a goroutine
// of its own, as every RPC does without them. A new goroutine's stack
// grows, by copying, to the depth of an RPC through the interceptors, the
// backend and a forward to the leader: 5.3-5.9 % of kvsql's CPU time
// under a CAS load, 2.8-3.1 % with the workers, whose stacks the garbage
// collector still shrinks while they wait (docs/benchmarks.md).
const streamWorkers = 256
