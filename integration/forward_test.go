package integration

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// metricValue scrapes one series (name with its labels, exactly as
// /metrics prints it) from a kvsql process; 0 if it is not there yet.
func metricValue(t *testing.T, addr, series string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if ok && name == series {
			v, err := strconv.ParseFloat(val, 64)
			if err != nil {
				t.Fatalf("metric %s: %v", series, err)
			}
			return v
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return 0
}

const batchCount = "kvsql_write_batch_requests_count"

// forwardingPair is two kvsql processes on one database: A holds the
// leader lock and B forwards its writes to A.
type forwardingPair struct {
	ep     string
	a, b   *kvsqlProc
	ca, cb *clientv3.Client
	ma, mb string // metrics listeners (host:port)
}

// startForwardingPair starts A, waits until it leads, starts B, and puts
// probe through B until B has forwarded a write (B finds the leader at a
// heartbeat, every 2 s).
func startForwardingPair(t *testing.T, ctx context.Context, se sharedEndpoint, probe string) forwardingPair {
	t.Helper()
	return startForwardingPairVia(t, ctx, se, probe, nil)
}

// startForwardingPairVia is startForwardingPair with B's path to A through
// link, if not nil: A advertises link's address, which forwards to A.
func startForwardingPairVia(t *testing.T, ctx context.Context, se sharedEndpoint, probe string, link *tcpProxy) forwardingPair {
	t.Helper()
	p := forwardingPair{ep: se.endpoint(t), ma: procFreeAddr(t), mb: procFreeAddr(t)}
	args := []string{"--endpoint=" + p.ep, "--name=a", "--listen-metrics-urls=http://" + p.ma}
	if link != nil {
		args = append(args, "--advertise-client-urls=http://"+link.Addr())
	}
	p.a = startKVSQLProc(t, args...)
	if link != nil {
		link.retarget(p.a.Addr)
	}
	pollUntil(t, 20*time.Second, "instance A takes the leader lock", func() bool { return se.leaderHeld(t, p.ep) })
	p.b = startKVSQLProc(t, "--endpoint="+p.ep, "--name=b", "--listen-metrics-urls=http://"+p.mb)
	p.ca, p.cb = p.a.client(t), p.b.client(t)
	pollUntil(t, 20*time.Second, "B forwards a write to A", func() bool {
		if _, err := p.cb.Put(ctx, probe, "x"); err != nil {
			t.Fatal(err)
		}
		return metricValue(t, p.mb, `kvsql_write_forwards_total{outcome="forwarded"}`) > 0
	})
	return p
}

// TestForwardWrites: two kvsql processes on one database. A holds the
// leader lock, so B forwards its writes to A and they commit in A's group
// commits: A's batch count grows by them and B's stays put. Results, prev
// kvs, failed compares and etcd errors come back through B unchanged, with
// B's member ID in the header. When A is killed, B writes directly (and
// then takes the leader lock).
func TestForwardWrites(t *testing.T) {
	t.Parallel()
	for _, se := range sharedEndpoints {
		t.Run(se.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			p := startForwardingPair(t, ctx, se, "probe")
			a, b, ca, cb, ma, mb := p.a, p.b, p.ca, p.cb, p.ma, p.mb
			beforeA, beforeB := metricValue(t, ma, batchCount), metricValue(t, mb, batchCount)
			get, err := cb.Get(ctx, "probe")
			if err != nil {
				t.Fatal(err)
			}
			memberB := get.Header.MemberId
			getA, err := ca.Get(ctx, "probe")
			if err != nil {
				t.Fatal(err)
			}
			memberA := getA.Header.MemberId
			for name, c := range map[string]*clientv3.Client{"A": ca, "B": cb} {
				ep := a.Addr
				if name == "B" {
					ep = b.Addr
				}
				st, err := c.Status(ctx, ep)
				if err != nil {
					t.Fatal(err)
				}
				if st.Leader != memberA {
					t.Errorf("Status through %s: leader %x, want A's %x", name, st.Leader, memberA)
				}
			}

			put, err := cb.Put(ctx, "k", "v1")
			if err != nil {
				t.Fatal(err)
			}
			if put.Header.MemberId != memberB {
				t.Errorf("forwarded Put header member = %x, want B's %x", put.Header.MemberId, memberB)
			}
			put2, err := cb.Put(ctx, "k", "v2", clientv3.WithPrevKV())
			if err != nil {
				t.Fatal(err)
			}
			if put2.PrevKv == nil || string(put2.PrevKv.Value) != "v1" || put2.Header.Revision != put.Header.Revision+1 {
				t.Fatalf("second Put: prev %v rev %d; want v1 and rev %d", put2.PrevKv, put2.Header.Revision, put.Header.Revision+1)
			}
			cas := func(mod int64, val string) *clientv3.TxnResponse {
				tr, err := cb.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision("k"), "=", mod)).
					Then(clientv3.OpPut("k", val)).Else(clientv3.OpGet("k")).Commit()
				if err != nil {
					t.Fatal(err)
				}
				return tr
			}
			if tr := cas(put2.Header.Revision, "v3"); !tr.Succeeded {
				t.Fatal("CAS at the current mod revision failed")
			}
			tr := cas(put2.Header.Revision, "v4")
			if tr.Succeeded {
				t.Fatal("CAS at a stale mod revision succeeded")
			}
			if kvs := tr.Responses[0].GetResponseRange().Kvs; len(kvs) != 1 || string(kvs[0].Value) != "v3" {
				t.Fatalf("failed CAS's Get = %v, want v3", kvs)
			}
			del, err := cb.Delete(ctx, "k", clientv3.WithPrevKV())
			if err != nil || del.Deleted != 1 || string(del.PrevKvs[0].Value) != "v3" {
				t.Fatalf("Delete = %v, %v; want 1 deleted with prev v3", del, err)
			}
			if _, err := cb.Put(ctx, "leased", "v", clientv3.WithLease(0x1234)); !errors.Is(err, rpctypes.ErrLeaseNotFound) {
				t.Fatalf("Put with an unknown lease through B = %v, want %v", err, rpctypes.ErrLeaseNotFound)
			}
			// A write forwarded to another member is refused unapplied.
			wrong := metadata.AppendToOutgoingContext(ctx, "kvsql-forwarded", "deadbeef")
			if _, err := ca.Put(wrong, "misrouted", "v"); status.Code(err) != codes.FailedPrecondition {
				t.Errorf("Put marked as forwarded to another member = %v, want FailedPrecondition", err)
			}
			if got, err := ca.Get(ctx, "misrouted"); err != nil || len(got.Kvs) != 0 {
				t.Errorf("the misrouted put was applied: %v, %v", got, err)
			}
			// Everything is there through A, at the revision B reported.
			ga, err := ca.Get(ctx, "k")
			if err != nil || len(ga.Kvs) != 0 || ga.Header.Revision != del.Header.Revision {
				t.Fatalf("Get through A = %v, %v; want no key at revision %d", ga, err, del.Header.Revision)
			}
			if d := metricValue(t, mb, batchCount) - beforeB; d != 0 {
				t.Errorf("B ran %v group commits of its own; want every write forwarded", d)
			}
			if d := metricValue(t, ma, batchCount) - beforeA; d < 5 {
				t.Errorf("A ran %v group commits; want at least the 5 writes B forwarded", d)
			}

			// A dies: B writes without it.
			a.kill()
			var acked int64
			pollUntil(t, 30*time.Second, "a write through B after A died", func() bool {
				pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				defer cancel()
				resp, err := cb.Put(pctx, "after", "x")
				if err == nil {
					acked = resp.Header.Revision
				}
				return err == nil
			})
			got, err := cb.Get(ctx, "after")
			if err != nil || len(got.Kvs) != 1 || got.Kvs[0].ModRevision != acked {
				t.Fatalf("Get after = %v, %v; want the write acked at %d", got, err, acked)
			}
			if metricValue(t, mb, batchCount) == beforeB {
				t.Error("B's group commit never ran after A died")
			}
			pollUntil(t, 30*time.Second, "Status through B names B as leader", func() bool {
				st, err := cb.Status(ctx, b.Addr)
				return err == nil && st.Leader == memberB
			})
		})
	}
}

