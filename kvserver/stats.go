package kvserver

import (
	"context"
	"log/slog"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/kvsql/kvsql/backends"
)

const (
	// DefaultStatsInterval is how often an instance measures the database
	// size and reads the alarms (Config.StatsInterval).
	DefaultStatsInterval = 2 * time.Second
	// statsKickBytes: writes admitted since the last measurement that make
	// the next one happen at once rather than at the next tick, once the
	// estimate is in the quota's last quarter (statsKickShare).
	statsKickBytes = 1 << 20
	// statsKickShare: a kick measures early only when the estimated size
	// (last measurement plus writes admitted since) reaches this share of
	// the quota, in 1/4ths. Further below, the next tick is soon enough.
	statsKickShare = 3
	// statsKickGap is the least time between the start of one measurement
	// and a kicked one. A measurement that does not move (InnoDB's
	// statistics lag by up to a tenth of a table's rows) leaves the writes
	// admitted counted, so every write after it would kick again: without
	// the gap, a busy instance measured back to back (on PostgreSQL,
	// 17 size queries a second of 2.3 ms each under a CAS churn).
	statsKickGap = 250 * time.Millisecond
)

// stats keeps what requests check without a database round trip: the
// size of kvsql's tables and the raised alarms. A background loop
// (Server.Run) refreshes them every StatsInterval, and at once after large
// writes, compaction, defragmentation and alarm changes, so that the quota
// and alarm checks cost nothing per request. Alarms raised by another
// instance are enforced here from the next refresh on.
type stats struct {
	be      backends.Backend
	log     *slog.Logger
	metrics *Metrics
	every   time.Duration
	kickCh  chan struct{} // buffered(1): refresh now

	// refreshMu serialises refreshes, so that one that read the database
	// later is never overwritten by one that read it earlier. Lock order:
	// refreshMu, then mu.
	refreshMu sync.Mutex

	mu sync.Mutex // guards the fields below
	// total and inUse are the last measurement (valid if measured);
	// admitted is the cost of the writes let through since it last moved.
	total, inUse, admitted int64
	measured               bool
	alarms                 []*pb.AlarmMember
	noSpace, corrupt       bool
}

func newStats(be backends.Backend, log *slog.Logger, m *Metrics, every time.Duration) *stats {
	return &stats{be: be, log: log, metrics: m, every: every, kickCh: make(chan struct{}, 1)}
}

// kick asks for a refresh now.
func (st *stats) kick() {
	select {
	case st.kickCh <- struct{}{}:
	default:
	}
}

// run refreshes until ctx ends.
func (st *stats) run(ctx context.Context) error {
	t := time.NewTicker(st.every)
	defer t.Stop()
	failing := false
	for {
		last := time.Now()
		if err := st.refresh(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if !failing {
				st.log.Warn("measuring the database size and reading alarms failed; will retry", "err", err)
			}
			failing = true
		} else {
			failing = false
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-st.kickCh:
			if !sleepCtx(ctx, statsKickGap-time.Since(last)) {
				return nil
			}
		}
	}
}

// refresh measures the size and reads the alarms. Call it directly to
// see a change this instance made at once.
func (st *stats) refresh(ctx context.Context) error {
	st.refreshMu.Lock()
	defer st.refreshMu.Unlock()
	total, inUse, err := st.be.Size(ctx)
	if err != nil {
		return err
	}
	alarms, err := st.be.Alarms(ctx)
	if err != nil {
		return err
	}
	st.mu.Lock()
	// Writes let through count until the measurement moves: every write
	// adds history rows, so an unchanged size means the database's
	// figures do not show them yet (InnoDB refreshes its table statistics
	// only after a tenth of a table's rows changed).
	if !st.measured || inUse != st.inUse {
		st.admitted = 0
	}
	st.total, st.inUse, st.measured = total, inUse, true
	st.setAlarmsLocked(alarms)
	st.mu.Unlock()
	if m := st.metrics; m != nil {
		m.dbTotal.Set(float64(total))
		m.dbInUse.Set(float64(inUse))
	}
	return nil
}

// setAlarmsLocked installs the alarm list; the caller holds mu.
func (st *stats) setAlarmsLocked(alarms []*pb.AlarmMember) {
	st.alarms = alarms
	st.noSpace, st.corrupt = false, false
	for _, a := range alarms {
		switch a.Alarm {
		case pb.AlarmType_NOSPACE:
			st.noSpace = true
		case pb.AlarmType_CORRUPT:
			st.corrupt = true
		}
	}
}

// active reports the raised alarms that change what requests may do.
func (st *stats) active() (noSpace, corrupt bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.noSpace, st.corrupt
}

// list returns the raised alarms of type t (NONE: all), as last read or set.
func (st *stats) list(t pb.AlarmType) []*pb.AlarmMember {
	st.mu.Lock()
	defer st.mu.Unlock()
	var out []*pb.AlarmMember
	for _, a := range st.alarms {
		if t == pb.AlarmType_NONE || a.Alarm == t {
			out = append(out, a)
		}
	}
	return out
}

// admit reports whether a write of cost bytes fits under quota (etcd's
// test: size + cost < quota, with the size in use as the size), and if it
// does, counts it until the next measurement. Before the first
// measurement every write fits. Near the quota, a megabyte admitted asks
// for a measurement at once (statsKickShare).
func (st *stats) admit(cost, quota int64) (ok bool, size int64) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if !st.measured {
		return true, 0
	}
	size = st.inUse + st.admitted
	if size+cost >= quota {
		return false, size
	}
	st.admitted += cost
	if st.admitted >= statsKickBytes && (st.inUse+st.admitted)*4 >= quota*statsKickShare {
		st.kick()
	}
	return true, size
}
