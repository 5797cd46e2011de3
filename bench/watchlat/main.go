// Command watchlat measures cross-instance watch latency on any etcd v3
// endpoint set (kvsql, kine, etcd): it writes through one endpoint and
// times until the event arrives through a watch on another, optionally
// while CAS writers load every endpoint of a list. It prints p50, p99 and
// max latency and the load's CAS rate.
//
//	go run ./bench/watchlat -write 127.0.0.1:2379 -watch 127.0.0.1:2479 \
//	    -load 127.0.0.1:2379,127.0.0.1:2479,127.0.0.1:2579 -load-writers 16
//
// With -load-rate R the load writers are paced to R CAS attempts per second
// in all, instead of each running as fast as it can.
//
// With -count 0 -load-only 20s it only runs the CAS load (Kubernetes'
// GuaranteedUpdate shape: get, then txn compare mod_revision, put, else get)
// and prints its rate.
//
// With -fill N it only writes: N single-key puts through -write, spread
// round-robin over -fill-keys keys named PREFIX%06d (-fill-prefix), by
// -fill-writers concurrent clients, and prints the rate. bench/run.sh loads
// the keys its range workloads read this way (kine cannot put many keys in
// one txn) and grows the history to 100000 revisions.
package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "watchlat:", err)
		os.Exit(1)
	}
}

// user is -user: USER:PASSWORD to log in as (empty: no auth).
var user string

func client(ep string) (*clientv3.Client, error) {
	name, password, _ := strings.Cut(user, ":")
	return clientv3.New(clientv3.Config{Endpoints: []string{ep}, DialTimeout: 5 * time.Second, Logger: zap.NewNop(), Username: name, Password: password})
}

func run() error {
	write := flag.String("write", "127.0.0.1:2379", "endpoint to write through")
	watch := flag.String("watch", "127.0.0.1:2379", "endpoint to watch through")
	count := flag.Int("count", 500, "how many writes to time")
	gap := flag.Duration("gap", 2*time.Millisecond, "pause between timed writes")
	load := flag.String("load", "", "comma-separated endpoints to load with CAS writers while timing")
	loadWriters := flag.Int("load-writers", 16, "CAS writers per load endpoint")
	loadKeys := flag.Int("load-keys", 64, "keys the CAS writers share")
	paceRate := flag.Float64("load-rate", 0, "paced load: CAS attempts per second over all load writers (0: each writer as fast as it can)")
	maxTime := flag.Duration("max-time", 5*time.Minute, "stop after this long whatever the count")
	loadOnly := flag.Duration("load-only", 0, "with -count 0: only run the CAS load for this long and print its rate")
	fill := flag.Int("fill", 0, "only write this many puts through -write (see -fill-*) and print the rate")
	fillPrefix := flag.String("fill-prefix", "fill/", "with -fill: key prefix; keys are PREFIX%06d")
	fillKeys := flag.Int("fill-keys", 1000, "with -fill: how many distinct keys the puts go round-robin over")
	fillWriters := flag.Int("fill-writers", 16, "with -fill: concurrent writers (one client each)")
	fillValue := flag.Int("fill-value-size", 256, "with -fill: value size in bytes")
	flag.StringVar(&user, "user", "", "USER:PASSWORD to log in as (auth enabled); empty: none")
	flag.Parse()
	if *fill > 0 {
		return runFill(*write, *fill, *fillPrefix, *fillKeys, *fillWriters, *fillValue, *maxTime)
	}

	ctx, cancel := context.WithTimeout(context.Background(), *maxTime)
	defer cancel()
	wc, err := client(*write)
	if err != nil {
		return err
	}
	defer wc.Close()
	rc, err := client(*watch)
	if err != nil {
		return err
	}
	defer rc.Close()

	var cas atomic.Int64
	var wg sync.WaitGroup
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	if *load != "" {
		eps := strings.Split(*load, ",")
		// With -load-rate each writer starts a CAS every interval (a
		// writer that falls behind does not burst to catch up).
		var interval time.Duration
		if *paceRate > 0 {
			interval = time.Duration(float64(time.Second) * float64(*loadWriters*len(eps)) / *paceRate)
		}
		for _, ep := range eps {
			lc, err := client(ep)
			if err != nil {
				return err
			}
			defer lc.Close()
			for w := range *loadWriters {
				wg.Add(1)
				go func() {
					defer wg.Done()
					next := time.Now()
					if interval > 0 {
						// spread the writers' first attempts over one interval
						next = next.Add(time.Duration(rand.Int64N(int64(interval))))
					}
					for i := w; loadCtx.Err() == nil; i++ {
						if interval > 0 {
							if d := time.Until(next); d > 0 {
								select {
								case <-time.After(d):
								case <-loadCtx.Done():
									return
								}
							}
							next = next.Add(interval)
							if now := time.Now(); next.Before(now) {
								next = now
							}
						}
						key := fmt.Sprintf("load/%d", i%*loadKeys)
						resp, err := lc.Get(loadCtx, key)
						if err != nil {
							continue
						}
						var mod int64
						n := 0
						if len(resp.Kvs) == 1 {
							mod = resp.Kvs[0].ModRevision
							n, _ = strconv.Atoi(string(resp.Kvs[0].Value))
						}
						tr, err := lc.Txn(loadCtx).If(clientv3.Compare(clientv3.ModRevision(key), "=", mod)).
							Then(clientv3.OpPut(key, strconv.Itoa(n+1))).Else(clientv3.OpGet(key)).Commit()
						if err == nil && tr.Succeeded {
							cas.Add(1)
						}
					}
				}()
			}
		}
		time.Sleep(time.Second) // let the load reach a steady state
	}

	if *count == 0 {
		if *load == "" || *loadOnly <= 0 {
			return fmt.Errorf("-count 0 needs -load and -load-only")
		}
		start, n0 := time.Now(), cas.Load()
		select {
		case <-time.After(*loadOnly):
		case <-ctx.Done():
		}
		rate := float64(cas.Load()-n0) / time.Since(start).Seconds()
		stopLoad()
		wg.Wait()
		fmt.Printf("load_cas_per_s=%.0f writers=%d\n", rate, *loadWriters*len(strings.Split(*load, ",")))
		return nil
	}
	wch := rc.Watch(ctx, "lat/", clientv3.WithPrefix())
	// Make sure the watch is established before timing.
	if _, err := wc.Put(ctx, "lat/warmup", "x"); err != nil {
		return err
	}
	if err := waitFor(ctx, wch, "lat/warmup"); err != nil {
		return err
	}
	lat := make([]time.Duration, 0, *count)
	ackLat := make([]time.Duration, 0, *count) // put acknowledged -> event received
	casStart, loadStart := cas.Load(), time.Now()
	incomplete := false // -max-time ran out: report what was timed
	for i := range *count {
		key := fmt.Sprintf("lat/%d", i)
		start := time.Now()
		if _, err := wc.Put(ctx, key, "x"); err != nil {
			if ctx.Err() != nil && len(lat) > 0 {
				incomplete = true
				break
			}
			return err
		}
		acked := time.Now()
		if err := waitFor(ctx, wch, key); err != nil {
			if ctx.Err() != nil && len(lat) > 0 {
				incomplete = true
				break
			}
			return err
		}
		lat = append(lat, time.Since(start))
		ackLat = append(ackLat, time.Since(acked))
		time.Sleep(*gap)
	}
	loadRate := float64(cas.Load()-casStart) / time.Since(loadStart).Seconds()
	stopLoad()
	wg.Wait()
	summary := func(ds []time.Duration) string {
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		pct := func(p float64) time.Duration {
			return ds[min(len(ds)-1, int(p*float64(len(ds))))].Round(10 * time.Microsecond)
		}
		return fmt.Sprintf("p50=%v p99=%v max=%v", pct(0.50), pct(0.99), ds[len(ds)-1].Round(10*time.Microsecond))
	}
	// put_to_event: from issuing the put to receiving its event (etcd's
	// benchmark watch-latency measures this); ack_to_event: from the put's
	// acknowledgement to the event, the propagation delay alone.
	fmt.Printf("writes=%d put_to_event %s ack_to_event %s", len(lat), summary(lat), summary(ackLat))
	if *load != "" {
		fmt.Printf(" load_cas_per_s=%.0f", loadRate)
	}
	if incomplete {
		fmt.Printf(" incomplete=%d_of_%d_in_%v", len(lat), *count, *maxTime)
	}
	fmt.Println()
	return nil
}