// TestLeaderGoneWhileForwarding: 16 writers put through follower B, whose
// writes go to leader A, while A goes away: SIGKILLed mid group commit, or
// stopped cleanly (SIGTERM, as in a rolling restart). The writers retry
// failed puts and go on through B, which writes directly and then leads.
// Every write B acknowledged is there, and a watcher on B from revision 1
// sees exactly kv_log. After a kill, the puts that were in flight to A fail
// with etcd's "request timed out, possibly due to connection lost" (their
// outcome is unknown); after a clean stop no put fails at all.
func TestLeaderGoneWhileForwarding(t *testing.T) {
	t.Parallel()
	for _, se := range sharedEndpoints {
		for _, clean := range []bool{false, true} {
			name := se.name + "/sigkill"
			if clean {
				name = se.name + "/sigterm"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				defer cancel()
				p := startForwardingPair(t, ctx, se, "w/probe")
				cb := p.cb
				lw := startLogWatch(ctx, cb, "w/")

				stop := make(chan struct{})
				type result struct {
					acked []ackedPut
					errs  []error
				}
				results := make(chan result, 16)
				for w := range 16 {
					go func() {
						var r result
						defer func() { results <- r }()
						for i := 0; ; i++ {
							k := fmt.Sprintf("w/%02d/%05d", w, i)
							for {
								select {
								case <-stop:
									return
								default:
								}
								resp, err := cb.Put(ctx, k, "v")
								if err == nil {
									r.acked = append(r.acked, ackedPut{k, "v", resp.Header.Revision})
									break
								}
								r.errs = append(r.errs, err)
							}
						}
					}()
				}
				waitForRevision(t, ctx, cb, 200)
				forwarded := metricValue(t, p.mb, `kvsql_write_forwards_total{outcome="forwarded"}`)
				if clean {
					p.a.signal(syscall.SIGTERM)
					p.a.wait(30 * time.Second)
				} else {
					p.a.kill()
				}
				goneAt, err := cb.Get(ctx, "x", clientv3.WithCountOnly())
				if err != nil {
					t.Fatal(err)
				}
				waitForRevision(t, ctx, cb, goneAt.Header.Revision+200)
				close(stop)
				var acked []ackedPut
				var errs []error
				for range 16 {
					r := <-results
					acked, errs = append(acked, r.acked...), append(errs, r.errs...)
				}
				evs, final := lw.end(t, ctx)
				if forwarded < 100 {
					t.Fatalf("only %v writes forwarded to A before it went away", forwarded)
				}
				t.Logf("forwarded before A went away: %v; direct %v, lost %v; acknowledged %d, failed puts %d",
					forwarded, metricValue(t, p.mb, `kvsql_write_forwards_total{outcome="direct"}`),
					metricValue(t, p.mb, `kvsql_write_forwards_total{outcome="lost"}`), len(acked), len(errs))
				bad := 0
				for _, err := range errs {
					if !clean && errors.Is(err, rpctypes.ErrTimeoutDueToConnectionLost) {
						continue
					}
					if bad++; bad <= 5 {
						t.Errorf("put through B failed: %v (clean stop: %v; a kill may only fail puts with %v)", err, clean, rpctypes.ErrTimeoutDueToConnectionLost)
					}
				}
				checkHistory(t, ctx, cb, se.open(t, p.ep), acked, map[string][]*clientv3.Event{"watch on B": evs}, final)
			})
		}
	}
}
