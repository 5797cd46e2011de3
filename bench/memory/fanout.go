package main

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// arrivals records when each watch event arrived, by revision.
type arrivals struct {
	mu   sync.Mutex // guards the fields below
	at   map[int64][]time.Time
	n    int
	want int
	done chan struct{} // closed when n reaches want
}

func (a *arrivals) add(evs int, rev int64, now time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for range evs {
		a.at[rev] = append(a.at[rev], now)
	}
	a.n += evs
	if a.n >= a.want && a.want > 0 {
		select {
		case <-a.done:
		default:
			close(a.done)
		}
	}
}

func dial(addr string, n int) ([]*grpc.ClientConn, error) {
	var conns []*grpc.ClientConn
	for range n {
		c, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return nil, err
		}
		conns = append(conns, c)
	}
	return conns, nil
}

// openWatches opens streams watch streams over conns with watches spread
// over them, on prefix; events go to a.
func openWatches(ctx context.Context, conns []*grpc.ClientConn, watches, streams int, prefix string, a *arrivals) error {
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(64)
	for s := range streams {
		n := watches / streams
		if s < watches%streams {
			n++
		}
		g.Go(func() error {
			w, err := pb.NewWatchClient(conns[s%len(conns)]).Watch(ctx)
			if err != nil {
				return err
			}
			for range n {
				if err := w.Send(&pb.WatchRequest{RequestUnion: &pb.WatchRequest_CreateRequest{CreateRequest: &pb.WatchCreateRequest{
					Key: []byte(prefix), RangeEnd: []byte(prefix[:len(prefix)-1] + string(prefix[len(prefix)-1]+1)),
				}}}); err != nil {
					return err
				}
			}
			for range n {
				resp, err := w.Recv()
				if err != nil {
					return err
				}
				if !resp.Created || resp.Canceled {
					return fmt.Errorf("create: %v", resp)
				}
			}
			go func() {
				for {
					resp, err := w.Recv()
					if err != nil {
						return
					}
					now := time.Now()
					for _, ev := range resp.Events {
						a.add(1, ev.Kv.ModRevision, now)
					}
				}
			}()
			return gctx.Err()
		})
	}
	return g.Wait()
}

func perItem(after, before int64, n int) int64 { return (after - before) / int64(n) }

func quantiles(lat []time.Duration) string {
	if len(lat) == 0 {
		return "none"
	}
	slices.Sort(lat)
	q := func(p float64) float64 {
		return float64(lat[min(int(p*float64(len(lat))), len(lat)-1)].Microseconds()) / 1000
	}
	return fmt.Sprintf("p50 %.2f ms, p99 %.2f ms, max %.2f ms over %d events", q(0.5), q(0.99), float64(lat[len(lat)-1].Microseconds())/1000, len(lat))
}

// fanOut is the watchers case.
func fanOut(ctx context.Context, addr, metrics string, kv pb.KVClient, watches, streams, nconns, events int, rate float64) error {
	conns, err := dial(addr, nconns)
	if err != nil {
		return err
	}
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	h0, s0, err := liveMemory(metrics)
	if err != nil {
		return err
	}
	a := &arrivals{at: map[int64][]time.Time{}, want: watches * events, done: make(chan struct{})}
	start := time.Now()
	if err := openWatches(ctx, conns, watches, streams, "/fan/", a); err != nil {
		return err
	}
	opened := time.Since(start)
	h1, s1, err := liveMemory(metrics)
	if err != nil {
		return err
	}
	fmt.Printf("%d watchers on %d streams over %d connections, opened in %.1fs: heap %d bytes and stacks %d bytes per watcher (%s, %s before; %s, %s with them)\n",
		watches, streams, nconns, opened.Seconds(), perItem(h1, h0, watches), perItem(s1, s0, watches), mb(h0), mb(s0), mb(h1), mb(s1))

	sent := map[int64]time.Time{}
	tick := time.NewTicker(time.Duration(float64(time.Second) / rate))
	defer tick.Stop()
	for i := range events {
		<-tick.C
		at := time.Now()
		resp, err := kv.Put(ctx, &pb.PutRequest{Key: fmt.Appendf(nil, "/fan/%d", i%16), Value: []byte("v")})
		if err != nil {
			return err
		}
		sent[resp.Header.Revision] = at
	}
	select {
	case <-a.done:
	case <-time.After(2 * time.Minute):
		return fmt.Errorf("%d of %d events arrived", a.n, a.want)
	}
	var lat []time.Duration
	a.mu.Lock()
	for rev, at := range sent {
		if len(a.at[rev]) != watches {
			a.mu.Unlock()
			return fmt.Errorf("revision %d reached %d of %d watchers", rev, len(a.at[rev]), watches)
		}
		for _, t := range a.at[rev] {
			lat = append(lat, t.Sub(at))
		}
	}
	a.mu.Unlock()
	fmt.Printf("%d puts at %.0f/s: put (sent) -> event at every watcher: %s\n", events, rate, quantiles(lat))
	return nil
}

