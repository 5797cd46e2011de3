package main

// The load phases: the create load, the paginated list, the CAS churn,
// Compact under writes and watch fan-out latency.

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
)

// load creates every object, c.writers at a time, the way kube-apiserver
// creates one: put if the key does not exist.
func load(ctx context.Context, c config, conns []*grpc.ClientConn) error {
	var next atomic.Int64
	g, ctx := errgroup.WithContext(ctx)
	for w := range c.writers {
		kv := pb.NewKVClient(conns[w%len(conns)])
		g.Go(func() error {
			rnd := rand.New(rand.NewPCG(uint64(w), 1))
			v := make([]byte, c.value)
			for {
				i := int(next.Add(1) - 1)
				if i >= c.objects {
					return nil
				}
				fill(rnd, v)
				k := objectKey(i)
				resp, err := kv.Txn(ctx, &pb.TxnRequest{
					Compare: []*pb.Compare{{Key: k, Target: pb.Compare_CREATE, Result: pb.Compare_EQUAL,
						TargetUnion: &pb.Compare_CreateRevision{CreateRevision: 0}}},
					Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: k, Value: v}}}},
				})
				if err != nil {
					return err
				}
				if !resp.Succeeded {
					return fmt.Errorf("create %s: the key exists", k)
				}
			}
		})
	}
	return g.Wait()
}

func fill(rnd *rand.Rand, b []byte) {
	for i := 0; i+8 <= len(b); i += 8 {
		x := rnd.Uint64()
		for j := range 8 {
			b[i+j] = byte(x >> (8 * j))
		}
	}
}

