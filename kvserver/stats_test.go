package kvserver

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/kvsql/kvsql/backends"
)

// fixedSizeBackend reports the same size every time, as a database whose
// statistics lag behind its writes does, and counts the measurements.
type fixedSizeBackend struct {
	backends.Backend // other methods unused
	inUse            int64
	sizes            atomic.Int64
}

func (b *fixedSizeBackend) Size(context.Context) (int64, int64, error) {
	b.sizes.Add(1)
	return b.inUse, b.inUse, nil
}

func (b *fixedSizeBackend) Alarms(context.Context) ([]*pb.AlarmMember, error) { return nil, nil }

// TestStatsKickOnlyNearTheQuota: writes admitted far below the quota
// leave the measuring to the tick; in the quota's last quarter a megabyte
// admitted asks for a measurement at once.
func TestStatsKickOnlyNearTheQuota(t *testing.T) {
	const quota = 1 << 30
	st := newStats(&fixedSizeBackend{}, slog.New(slog.DiscardHandler), nil, time.Hour)
	st.measured, st.inUse = true, 100<<20
	for range 64 {
		if ok, _ := st.admit(64<<10, quota); !ok {
			t.Fatal("a write far below the quota was refused")
		}
	}
	if len(st.kickCh) != 0 {
		t.Errorf("4 MiB admitted at %d MiB of a %d MiB quota asked for a measurement", st.inUse>>20, quota>>20)
	}
	st.inUse, st.admitted = quota*3/4, 0
	for range 16 {
		st.admit(64<<10, quota)
	}
	if len(st.kickCh) != 1 {
		t.Error("1 MiB admitted in the quota's last quarter did not ask for a measurement")
	}
}

// TestStatsKickedMeasurementsAreSpaced: while a measurement does not move,
// every admitted write kicks again; the refresh loop still measures at most
// once per statsKickGap, not back to back.
func TestStatsKickedMeasurementsAreSpaced(t *testing.T) {
	const quota = 1 << 30
	be := &fixedSizeBackend{inUse: quota * 7 / 8}
	st := newStats(be, slog.New(slog.DiscardHandler), nil, time.Hour)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- st.run(ctx) }()
	const took = time.Second
	for end := time.Now().Add(took); time.Now().Before(end); {
		if ok, _ := st.admit(16<<10, quota); !ok {
			t.Fatal("a write under the quota was refused")
		}
		time.Sleep(100 * time.Microsecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// The first measurement, then one per statsKickGap (250 ms): at most
	// a handful, where back to back it would be thousands.
	if n, most := be.sizes.Load(), int64(6); n > most {
		t.Errorf("%d measurements in %v of kicks, want at most %d (one per %v)", n, took, most, statsKickGap)
	}
	if be.sizes.Load() < 2 {
		t.Errorf("%d measurements in %v of kicks near the quota, want more than the first", be.sizes.Load(), took)
	}
}
