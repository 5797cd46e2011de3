package integration

import (
	"context"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kvsql/kvsql/backends"
)

// outage is how long the tests below keep the database out of reach.
const outage = 30 * time.Second

// proxiedInstances starts two kvsql instances on a fresh database of se,
// reached through a TCP proxy the test controls.
func proxiedInstances(t *testing.T, se sharedEndpoint) ([]*clientv3.Client, backends.Backend, *tcpProxy) {
	t.Helper()
	direct := se.endpoint(t)
	ep, proxy := viaProxy(t, direct)
	var clients []*clientv3.Client
	for range 2 {
		var s server
		if se.name == "postgres" {
			st, src := openPostgres(t, ep)
			t.Cleanup(func() { _ = src.Close() })
			s = serveKVSQL(t, st, src, serverOptions{})
		} else {
			st, src := openMySQL(t, ep)
			t.Cleanup(func() { _ = src.Close() })
			s = serveKVSQL(t, st, src, serverOptions{})
		}
		clients = append(clients, newClient(t, s))
	}
	// The history is checked against the log read directly.
	return clients, se.open(t, direct), proxy
}

// TestDatabaseRefusesConnections: the database's address resets every
// connection for 30 s (a stopped server), under writes and watches on two
// instances. Requests fail at once with Unavailable and a message naming
// the database's address; watch streams stay open; when the database is
// back, everything resumes without restarting kvsql, and every watcher
// gets every event once, in order.
func TestDatabaseRefusesConnections(t *testing.T) {
	t.Parallel()
	for _, se := range sharedEndpoints {
		t.Run(se.name, func(t *testing.T) {
			t.Parallel()
			clients, be, proxy := proxiedInstances(t, se)
			runFaultLoad(t, clients, be, []func(){func() {
				proxy.refuseAll()
				defer proxy.accept()
				ctx := context.Background()
				until := time.Now().Add(outage)
				checked := 0
				for time.Now().Before(until) {
					for i, c := range clients {
						// A refused connection fails at once; the deadline only
						// keeps a hung request from hanging the test.
						rctx, cancel := context.WithTimeout(ctx, 15*time.Second)
						_, perr := c.Put(rctx, "during-outage", "v")
						_, gerr := c.Get(rctx, "w/", clientv3.WithPrefix(), clientv3.WithLimit(1))
						cancel()
						for what, err := range map[string]error{"put": perr, "get": gerr} {
							// The in-process watch hub may still be answering from a
							// connection that has not noticed yet; only a database
							// error is checked for its form.
							if err == nil {
								continue
							}
							if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), proxy.Addr()) {
								t.Errorf("%s through instance %d while the database refuses connections: %v; want Unavailable naming %s", what, i, err, proxy.Addr())
								return
							}
							checked++
						}
					}
					time.Sleep(time.Second) // a client retrying at its own pace
				}
				if checked == 0 {
					t.Error("no request failed while the database refused connections")
				}
			}})
		})
	}
}

// TestDatabaseNetworkDropped: the network to the database drops everything
// for 30 s (open connections hang, new ones get no answer), under writes
// (retried, each with a 5 s deadline) and watches on two instances. Watch
// streams stay open, and when the network is back everything resumes
// without restarting kvsql: every acknowledged write is there and every
// watcher gets every event once, in order.
func TestDatabaseNetworkDropped(t *testing.T) {
	t.Parallel()
	for _, se := range sharedEndpoints {
		t.Run(se.name, func(t *testing.T) {
			t.Parallel()
			clients, be, proxy := proxiedInstances(t, se)
			runFaultLoad(t, clients, be, []func(){func() {
				proxy.block()
				defer proxy.unblock()
				// Requests meanwhile fail (at their deadline at the latest);
				// what matters is what follows.
				time.Sleep(outage)
			}})
		})
	}
}
