package kvserver

import (
	"context"
	"time"

	"github.com/cenkalti/backoff/v5"
)

// newBackoff returns the waits of a retry loop (a reconnect, a read the
// database could not serve): from initial, growing to at most longest, with
// jitter so that instances retrying against one database spread out.
func newBackoff(initial, longest time.Duration) *backoff.ExponentialBackOff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = initial
	b.MaxInterval = longest
	b.Reset()
	return b
}

// sleepCtx waits d, or until ctx ends; it reports whether d passed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
