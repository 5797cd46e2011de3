// Command watchlat measures cross-instance watch latency on any etcd v3
// endpoint set (kvsql, kine, etcd): it writes through one endpoint and
// times until the event arrives through a watch on another, optionally
// while CAS writers load every endpoint of a list. It prints p50, p99 and
// max latency and the load's CAS rate.
//
//	go run ./bench/watchlat -write 127.0.0.1:2379 -watch 127.0.0.1:2479 \
//	    -load 127.0.0.1:2379,127.0.0.1:2479,127.0.0.1:2579 -load-writers 16
//
// With -count 0 -load-only 20s it only runs the CAS load (Kubernetes'
// GuaranteedUpdate shape: get, then txn compare mod_revision, put, else get)
// and prints its rate.
package main

import (
	"context"
	"flag"
	"fmt"
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

func client(ep string) (*clientv3.Client, error) {
	return clientv3.New(clientv3.Config{Endpoints: []string{ep}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
}

func run() error {
	write := flag.String("write", "127.0.0.1:2379", "endpoint to write through")
	watch := flag.String("watch", "127.0.0.1:2379", "endpoint to watch through")
	count := flag.Int("count", 500, "how many writes to time")
	gap := flag.Duration("gap", 2*time.Millisecond, "pause between timed writes")
	load := flag.String("load", "", "comma-separated endpoints to load with CAS writers while timing")
	loadWriters := flag.Int("load-writers", 16, "CAS writers per load endpoint")
	loadKeys := flag.Int("load-keys", 64, "keys the CAS writers share")
	maxTime := flag.Duration("max-time", 5*time.Minute, "stop after this long whatever the count")
	loadOnly := flag.Duration("load-only", 0, "with -count 0: only run the CAS load for this long and print its rate")
	flag.Parse()

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
		for _, ep := range strings.Split(*load, ",") {
			lc, err := client(ep)
			if err != nil {
				return err
			}
			defer lc.Close()
			for w := range *loadWriters {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := w; loadCtx.Err() == nil; i++ {
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
	for i := range *count {
		key := fmt.Sprintf("lat/%d", i)
		start := time.Now()
		if _, err := wc.Put(ctx, key, "x"); err != nil {
			return err
		}
		acked := time.Now()
		if err := waitFor(ctx, wch, key); err != nil {
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
