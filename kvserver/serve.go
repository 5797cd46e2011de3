package kvserver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	gwruntime "github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/soheilhy/cmux"
	"github.com/tmc/grpc-websocket-proxy/wsproxy"
	"go.etcd.io/etcd/api/v3/etcdserverpb/gw"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/encoding/protojson"
)

const (
	// matchTimeout bounds how long a new plain connection may take to send
	// its first bytes, which decide whether it speaks gRPC or HTTP/1.
	matchTimeout = 10 * time.Second
	// readHeaderTimeout is etcd's for its client HTTP servers.
	readHeaderTimeout = 5 * time.Minute
	// gatewayConnBuffer is the in-memory pipe's buffer between the JSON
	// gateway and the gRPC server.
	gatewayConnBuffer = 1 << 20
)

// ClientListener is the listener of one client URL.
type ClientListener struct {
	net.Listener
	// Secure serves TLS (an https:// URL) with FrontendConfig.TLS.
	Secure bool
	// HTTPOnly serves only HTTP on it (etcd's --listen-client-http-urls).
	// When any listener is HTTPOnly, the others serve only gRPC.
	HTTPOnly bool
}

// FrontendConfig configures a Frontend.
type FrontendConfig struct {
	Listeners []ClientListener
	// TLS is etcd's client transport security: the certificate (reloaded
	// from its files at every handshake, so a rotated certificate is used
	// without a restart), the trusted CA, client certificate auth, the CRL
	// and allowed CNs/hostnames. Required when a listener is Secure.
	TLS *transport.TLSInfo
	// Metrics, if set, is served at /metrics.
	Metrics http.Handler
}

// Frontend serves gRPC and HTTP on the client listeners as etcd does: on a
// plain listener the first bytes of a connection pick gRPC (HTTP/2) or
// HTTP/1 (github.com/soheilhy/cmux); on a TLS listener every request is
// HTTP, and those with a gRPC content type go to the gRPC server
// (grpc.Server.ServeHTTP). HTTP serves /health, /livez, /readyz,
// /version, /metrics and etcd's JSON gateway under /v3/ (HTTPHandler);
// the gateway calls the gRPC server through an in-process connection, so
// its requests are authenticated by the listener they came in on.
type Frontend struct {
	log     *slog.Logger
	grpc    *grpc.Server // plain listeners, TLS requests through ServeHTTP, the gateway
	grpcTLS *grpc.Server // gRPC-only TLS listeners (with a split); nil if none
	handler http.Handler
	gwLis   *bufconn.Listener
	gwConn  *grpc.ClientConn
	https   []*http.Server
	roots   []net.Listener // closed by Stop: no new connections
	serves  []func() error // Serve runs each

	stopping atomic.Bool // set by Stop: listener errors are expected
}

// NewFrontend prepares to serve cfg.Listeners; Serve serves them. Stop
// releases them, whether Serve ran or not.
func (s *Server) NewFrontend(cfg FrontendConfig) (*Frontend, error) {
	f := &Frontend{log: s.log.With("component", "frontend")}
	var tc *tls.Config
	split := false
	for _, l := range cfg.Listeners {
		if l.Secure && tc == nil {
			if cfg.TLS == nil || cfg.TLS.Empty() {
				return nil, fmt.Errorf("TLS key/cert (--cert-file, --key-file) must be provided for the https:// client URL on %s", l.Addr())
			}
			var err error
			if tc, err = cfg.TLS.ServerConfig(); err != nil {
				return nil, fmt.Errorf("client TLS: %w", err)
			}
		}
		split = split || l.HTTPOnly
	}
	f.grpc = grpc.NewServer(s.GRPCOptions()...)
	s.Register(f.grpc)
	gateway, err := f.newGateway()
	if err != nil {
		return nil, err
	}
	f.handler = s.HTTPHandler(cfg.Metrics, gateway)
	f.serves = append(f.serves, func() error { return f.grpc.Serve(f.gwLis) })
	for _, l := range cfg.Listeners {
		grpcOnly := split && !l.HTTPOnly
		httpOnly := split && l.HTTPOnly
		switch {
		case !l.Secure && grpcOnly:
			f.roots = append(f.roots, l.Listener)
			f.serves = append(f.serves, func() error { return f.grpc.Serve(l) })
		case !l.Secure && httpOnly:
			f.roots = append(f.roots, l.Listener)
			hs := f.newHTTPServer(f.handler, nil)
			f.serves = append(f.serves, func() error { return hs.Serve(l) })
		case !l.Secure:
			f.roots = append(f.roots, l.Listener)
			m := cmux.New(l)
			m.SetReadTimeout(matchTimeout)
			httpL := m.Match(cmux.HTTP1())
			grpcL := m.Match(cmux.HTTP2())
			hs := f.newHTTPServer(f.handler, nil)
			f.serves = append(f.serves, func() error { return hs.Serve(httpL) }, func() error { return f.grpc.Serve(grpcL) }, m.Serve)
		case grpcOnly:
			// gRPC's own TLS, as etcd's gRPC-only listeners; the CRL is
			// checked in the handshake.
			f.roots = append(f.roots, l.Listener)
			if f.grpcTLS == nil {
				gtc := tc.Clone()
				cfg.TLS.ConfigureCRLVerification(gtc)
				f.grpcTLS = grpc.NewServer(append(s.GRPCOptions(), grpc.Creds(credentials.NewTLS(gtc)))...)
				s.Register(f.grpcTLS)
			}
			f.serves = append(f.serves, func() error { return f.grpcTLS.Serve(l) })
		default:
			tl, err := transport.NewTLSListener(l, cfg.TLS)
			if err != nil {
				f.Stop(context.Background())
				return nil, fmt.Errorf("client TLS: %w", err)
			}
			f.roots = append(f.roots, tl)
			h := f.handler
			if !httpOnly {
				h = grpcOrHTTP(f.grpc, h)
			}
			hs := f.newHTTPServer(h, tc)
			f.serves = append(f.serves, func() error { return hs.Serve(tl) })
		}
	}
	return f, nil
}

