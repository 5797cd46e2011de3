package integration

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// attempts is what one writer of TestPartitionFromLeader did: the puts
// acknowledged, the keys of puts whose outcome is unknown, and every error.
type attempts struct {
	via     string // the instance written through
	acked   []ackedPut
	unknown map[string]bool
	errs    []error
}

// record adds the outcome of a put of key.
func (r *attempts) record(key string, resp *clientv3.PutResponse, err error, acks *atomic.Int64) {
	if err != nil {
		r.unknown[key] = true
		r.errs = append(r.errs, err)
		return
	}
	r.acked = append(r.acked, ackedPut{key, "v", resp.Header.Revision})
	acks.Add(1)
}

// putNewKeys puts through c until stop is closed, every attempt under a new
// key: a put whose outcome is unknown may still be applied later (a request
// held in the network reaches the leader after the partition heals), and a
// retry under the same key could then be overwritten by it. acks counts the
// acknowledged puts as they come.
func putNewKeys(ctx context.Context, c *clientv3.Client, via, prefix string, stop <-chan struct{}, acks *atomic.Int64) attempts {
	r := attempts{via: via, unknown: map[string]bool{}}
	for i := 0; ; i++ {
		select {
		case <-stop:
			return r
		default:
		}
		key := fmt.Sprintf("%s/%05d", prefix, i)
		resp, err := c.Put(ctx, key, "v")
		r.record(key, resp, err, acks)
		if ctx.Err() != nil {
			return r
		}
	}
}

// putArrivals starts a put through c every 50 ms until stop is closed, each
// under a new key and without waiting for the ones before, and returns
// once every one has ended.
func putArrivals(ctx context.Context, c *clientv3.Client, via, prefix string, stop <-chan struct{}, acks *atomic.Int64) attempts {
	r := attempts{via: via, unknown: map[string]bool{}}
	var mu sync.Mutex // guards r
	var puts sync.WaitGroup
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for i := 0; ; i++ {
		select {
		case <-stop:
			puts.Wait()
			return r
		case <-ctx.Done():
			puts.Wait()
			return r
		case <-tick.C:
		}
		key := fmt.Sprintf("%s/%05d", prefix, i)
		puts.Go(func() {
			resp, err := c.Put(ctx, key, "v")
			mu.Lock()
			defer mu.Unlock()
			r.record(key, resp, err, acks)
		})
	}
}