func waitFor(ctx context.Context, wch clientv3.WatchChan, key string) error {
	for {
		select {
		case wr, ok := <-wch:
			if !ok {
				return fmt.Errorf("watch closed")
			}
			if err := wr.Err(); err != nil {
				return err
			}
			for _, ev := range wr.Events {
				if string(ev.Kv.Key) == key {
					return nil
				}
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// runFill writes n puts over keys prefix%06d (i mod keys) with writers
// concurrent clients on ep, and prints the rate and the put latency.
func runFill(ep string, n int, prefix string, keys, writers, valueSize int, maxTime time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), maxTime)
	defer cancel()
	value := strings.Repeat("v", valueSize)
	var next atomic.Int64
	var firstErr error
	var errOnce sync.Once
	var wg sync.WaitGroup
	lats := make([][]time.Duration, max(1, writers))
	start := time.Now()
	for w := range lats {
		c, err := client(ep)
		if err != nil {
			return err
		}
		defer c.Close()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= int64(n) || ctx.Err() != nil {
					return
				}
				key := fmt.Sprintf("%s%06d", prefix, i%int64(max(1, keys)))
				t0 := time.Now()
				if _, err := c.Put(ctx, key, value); err != nil {
					errOnce.Do(func() { firstErr = fmt.Errorf("put %s: %w", key, err) })
					cancel()
					return
				}
				lats[w] = append(lats[w], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if firstErr != nil {
		return firstErr
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("fill: %w", err)
	}
	var all []time.Duration
	var sum time.Duration
	for _, l := range lats {
		all = append(all, l...)
		for _, d := range l {
			sum += d
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	fmt.Printf("fill puts=%d keys=%d writers=%d puts_per_s=%.0f avg_ms=%.3f p50_ms=%.3f p99_ms=%.3f max_ms=%.3f\n",
		n, keys, max(1, writers), float64(n)/elapsed.Seconds(), ms(sum/time.Duration(len(all))),
		ms(all[len(all)/2]), ms(all[min(len(all)-1, len(all)*99/100)]), ms(all[len(all)-1]))
	return nil
}
