package backends

import (
	"testing"
	"time"
)

// TestNextStepRows: a cleanup step sized by time shrinks in proportion when
// it took longer than the target, doubles when it took under half, and
// stays between MinCompactStepRows and the cap.
func TestNextStepRows(t *testing.T) {
	const ms = time.Millisecond
	for _, c := range []struct {
		rows        int
		took        time.Duration
		limit, want int
	}{
		{rows: 32, took: 1 * ms, limit: 1000, want: 64},     // well under: double
		{rows: 512, took: 1 * ms, limit: 1000, want: 1000},  // capped
		{rows: 400, took: 4 * ms, limit: 1000, want: 400},   // about right: keep
		{rows: 400, took: 20 * ms, limit: 1000, want: 100},  // 4x over: a quarter
		{rows: 100, took: 500 * ms, limit: 1000, want: 32},  // never below the floor
		{rows: 3, took: 1 * ms, limit: 3, want: 3},          // a cap below the floor wins
		{rows: 3, took: 100 * ms, limit: 3, want: 3},        // ... both ways
		{rows: 1000, took: 10 * ms, limit: 1000, want: 500}, // 2x over: half
	} {
		if got := nextStepRows(c.rows, c.took, 5*ms, c.limit); got != c.want {
			t.Errorf("nextStepRows(%d rows, took %v, target 5ms, limit %d) = %d, want %d", c.rows, c.took, c.limit, got, c.want)
		}
	}
}