// newGateway connects etcd's gRPC-gateway handlers (the ones etcd's API
// module ships, with etcd's JSON options and its websocket wrapper) to the
// gRPC server over an in-memory connection.
func (f *Frontend) newGateway() (http.Handler, error) {
	f.gwLis = bufconn.Listen(gatewayConnBuffer)
	conn, err := grpc.NewClient("passthrough:///kvsql-gateway",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return f.gwLis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(math.MaxInt32)),
	)
	if err != nil {
		return nil, fmt.Errorf("gateway connection: %w", err)
	}
	f.gwConn = conn
	mux := gwruntime.NewServeMux(gwruntime.WithMarshalerOption(gwruntime.MIMEWildcard, &gwruntime.HTTPBodyMarshaler{
		Marshaler: &gwruntime.JSONPb{
			MarshalOptions:   protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: false},
			UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: true},
		},
	}))
	for _, register := range []func(context.Context, *gwruntime.ServeMux, *grpc.ClientConn) error{
		gw.RegisterKVHandler, gw.RegisterWatchHandler, gw.RegisterLeaseHandler,
		gw.RegisterClusterHandler, gw.RegisterMaintenanceHandler, gw.RegisterAuthHandler,
	} {
		if err := register(context.Background(), mux, conn); err != nil {
			_ = conn.Close()
			return nil, fmt.Errorf("gateway: %w", err)
		}
	}
	return wsproxy.WebsocketProxy(mux,
		// A websocket carries a stream: the gateway serves streams on POST.
		wsproxy.WithRequestMutator(func(_, out *http.Request) *http.Request {
			out.Method = http.MethodPost
			return out
		}),
		wsproxy.WithMaxRespBodyBufferSize(math.MaxInt32),
		wsproxy.WithLogger(wsLogger{f.log}),
	), nil
}

// wsLogger hands the websocket proxy's messages to slog.
type wsLogger struct{ log *slog.Logger }

func (l wsLogger) Warnln(v ...any)  { l.log.Warn("websocket proxy", "msg", fmt.Sprint(v...)) }
func (l wsLogger) Debugln(v ...any) { l.log.Debug("websocket proxy", "msg", fmt.Sprint(v...)) }

// grpcOrHTTP sends requests with a gRPC content type over HTTP/2 to gs and
// the rest to h: how gRPC and HTTP share a TLS listener.
func grpcOrHTTP(gs *grpc.Server, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor == 2 && strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc") {
			gs.ServeHTTP(w, r)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// newHTTPServer returns an HTTP server for handler h, with etcd's limits.
func (f *Frontend) newHTTPServer(h http.Handler, tc *tls.Config) *http.Server {
	hs := &http.Server{
		Handler:           h,
		TLSConfig:         tc,
		ReadHeaderTimeout: readHeaderTimeout,
		ErrorLog:          log.New(io.Discard, "", 0), // a client's broken request is not ours to log
		// gRPC over TLS runs on this server's HTTP/2: lift its default
		// limit of 250 concurrent streams (watches) per connection, as
		// the native gRPC server has none.
		HTTP2: &http.HTTP2Config{MaxConcurrentStreams: math.MaxInt32},
	}
	f.https = append(f.https, hs)
	return hs
}

// Serve serves every listener until Stop, then returns nil; if a listener
// fails before, it returns that error (call Stop to release the rest).
func (f *Frontend) Serve() error {
	var g errgroup.Group
	for _, serve := range f.serves {
		g.Go(func() error {
			err := serve()
			if f.stopping.Load() || err == nil || errors.Is(err, http.ErrServerClosed) || errors.Is(err, grpc.ErrServerStopped) {
				return nil
			}
			return err
		})
	}
	return g.Wait()
}

// Stop stops accepting connections, lets in-flight requests finish until
// ctx ends, then closes the rest, and returns when all is closed. Call
// Server.Shutdown first so that watch and keep-alive streams end.
func (f *Frontend) Stop(ctx context.Context) {
	if f.stopping.Swap(true) {
		return
	}
	for _, l := range f.roots {
		_ = l.Close()
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		// HTTP first: gRPC requests over TLS run inside these servers,
		// and gRPC's graceful stop would cut them off (it cannot drain
		// ServeHTTP streams); gateway requests need the gRPC server.
		var wg sync.WaitGroup
		for _, hs := range f.https {
			wg.Go(func() { _ = hs.Shutdown(ctx) })
		}
		if f.grpcTLS != nil {
			wg.Go(f.grpcTLS.GracefulStop)
		}
		wg.Wait()
		f.grpc.GracefulStop()
	}()
	select {
	case <-done:
	case <-ctx.Done():
		f.log.Warn("in-flight requests did not finish in time; closing them")
		for _, hs := range f.https {
			_ = hs.Close()
		}
		if f.grpcTLS != nil {
			f.grpcTLS.Stop()
		}
		f.grpc.Stop()
		<-done
	}
	_ = f.gwConn.Close()
}
