package local

import (
	"context"
	"testing"
	"time"
)

func TestNextWaitsForNewerRevision(t *testing.T) {
	t.Parallel()
	s := New()
	s.Publish(5)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if rev, err := s.Next(ctx, 4); err != nil || rev != 5 {
		t.Fatalf("Next(4) = %d, %v; want 5", rev, err)
	}
	got := make(chan int64, 1)
	go func() {
		rev, err := s.Next(ctx, 5)
		if err != nil {
			t.Error(err)
		}
		got <- rev
	}()
	s.Publish(5) // not newer: must not wake the waiter with 5
	s.Publish(7)
	select {
	case rev := <-got:
		if rev != 7 {
			t.Fatalf("Next(5) = %d, want 7", rev)
		}
	case <-ctx.Done():
		t.Fatal("Next did not return after Publish(7)")
	}
}

func TestNextEndsWithContext(t *testing.T) {
	t.Parallel()
	s := New()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := s.Next(ctx, 0); err == nil {
		t.Fatal("Next on a cancelled context returned no error")
	}
}
