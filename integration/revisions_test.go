package integration

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// TestLeaseRevokeHeaderIsItsDeletion: LeaseRevoke's header revision is the
// revision of its own deletions, as etcd's is, while another client writes
// in a loop; a revision read after the commit would include that client's
// writes. The watch runs on another instance where there is one.
func TestLeaseRevokeHeaderIsItsDeletion(t *testing.T) {
	t.Parallel()
	type setup struct {
		name  string
		start func(t *testing.T) (writeTo, watchOn server)
	}
	setups := []setup{{"etcd", func(t *testing.T) (server, server) { s := startEtcd(t, serverOptions{}); return s, s }}}
	for _, b := range kvsqlBackends {
		setups = append(setups, setup{b.name, func(t *testing.T) (server, server) { s := b.start(t, serverOptions{}); return s, s }})
	}
	for _, b := range sharedDBBackends {
		setups = append(setups, setup{b.name + "-2-instances", func(t *testing.T) (server, server) {
			ss, _ := b.start(t, 2, serverOptions{})
			return ss[0], ss[1]
		}})
	}
	for _, s := range setups {
		t.Run(s.name, func(t *testing.T) {
			t.Parallel()
			writeTo, watchOn := s.start(t)
			c, wc := newClient(t, writeTo), newClient(t, watchOn)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			wch := wc.Watch(ctx, "leased/", clientv3.WithPrefix())
			stop := make(chan struct{})
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					if _, err := c.Put(ctx, "noise", fmt.Sprint(i)); err != nil && ctx.Err() == nil {
						t.Error(err)
						return
					}
				}
			}()
			const rounds = 100
			headers := map[string]int64{}
			for i := range rounds {
				l, err := c.Grant(ctx, 60)
				if err != nil {
					t.Fatal(err)
				}
				key := fmt.Sprintf("leased/%d", i)
				if _, err := c.Put(ctx, key, "v", clientv3.WithLease(l.ID)); err != nil {
					t.Fatal(err)
				}
				r, err := c.Revoke(ctx, l.ID)
				if err != nil {
					t.Fatal(err)
				}
				headers[key] = r.Header.Revision
			}
			close(stop)
			wg.Wait()
			mismatched := 0
			for seen := 0; seen < rounds; {
				select {
				case wr := <-wch:
					if err := wr.Err(); err != nil {
						t.Fatal(err)
					}
					for _, ev := range wr.Events {
						if ev.Type != clientv3.EventTypeDelete {
							continue
						}
						seen++
						if h := headers[string(ev.Kv.Key)]; h != ev.Kv.ModRevision {
							mismatched++
							if mismatched <= 3 {
								t.Errorf("Revoke of %s answered revision %d; its DELETE is at %d", ev.Kv.Key, h, ev.Kv.ModRevision)
							}
						}
					}
				case <-ctx.Done():
					t.Fatalf("saw %d of %d DELETE events", seen, rounds)
				}
			}
			if mismatched > 0 {
				t.Fatalf("%d of %d revokes answered another revision than their deletion's", mismatched, rounds)
			}
		})
	}
}
