package integration

import (
	"context"
	"testing"
	"time"
)

func TestSmokePutGetWatch(t *testing.T) {
	for _, b := range kvsqlBackends {
		t.Run(b.name, func(t *testing.T) {
			c := newClient(t, b.start(t, serverOptions{}))
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			wch := c.Watch(ctx, "k", withPrevKV())
			if _, err := c.Put(ctx, "k", "v1"); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Put(ctx, "k", "v2"); err != nil {
				t.Fatal(err)
			}
			got, err := c.Get(ctx, "k")
			if err != nil || string(got.Kvs[0].Value) != "v2" || got.Kvs[0].Version != 2 {
				t.Fatalf("get: %v %v", got, err)
			}
			var n int
			for n < 2 {
				select {
				case wr := <-wch:
					if err := wr.Err(); err != nil {
						t.Fatal(err)
					}
					n += len(wr.Events)
				case <-ctx.Done():
					t.Fatalf("watch got %d events", n)
				}
			}
		})
	}
}
