package integration

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kvsql/kvsql/backends"
)

// sharedDB starts n kvsql instances on one database and returns their
// servers and a backend to read the log with.
type sharedDB func(t *testing.T, n int, opts serverOptions) ([]server, backends.Backend)

func postgresInstances(t *testing.T, n int, opts serverOptions) ([]server, backends.Backend) {
	return postgresInstancesOn(t, freshPostgresURL(t), n, opts)
}

// postgresInstancesOn starts n kvsql instances on the PostgreSQL database
// at url.
func postgresInstancesOn(t *testing.T, url string, n int, opts serverOptions) ([]server, backends.Backend) {
	var out []server
	var first backends.Backend
	for range n {
		st, src := openPostgres(t, url)
		t.Cleanup(func() { _ = src.Close() })
		out = append(out, serveKVSQL(t, st, src, opts))
		if first == nil {
			first = st
		}
	}
	return out, first
}

func mysqlInstances(t *testing.T, n int, opts serverOptions) ([]server, backends.Backend) {
	return mysqlInstancesOn(t, freshMySQLEndpoint(t), n, opts)
}

// mysqlInstancesOn starts n kvsql instances on the MySQL database at ep.
func mysqlInstancesOn(t *testing.T, ep string, n int, opts serverOptions) ([]server, backends.Backend) {
	var out []server
	var first backends.Backend
	for range n {
		st, src := openMySQL(t, ep)
		t.Cleanup(func() { _ = src.Close() })
		out = append(out, serveKVSQL(t, st, src, opts))
		if first == nil {
			first = st
		}
	}
	return out, first
}

// sqliteInstances starts one kvsql on a fresh SQLite database (n must be
// 1: SQLite is one process's database).
func sqliteInstances(t *testing.T, n int, opts serverOptions) ([]server, backends.Backend) {
	if n != 1 {
		t.Fatalf("SQLite serves one instance, not %d", n)
	}
	be, src := openSQLite(t)
	return []server{serveKVSQL(t, be, src, opts)}, be
}

// sharedDBBackends lists the backends several instances can share.
var sharedDBBackends = []struct {
	name  string
	start sharedDB
}{
	{"postgres", postgresInstances},
	{"mysql", mysqlInstances},
}

// eventKey is what two watchers must agree on for each event.
func eventString(ev *clientv3.Event) string {
	s := fmt.Sprintf("%s %q rev=%d create=%d ver=%d val=%q", ev.Type, ev.Kv.Key, ev.Kv.ModRevision, ev.Kv.CreateRevision, ev.Kv.Version, ev.Kv.Value)
	if ev.PrevKv != nil {
		s += fmt.Sprintf(" prev(rev=%d val=%q)", ev.PrevKv.ModRevision, ev.PrevKv.Value)
	}
	return s
}

// logWatch is a watch on a prefix from revision 1 whose events are
// collected until end is called.
type logWatch struct {
	c      *clientv3.Client
	prefix string
	upTo   chan int64
	done   chan struct{}
	evs    []*clientv3.Event
	err    error
}

func startLogWatch(ctx context.Context, c *clientv3.Client, prefix string) *logWatch {
	w := &logWatch{c: c, prefix: prefix, upTo: make(chan int64, 1), done: make(chan struct{})}
	wch := c.Watch(ctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(1))
	go func() { defer close(w.done); w.evs, w.err = collect(ctx, wch, w.upTo) }()
	return w
}

