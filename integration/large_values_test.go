package integration

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

// TestLargeValuesInOneBatch: many clients put values near the request
// size limit at once, so one group-commit batch carries tens of MiB — more
// than a MySQL server's max_allowed_packet (16 MiB on MariaDB by default)
// if it were sent as one statement. Every put must succeed and read back.
func TestLargeValuesInOneBatch(t *testing.T) {
	starters := append(kvsqlBackends[:len(kvsqlBackends):len(kvsqlBackends)], struct {
		name  string
		start starter
	}{"mysql-4MiB-packets", startMySQLSmallPackets})
	for _, b := range starters {
		t.Run(b.name, func(t *testing.T) {
			c := newClient(t, b.start(t, serverOptions{}))
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			const clients = 32
			value := func(i int) []byte { return bytes.Repeat([]byte{byte('a' + i%26), '\'', '\\', 0}, 256<<10) } // 1 MiB, with quote, backslash and NUL bytes
			var wg sync.WaitGroup
			errs := make(chan error, clients)
			for i := range clients {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if _, err := c.Put(ctx, fmt.Sprintf("big/%02d", i), string(value(i))); err != nil {
						errs <- fmt.Errorf("put %d: %w", i, err)
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			for i := range clients {
				resp, err := c.Get(ctx, fmt.Sprintf("big/%02d", i))
				if err != nil {
					t.Fatal(err)
				}
				if len(resp.Kvs) != 1 || !bytes.Equal(resp.Kvs[0].Value, value(i)) {
					t.Fatalf("big/%02d did not read back", i)
				}
			}
		})
	}
}

// startMySQLSmallPackets serves kvsql on a MariaDB of its own whose
// max_allowed_packet is 4 MiB (MySQL 5.7's default; some managed servers
// set it low too).
func startMySQLSmallPackets(t testing.TB, opts serverOptions) server {
	t.Helper()
	_, ep := ownMariaDB(t, "--max-allowed-packet=4M", "--log-bin=binlog", "--binlog-format=ROW", "--binlog-row-image=FULL", "--server-id=1")
	st, src := openMySQL(t, ep)
	t.Cleanup(func() { _ = src.Close() })
	return serveKVSQL(t, st, src, opts)
}