// paginatedList reads every object in pages of page keys, each page at the
// first page's revision, and returns how many it read.
func paginatedList(ctx context.Context, kv pb.KVClient, page int) (int, error) {
	key, end := []byte(prefix), []byte(prefixEnd(prefix))
	var rev int64
	n := 0
	for {
		resp, err := kv.Range(ctx, &pb.RangeRequest{Key: key, RangeEnd: end, Limit: int64(page), Revision: rev})
		if err != nil {
			return n, err
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		n += len(resp.Kvs)
		if !resp.More || len(resp.Kvs) == 0 {
			return n, nil
		}
		if resp.Count < int64(len(resp.Kvs)) {
			return n, fmt.Errorf("page count %d < %d keys in the page", resp.Count, len(resp.Kvs))
		}
		key = append(slices.Clone(resp.Kvs[len(resp.Kvs)-1].Key), 0)
	}
}

// modRevisions returns every object's mod revision, as an informer's
// cache would hold them, read in keys-only pages.
func modRevisions(ctx context.Context, kv pb.KVClient, n int) ([]int64, error) {
	mods := make([]int64, n)
	key, end := []byte(prefix), []byte(prefixEnd(prefix))
	for {
		resp, err := kv.Range(ctx, &pb.RangeRequest{Key: key, RangeEnd: end, Limit: 10000, KeysOnly: true})
		if err != nil {
			return nil, err
		}
		for _, k := range resp.Kvs {
			i, err := strconv.Atoi(strings.TrimPrefix(string(k.Key), prefix+"default/pod-"))
			if err != nil || i >= n {
				return nil, fmt.Errorf("unexpected key %q", k.Key)
			}
			mods[i] = k.ModRevision
		}
		if !resp.More {
			return mods, nil
		}
		key = append(slices.Clone(resp.Kvs[len(resp.Kvs)-1].Key), 0)
	}
}

// sample is one write's start and latency.
type sample struct {
	at  time.Time
	lat time.Duration
}

// casLoad runs writers CAS writers over every object (writer w updates
// the objects i with i % writers == w, in turn, starting from their mod
// revisions in mods) for d, or until stop is closed when d is 0, and
// returns the successful updates and every update's latency.
func casLoad(ctx context.Context, c config, conns []*grpc.ClientConn, mods []int64, writers int, d time.Duration, stop <-chan struct{}) (int64, []sample, error) {
	var ops atomic.Int64
	var mu sync.Mutex
	var all []sample
	deadline := time.Now().Add(d)
	g, ctx := errgroup.WithContext(ctx)
	for w := range writers {
		kv := pb.NewKVClient(conns[w%len(conns)])
		g.Go(func() error {
			rnd := rand.New(rand.NewPCG(uint64(w), 2))
			v := make([]byte, c.value)
			var lat []sample
			defer func() { mu.Lock(); all = append(all, lat...); mu.Unlock() }()
			for i := w; ; i += writers {
				if i >= c.objects {
					i = w
				}
				if d > 0 && time.Now().After(deadline) {
					return nil
				}
				if stop != nil {
					select {
					case <-stop:
						return nil
					default:
					}
				}
				fill(rnd, v)
				k := objectKey(i)
				t := time.Now()
				resp, err := kv.Txn(ctx, &pb.TxnRequest{
					Compare: []*pb.Compare{{Key: k, Target: pb.Compare_MOD, Result: pb.Compare_EQUAL,
						TargetUnion: &pb.Compare_ModRevision{ModRevision: mods[i]}}},
					Success: []*pb.RequestOp{{Request: &pb.RequestOp_RequestPut{RequestPut: &pb.PutRequest{Key: k, Value: v}}}},
					Failure: []*pb.RequestOp{{Request: &pb.RequestOp_RequestRange{RequestRange: &pb.RangeRequest{Key: k}}}},
				})
				if err != nil {
					return err
				}
				lat = append(lat, sample{t, time.Since(t)})
				if resp.Succeeded {
					mods[i] = resp.Header.Revision
					ops.Add(1)
				} else if kvs := resp.Responses[0].GetResponseRange().GetKvs(); len(kvs) == 1 {
					mods[i] = kvs[0].ModRevision
				}
			}
		})
	}
	err := g.Wait()
	return ops.Load(), all, err
}

// compactUnderLoad runs c.compactWriters CAS writers, then compacts to
// the current revision while they run, and records the write p99 before
// and during Compact.
func compactUnderLoad(ctx context.Context, c config, conns []*grpc.ClientConn, kv pb.KVClient, r *result) error {
	mods, err := modRevisions(ctx, kv, c.objects)
	if err != nil {
		return err
	}
	stop := make(chan struct{})
	type out struct {
		lat []sample
		err error
	}
	done := make(chan out, 1)
	go func() {
		_, lat, err := casLoad(ctx, c, conns, mods, c.compactWriters, 0, stop)
		done <- out{lat, err}
	}()
	time.Sleep(c.compactBefore)
	head, err := kv.Range(ctx, &pb.RangeRequest{Key: []byte("ready")})
	if err != nil {
		close(stop)
		<-done
		return err
	}
	rev := head.Header.Revision
	t0 := time.Now()
	_, err = kv.Compact(ctx, &pb.CompactionRequest{Revision: rev, Physical: true})
	t1 := time.Now()
	time.Sleep(time.Second)
	close(stop)
	o := <-done
	if err != nil {
		return err
	}
	if o.err != nil {
		return o.err
	}
	r.compactSecs = t1.Sub(t0).Seconds()
	r.compactRevs = rev
	var before, during []sample
	for _, s := range o.lat {
		switch {
		case s.at.Before(t0) && s.at.After(t0.Add(-c.compactBefore+time.Second)):
			before = append(before, s) // the first second warms up
		case !s.at.Before(t0) && s.at.Before(t1):
			during = append(during, s)
		}
	}
	r.beforeP99, r.compactP99 = p99(before), p99(during)
	logf("compact: %d writes in the window before, %d during", len(before), len(during))
	return nil
}

// watchLatency opens c.watchers watchers on /lat/, puts c.watchEvents
// values there at c.watchRate per second, and returns the put (sent) ->
// event p50 and p99 over every watcher, in ms.
func watchLatency(ctx context.Context, c config, conns []*grpc.ClientConn, kv pb.KVClient) (float64, float64, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	const wp = "/lat/"
	var mu sync.Mutex
	arrived := map[int64][]time.Time{}
	total := 0
	want := c.watchers * c.watchEvents
	allIn := make(chan struct{})
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(64)
	for s := range c.watchStreams {
		n := c.watchers / c.watchStreams
		if s < c.watchers%c.watchStreams {
			n++
		}
		g.Go(func() error {
			w, err := pb.NewWatchClient(conns[s%len(conns)]).Watch(ctx)
			if err != nil {
				return err
			}
			for range n {
				if err := w.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: &pb.WatchCreateRequest{
					Key: []byte(wp), RangeEnd: []byte(prefixEnd(wp))}}}); err != nil {
					return err
				}
			}
			for range n {
				resp, err := w.Recv()
				if err != nil {
					return err
				}
				if !resp.Created || resp.Canceled {
					return fmt.Errorf("watch create: %v", resp)
				}
			}
			go func() {
				for {
					resp, err := w.Recv()
					if err != nil {
						return
					}
					now := time.Now()
					mu.Lock()
					for _, ev := range resp.Events {
						arrived[ev.Kv.ModRevision] = append(arrived[ev.Kv.ModRevision], now)
					}
					total += len(resp.Events)
					if total == want {
						close(allIn)
					}
					mu.Unlock()
				}
			}()
			return gctx.Err()
		})
	}
	if err := g.Wait(); err != nil {
		return 0, 0, err
	}
	sent := map[int64]time.Time{}
	tick := time.NewTicker(time.Duration(float64(time.Second) / c.watchRate))
	defer tick.Stop()
	rnd := rand.New(rand.NewPCG(3, 3))
	v := make([]byte, c.watchValue)
	for i := range c.watchEvents {
		<-tick.C
		fill(rnd, v)
		at := time.Now()
		resp, err := kv.Put(ctx, &pb.PutRequest{Key: fmt.Appendf(nil, "%s%d", wp, i%16), Value: v})
		if err != nil {
			return 0, 0, err
		}
		sent[resp.Header.Revision] = at
	}
	select {
	case <-allIn:
	case <-time.After(2 * time.Minute):
		mu.Lock()
		defer mu.Unlock()
		return 0, 0, fmt.Errorf("%d of %d events arrived within 2 minutes", total, want)
	}
	mu.Lock()
	defer mu.Unlock()
	var lat []float64
	for rev, at := range sent {
		if len(arrived[rev]) != c.watchers {
			return 0, 0, fmt.Errorf("revision %d reached %d of %d watchers", rev, len(arrived[rev]), c.watchers)
		}
		for _, t := range arrived[rev] {
			lat = append(lat, float64(t.Sub(at).Microseconds())/1000)
		}
	}
	slices.Sort(lat)
	return quantile(lat, 0.5), quantile(lat, 0.99), nil
}