// end reads the current revision through the watch's client and returns
// every event of the prefix up to it, and that revision.
func (w *logWatch) end(t *testing.T, ctx context.Context) ([]*clientv3.Event, int64) {
	t.Helper()
	final, err := w.c.Get(ctx, w.prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil {
		t.Fatal(err)
	}
	w.upTo <- final.Header.Revision
	<-w.done
	if w.err != nil {
		t.Fatal(w.err)
	}
	return w.evs, final.Header.Revision
}

// TestMultiInstanceWatchAndCAS runs three kvsql instances on one database.
// Writers on every instance race compare-and-swap increments on a few
// shared keys and write and delete many others; watchers on every instance
// (from revision 1, joining late, with and without prev_kv) must all see the
// same gapless, ordered history, equal to kv_log, and every acknowledged
// increment must be counted exactly once. The safety poll is off, so every
// cross-instance event travels through the database's change stream.
func TestMultiInstanceWatchAndCAS(t *testing.T) {
	t.Parallel()
	for _, b := range sharedDBBackends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			const instances, writersPer, incsPer, counters = 3, 3, 15, 3
			servers, be := b.start(t, instances, serverOptions{SafetyPoll: time.Hour})
			clients := make([]*clientv3.Client, instances)
			for i, s := range servers {
				clients[i] = newClient(t, s)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()

			type watch struct {
				name string
				evs  []*clientv3.Event
				err  error
				done chan struct{}
				upTo chan int64
			}
			var watches []*watch
			startWatch := func(name string, c *clientv3.Client, opts ...clientv3.OpOption) {
				w := &watch{name: name, done: make(chan struct{}), upTo: make(chan int64, 1)}
				watches = append(watches, w)
				wch := c.Watch(ctx, "", append([]clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithRev(1)}, opts...)...)
				go func() {
					defer close(w.done)
					w.evs, w.err = collect(ctx, wch, w.upTo)
				}()
			}
			for i, c := range clients {
				startWatch(fmt.Sprintf("instance %d from 1 with prev_kv", i), c, clientv3.WithPrevKV())
				startWatch(fmt.Sprintf("instance %d from 1", i), c)
			}

			var wg sync.WaitGroup
			var mu sync.Mutex
			acked := make([]int, counters)
			for i, c := range clients {
				for w := range writersPer {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for n := range incsPer {
							key := fmt.Sprintf("counter/%d", (i+w+n)%counters)
							for {
								resp, err := c.Get(ctx, key)
								if err != nil {
									t.Error(err)
									return
								}
								cur, mod := 0, int64(0)
								if len(resp.Kvs) == 1 {
									cur, _ = strconv.Atoi(string(resp.Kvs[0].Value))
									mod = resp.Kvs[0].ModRevision
								}
								tr, err := c.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", mod)).
									Then(clientv3.OpPut(key, strconv.Itoa(cur+1))).Commit()
								if err != nil {
									t.Error(err)
									return
								}
								if tr.Succeeded {
									mu.Lock()
									acked[(i+w+n)%counters]++
									mu.Unlock()
									break
								}
							}
							own := fmt.Sprintf("own/%d/%d/%d", i, w, n)
							if _, err := c.Put(ctx, own, "x"); err != nil {
								t.Error(err)
								return
							}
							if n%3 == 0 {
								if _, err := c.Delete(ctx, own); err != nil {
									t.Error(err)
									return
								}
							}
						}
					}()
				}
				if i == 0 {
					// A late joiner on another instance, from revision 1.
					startWatch("late joiner on instance 2 with prev_kv", clients[2], clientv3.WithPrevKV())
				}
			}
			wg.Wait()
			if t.Failed() {
				return
			}
			final, err := clients[0].Get(ctx, "counter/", clientv3.WithPrefix())
			if err != nil {
				t.Fatal(err)
			}
			rev := final.Header.Revision
			for i, kv := range final.Kvs {
				if got, _ := strconv.Atoi(string(kv.Value)); got != acked[i] {
					t.Errorf("%s = %d, but %d increments were acknowledged", kv.Key, got, acked[i])
				}
			}
			for _, w := range watches {
				w.upTo <- rev
			}
			for _, w := range watches {
				<-w.done
				if w.err != nil {
					t.Fatalf("%s: %v", w.name, w.err)
				}
			}
			// The log itself is the reference.
			logEvs, err := readLog(ctx, be, rev)
			if err != nil {
				t.Fatal(err)
			}
			if least := instances * writersPer * incsPer * 2; len(logEvs) < least {
				t.Fatalf("kv_log has %d events up to revision %d; the writers alone made at least %d", len(logEvs), rev, least)
			}
			named := map[string][]*clientv3.Event{}
			for _, w := range watches {
				named[w.name] = w.evs
			}
			if err := checkWatchesAgainstLog(ctx, be, named, rev); err != nil {
				t.Error(err)
			}
		})
	}
}
