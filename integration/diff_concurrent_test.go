package integration

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"
)

// TestDiffConcurrentInvariants writes to kvsql from several goroutines at
// once (no etcd: concurrent results are not deterministic) and checks the
// invariants instead: each client sees its revisions strictly increase,
// every watcher receives the same events in the same order with no gap,
// and replaying the events gives exactly what Range returns.
func TestDiffConcurrentInvariants(t *testing.T) {
	t.Parallel()
	const (
		writers   = 4
		perWriter = 40
		watchers  = 3
		prefix    = "cc/"
	)
	for _, be := range kvsqlBackends {
		t.Run(be.name, func(t *testing.T) {
			t.Parallel()
			s := be.start(t, serverOptions{})
			ctx, cancel := context.WithTimeout(context.Background(), 4*diffTimeout)
			defer cancel()
			wchs := make([]clientv3.WatchChan, watchers)
			for i := range wchs {
				wchs[i] = newClient(t, s).Watch(ctx, prefix, clientv3.WithPrefix(), clientv3.WithPrevKV(), clientv3.WithRev(1))
			}
			var mu sync.Mutex // guards revs
			revs := map[int64]bool{}
			var wg sync.WaitGroup
			errc := make(chan error, writers)
			for w := range writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					c := newClient(t, s)
					last := int64(0)
					for i := range perWriter {
						key := fmt.Sprintf("%s%d", prefix, (w*7+i)%9)
						var rev int64
						var changed bool
						switch i % 5 {
						case 3:
							resp, err := c.Delete(ctx, key)
							if err != nil {
								errc <- err
								return
							}
							rev, changed = resp.Header.Revision, resp.Deleted > 0
						case 4:
							resp, err := c.Txn(ctx).If(clientv3.Compare(clientv3.Version(key), ">", 0)).
								Then(clientv3.OpPut(key, fmt.Sprintf("t%d-%d", w, i)), clientv3.OpPut(key+"x", "y")).
								Else(clientv3.OpPut(key, fmt.Sprintf("e%d-%d", w, i))).Commit()
							if err != nil {
								errc <- err
								return
							}
							rev, changed = resp.Header.Revision, true
						default:
							resp, err := c.Put(ctx, key, fmt.Sprintf("p%d-%d", w, i))
							if err != nil {
								errc <- err
								return
							}
							rev, changed = resp.Header.Revision, true
						}
						if rev < last || (changed && rev == last) {
							errc <- fmt.Errorf("writer %d: revision went from %d to %d", w, last, rev)
							return
						}
						last = rev
						if changed {
							mu.Lock()
							if revs[rev] {
								errc <- fmt.Errorf("writer %d: revision %d acknowledged twice", w, rev)
							}
							revs[rev] = true
							mu.Unlock()
						}
					}
				}()
			}
			wg.Wait()
			close(errc)
			for err := range errc {
				t.Fatal(err)
			}
			final := int64(0)
			for r := range revs {
				final = max(final, r)
			}
			// every revision from 2 to final was written by exactly one writer: no gaps
			for r := int64(2); r <= final; r++ {
				if !revs[r] {
					t.Fatalf("revision %d was never acknowledged (final %d)", r, final)
				}
			}
			seqs := make([][]*mvccpb.Event, watchers)
			for i, wch := range wchs {
				for len(seqs[i]) == 0 || seqs[i][len(seqs[i])-1].Kv.ModRevision < final {
					select {
					case wr, ok := <-wch:
						if !ok || wr.Err() != nil {
							t.Fatalf("watcher %d ended: %v", i, wr.Err())
						}
						for _, ev := range wr.Events {
							seqs[i] = append(seqs[i], (*mvccpb.Event)(ev))
						}
					case <-ctx.Done():
						t.Fatalf("watcher %d: %d events, not at revision %d", i, len(seqs[i]), final)
					}
				}
			}
			for i := 1; i < watchers; i++ {
				if len(seqs[i]) != len(seqs[0]) {
					t.Fatalf("watcher %d got %d events, watcher 0 %d", i, len(seqs[i]), len(seqs[0]))
				}
				for j := range seqs[0] {
					if !proto.Equal(seqs[0][j], seqs[i][j]) {
						t.Fatalf("watcher %d event %d differs:\n%v\n%v", i, j, seqs[0][j], seqs[i][j])
					}
				}
			}
			state := map[string]*mvccpb.KeyValue{}
			prevRev := int64(1)
			for _, ev := range seqs[0] {
				r := ev.Kv.ModRevision
				if r < prevRev || r > prevRev+1 {
					t.Fatalf("event revisions jump from %d to %d", prevRev, r)
				}
				prevRev = r
				k := string(ev.Kv.Key)
				old := state[k]
				if ev.Type == mvccpb.DELETE {
					if old == nil || !proto.Equal(old, ev.PrevKv) {
						t.Fatalf("delete of %q at %d: prev_kv %v, replayed state %v", k, r, ev.PrevKv, old)
					}
					delete(state, k)
					continue
				}
				if old != nil && !proto.Equal(old, ev.PrevKv) {
					t.Fatalf("put of %q at %d: prev_kv %v, replayed state %v", k, r, ev.PrevKv, old)
				}
				state[k] = ev.Kv
			}
			if prevRev != final {
				t.Fatalf("events end at revision %d, writes at %d", prevRev, final)
			}
			got, err := newClient(t, s).Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithRev(final))
			if err != nil {
				t.Fatal(err)
			}
			if len(got.Kvs) != len(state) {
				t.Fatalf("Range has %d keys, replayed events %d", len(got.Kvs), len(state))
			}
			for _, kv := range got.Kvs {
				if !proto.Equal((*mvccpb.KeyValue)(kv), state[string(kv.Key)]) {
					t.Fatalf("key %q: Range %v, replayed %v", kv.Key, kv, state[string(kv.Key)])
				}
			}
		})
	}
}