// manyStreams is the streams case.
func manyStreams(ctx context.Context, addr, metrics string, kv pb.KVClient, streams, nconns int) error {
	conns, err := dial(addr, nconns)
	if err != nil {
		return err
	}
	defer func() {
		for _, c := range conns {
			_ = c.Close()
		}
	}()
	h0, s0, err := liveMemory(metrics)
	if err != nil {
		return err
	}
	a := &arrivals{at: map[int64][]time.Time{}, want: streams, done: make(chan struct{})}
	start := time.Now()
	if err := openWatches(ctx, conns, streams, streams, "/streams/", a); err != nil {
		return err
	}
	opened := time.Since(start)
	h1, s1, err := liveMemory(metrics)
	if err != nil {
		return err
	}
	fmt.Printf("%d watch streams (one watch each) over %d connections, opened in %.1fs: heap %d bytes and stacks %d bytes per stream\n",
		streams, nconns, opened.Seconds(), perItem(h1, h0, streams), perItem(s1, s0, streams))

	lease, err := pb.NewLeaseClient(conns[0]).LeaseGrant(ctx, &pb.LeaseGrantRequest{TTL: 600})
	if err != nil {
		return err
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(64)
	start = time.Now()
	for s := range streams {
		g.Go(func() error {
			ka, err := pb.NewLeaseClient(conns[s%len(conns)]).LeaseKeepAlive(ctx)
			if err != nil {
				return err
			}
			if err := ka.Send(&pb.LeaseKeepAliveRequest{ID: lease.ID}); err != nil {
				return err
			}
			if _, err := ka.Recv(); err != nil {
				return err
			}
			return gctx.Err()
		})
	}
	if err := g.Wait(); err != nil {
		return err
	}
	opened = time.Since(start)
	h2, s2, err := liveMemory(metrics)
	if err != nil {
		return err
	}
	fmt.Printf("%d lease keep-alive streams, opened (one keep-alive each) in %.1fs: heap %d bytes and stacks %d bytes per stream; live memory %s before, %s with all open\n",
		streams, opened.Seconds(), perItem(h2, h1, streams), perItem(s2, s1, streams), mb(h0+s0), mb(h2+s2))

	start = time.Now()
	put, err := kv.Put(ctx, &pb.PutRequest{Key: []byte("/streams/x"), Value: []byte("v")})
	if err != nil {
		return err
	}
	putTook := time.Since(start)
	start = time.Now()
	if _, err := kv.Range(ctx, &pb.RangeRequest{Key: []byte("/streams/x")}); err != nil {
		return err
	}
	getTook := time.Since(start)
	select {
	case <-a.done:
	case <-time.After(2 * time.Minute):
		return fmt.Errorf("%d of %d watch streams got the put", a.n, a.want)
	}
	var lat []time.Duration
	for _, t := range a.at[put.Header.Revision] {
		lat = append(lat, t.Sub(start.Add(-putTook)))
	}
	fmt.Printf("with them open, another client's put took %.2f ms and get %.2f ms; the put reached every watch stream: %s\n",
		float64(putTook.Microseconds())/1000, float64(getTook.Microseconds())/1000, quantiles(lat))
	return nil
}