// TestPartitionFromLeader: follower B loses its network path to leader A
// while both still reach the database, then the path heals. B reaches A
// through a proxy (A advertises the proxy's address) that starts dropping
// everything, on open connections and new ones, as a partition or a
// firewall does: nothing is reset, so B notices only by its keepalive.
// Writers on both instances run throughout, and watchers on both from
// revision 1.
//
// B must go on writing directly during the partition, without waiting
// until its connection to A fails (the writes it forwarded when the
// network went are still waiting then), and forward again once the
// partition heals; the writes forwarded when it began may fail only with
// etcd's "request timed out, possibly due to connection lost" (their
// outcome is unknown), A's writes not at all. Every acknowledged write is
// there, no write is applied twice (each key is put once, so each has
// version 1), nothing appears that nobody wrote, and both watches equal
// kv_log.
func TestPartitionFromLeader(t *testing.T) {
	t.Parallel()
	for _, se := range sharedEndpoints {
		t.Run(se.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			// The target is set once A listens (startForwardingPairVia).
			link := newTCPProxy(t, "127.0.0.1:1")
			p := startForwardingPairVia(t, ctx, se, "w/probe", link)
			lwA, lwB := startLogWatch(ctx, p.ca, "w/"), startLogWatch(ctx, p.cb, "w/")
			const writersA, writersB = 4, 8
			stop := make(chan struct{})
			var acksA, acksB atomic.Int64
			results := make(chan attempts, writersA+writersB+1)
			for w := range writersA + writersB {
				c, via, acks := p.ca, "A", &acksA
				if w >= writersA {
					c, via, acks = p.cb, "B", &acksB
				}
				go func() { results <- putNewKeys(ctx, c, via, fmt.Sprintf("w/%d", w), stop, acks) }()
			}
			series := func(outcome string) string {
				return fmt.Sprintf("kvsql_write_forwards_total{outcome=%q}", outcome)
			}
			pollUntil(t, time.Minute, "B forwards 200 writes before the partition", func() bool {
				return metricValue(t, p.mb, series("forwarded")) >= 200
			})

			link.block()
			cut := time.Now()
			fromB, fromA := acksB.Load(), acksA.Load()
			directBefore := metricValue(t, p.mb, series("direct"))
			// B's writers now wait on writes forwarded into the void. New
			// requests keep arriving, one every 50 ms (as from an API
			// server's many clients); once the leader's silence is noticed,
			// they must not wait with them.
			var acksLate atomic.Int64
			go func() { results <- putArrivals(ctx, p.cb, "B", "w/late", stop, &acksLate) }()
			pollUntil(t, time.Minute, "B acknowledges a write that arrived during the partition", func() bool {
				return acksLate.Load() > 0
			})
			resumed := time.Since(cut)
			// Without waiting for the connection to fail: the writes
			// forwarded when the network went are still unanswered.
			if lost := metricValue(t, p.mb, series("lost")); lost != 0 {
				t.Errorf("B acknowledged the first write that arrived during the partition only after %v forwarded writes were lost (%v after the cut); want it to write directly while they wait", lost, resumed)
			}
			pollUntil(t, time.Minute, "B acknowledges 200 writes during the partition", func() bool {
				return acksB.Load() >= fromB+200
			})
			direct := metricValue(t, p.mb, series("direct")) - directBefore
			if direct < 200 {
				t.Errorf("B wrote %v writes directly during the partition; want at least the 200 it acknowledged", direct)
			}
			if acksA.Load() == fromA {
				t.Error("A acknowledged no write during the partition")
			}

			link.unblock()
			lasted := time.Since(cut)
			healed := metricValue(t, p.mb, series("forwarded"))
			pollUntil(t, time.Minute, "B forwards again after the partition heals", func() bool {
				return metricValue(t, p.mb, series("forwarded")) >= healed+100
			})
			close(stop)
			var acked []ackedPut
			written := map[string]bool{}
			for range writersA + writersB + 1 {
				r := <-results
				acked = append(acked, r.acked...)
				for _, a := range r.acked {
					written[a.key] = true
				}
				for k := range r.unknown {
					written[k] = true
				}
				for _, err := range r.errs {
					if r.via == "B" && errors.Is(err, rpctypes.ErrTimeoutDueToConnectionLost) {
						continue
					}
					t.Errorf("a put through %s failed: %v (the partition may only leave B's forwarded writes' outcome unknown: %v)", r.via, err, rpctypes.ErrTimeoutDueToConnectionLost)
				}
			}
			t.Logf("partition of %v; the first write arriving at B after the cut was acknowledged %v after it; forwarded %v before it, %v after the heal; direct %v; lost %v; acknowledged %d",
				lasted.Round(time.Millisecond), resumed.Round(time.Millisecond), healed, metricValue(t, p.mb, series("forwarded"))-healed, direct,
				metricValue(t, p.mb, series("lost")), len(acked))

			evsA, finalA := lwA.end(t, ctx)
			evsB, finalB := lwB.end(t, ctx)
			checkHistory(t, ctx, p.ca, se.open(t, p.ep), acked, map[string][]*clientv3.Event{"watch on A": evsA, "watch on B": evsB}, max(finalA, finalB))
			all, err := p.ca.Get(ctx, "w/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
			if err != nil {
				t.Fatal(err)
			}
			for _, kv := range all.Kvs {
				k := string(kv.Key)
				if k == "w/probe" {
					continue
				}
				if !written[k] {
					t.Errorf("key %s is there but no writer put it", k)
				}
				if kv.Version != 1 {
					t.Errorf("key %s has version %d: a put was applied %d times", k, kv.Version, kv.Version)
				}
			}
		})
	}
}
