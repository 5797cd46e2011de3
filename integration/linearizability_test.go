package integration

// The linearizability checker: many concurrent clients run Kubernetes-like
// operations (get, list, put, delete, GuaranteedUpdate's compare-and-swap,
// a two-key txn) through every instance while watches on every instance
// record what they deliver and a fault hits the system. Then:
//
//   - kv_log is replayed and checked as a history (replayLog);
//   - every write is matched with its revision in kv_log: an acknowledged
//     write must be there at the revision it was acknowledged with, a
//     failed one (unknown outcome) either is, and then took effect at that
//     revision at some time after its call, or never took effect; no
//     revision of kv_log may be left without the write that made it;
//   - revisions must respect real time (checkRevisionOrder), and each key's
//     history must be linearizable under the etcd model (porcupine,
//     linmodel_test.go, which explains why the two together are
//     linearizability);
//   - every watch must have delivered exactly kv_log's events (ordered,
//     unique, atomic, bookmarkable, reliable, resumable, prev_kv:
//     watchcheck_test.go), including watches that are cancelled and resumed
//     from their last revision + 1 on another instance.

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/kvsql/kvsql/backends"
)

const (
	// linPrefix holds every key the workload writes; watches watch it.
	linPrefix = "lin/"
	// linKeyPrefix holds the keys porcupine checks (linKeys of them).
	linKeyPrefix = "lin/k/"
	linKeys      = 10
	// linMultiKeys are written together, in one txn, by linMulti.
	linMultiA, linMultiB = "lin/m/a", "lin/m/b"
	// linWorkers is how many clients (sequential processes) run at once,
	// spread over the instances.
	linWorkers = 12
	// linOpsBefore operations complete before the fault, linOpsAfter
	// succeed after it (or in all, without a fault): a few thousand, so
	// that porcupine stays fast.
	linOpsBefore, linOpsAfter = 1000, 2000
	// linOpTimeout bounds one operation; one that ends in an error
	// (timeouts included) has an unknown outcome.
	linOpTimeout = 5 * time.Second
	// linCheckTimeout bounds porcupine; running out of it fails the test.
	linCheckTimeout = 2 * time.Minute
)

// The operations that never reach porcupine as they are: a list is split
// into a get per key, a multi-key put and a lease grant only take part in
// the revision and watch checks, a lease revoke is a delete of the one key
// attached to the lease.
const (
	linList linOpKind = iota + 100
	linMulti
	linGrant
	linRevoke
)

// linRecord is one operation a client made, as it saw it.
type linRecord struct {
	client int
	in     linInput // kind linList: every linKeys key; linMulti: in.value to both multi keys
	out    linOutput
	listed map[string]linKV // linList: what it found, by key
	// call and ret are nanoseconds since the run started; ret is
	// math.MaxInt64 for a write that failed but took effect.
	call, ret int64
	err       error // no answer: the outcome is unknown
}

func (r linRecord) isWrite() bool {
	switch r.in.kind {
	case linPut, linMulti:
		return true
	case linDelete, linCAS, linRevoke:
		return r.out.changed
	}
	return false
}

func (r linRecord) String() string {
	var s string
	switch r.in.kind {
	case linList:
		s = fmt.Sprintf("list(%q) -> %d keys @%d", linKeyPrefix, len(r.listed), r.out.rev)
	case linMulti:
		s = fmt.Sprintf("put(%q and %q, %q) -> @%d", linMultiA, linMultiB, r.in.value, r.out.rev)
	case linGrant:
		s = fmt.Sprintf("lease grant -> @%d", r.out.rev)
	case linRevoke:
		s = fmt.Sprintf("lease revoke (deletes %q) -> @%d", r.in.key, r.out.rev)
	default:
		s = linModel.DescribeOperation(r.in, r.out)
	}
	if r.err != nil {
		s += fmt.Sprintf(" [failed: %v]", r.err)
	}
	ret := "never"
	if r.ret != math.MaxInt64 {
		ret = fmt.Sprint(time.Duration(r.ret))
	}
	return fmt.Sprintf("client %d: %s (called at %v, returned %s)", r.client, s, time.Duration(r.call), ret)
}

func linKey(i int) string { return fmt.Sprintf("%s%02d", linKeyPrefix, i) }

func toLinKV(kv *mvccpb.KeyValue) linKV {
	if kv == nil {
		return linKV{}
	}
	return linKV{exists: true, value: string(kv.Value), create: kv.CreateRevision, mod: kv.ModRevision, version: kv.Version}
}

// linRecorder runs and records the workload.
type linRecorder struct {
	start time.Time
	mu    sync.Mutex // guards records
	// records in the order they completed
	records []linRecord
	done    atomic.Int64 // operations completed
	ok      atomic.Int64 // operations that succeeded
}

func (h *linRecorder) now() int64 { return int64(time.Since(h.start)) }

// do runs one operation through f and records it.
func (h *linRecorder) do(ctx context.Context, client int, in linInput, f func(ctx context.Context) (linRecord, error)) linRecord {
	octx, cancel := context.WithTimeout(ctx, linOpTimeout)
	defer cancel()
	call := h.now()
	rec, err := f(octx)
	rec.client, rec.in, rec.call, rec.ret, rec.err = client, in, call, h.now(), err
	// Recorded even when the run is over and cut it short: a write may
	// have taken effect all the same.
	h.mu.Lock()
	h.records = append(h.records, rec)
	h.mu.Unlock()
	h.done.Add(1)
	if err == nil {
		h.ok.Add(1)
	}
	return rec
}

// work is one client's loop of random operations until ctx ends.
func (h *linRecorder) work(ctx context.Context, client int, c *clientv3.Client, seed uint64) {
	r := rand.New(rand.NewPCG(seed, uint64(client)))
	for seq := 0; ctx.Err() == nil; seq++ {
		key := linKey(r.IntN(linKeys))
		value := fmt.Sprintf("c%d-%d", client, seq)
		switch p := r.IntN(100); {
		case p < 25:
			h.get(ctx, client, c, key)
		case p < 30:
			h.do(ctx, client, linInput{kind: linList}, func(ctx context.Context) (linRecord, error) {
				resp, err := c.Get(ctx, linKeyPrefix, clientv3.WithPrefix())
				if err != nil {
					return linRecord{}, err
				}
				rec := linRecord{out: linOutput{rev: resp.Header.Revision}, listed: map[string]linKV{}}
				for _, kv := range resp.Kvs {
					rec.listed[string(kv.Key)] = toLinKV(kv)
				}
				return rec, nil
			})
		case p < 48:
			h.do(ctx, client, linInput{kind: linPut, key: key, value: value}, func(ctx context.Context) (linRecord, error) {
				resp, err := c.Put(ctx, key, value)
				if err != nil {
					return linRecord{}, err
				}
				return linRecord{out: linOutput{rev: resp.Header.Revision, changed: true}}, nil
			})
		case p < 58:
			h.do(ctx, client, linInput{kind: linDelete, key: key}, func(ctx context.Context) (linRecord, error) {
				resp, err := c.Delete(ctx, key)
				if err != nil {
					return linRecord{}, err
				}
				return linRecord{out: linOutput{rev: resp.Header.Revision, changed: resp.Deleted > 0}}, nil
			})
		case p < 61:
			h.leased(ctx, client, c, value)
		case p < 65:
			h.do(ctx, client, linInput{kind: linMulti, value: value}, func(ctx context.Context) (linRecord, error) {
				resp, err := c.Txn(ctx).Then(clientv3.OpPut(linMultiA, value), clientv3.OpPut(linMultiB, value)).Commit()
				if err != nil {
					return linRecord{}, err
				}
				return linRecord{out: linOutput{rev: resp.Header.Revision, changed: true}}, nil
			})
		default:
			// GuaranteedUpdate: read, then compare-and-swap on the mod
			// revision read.
			got := h.get(ctx, client, c, key)
			if got.err != nil {
				continue
			}
			in := linInput{kind: linCAS, key: key, value: value, expect: got.out.kv.mod}
			h.do(ctx, client, in, func(ctx context.Context) (linRecord, error) {
				resp, err := c.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", in.expect)).
					Then(clientv3.OpPut(key, value)).Else(clientv3.OpGet(key)).Commit()
				if err != nil {
					return linRecord{}, err
				}
				out := linOutput{rev: resp.Header.Revision, changed: resp.Succeeded}
				if !resp.Succeeded {
					if kvs := resp.Responses[0].GetResponseRange().GetKvs(); len(kvs) > 0 {
						out.kv = toLinKV(kvs[0])
					}
				}
				return linRecord{out: out}, nil
			})
		}
	}
}

// leased grants a lease, puts the client's own leased key with it and
// revokes the lease, which deletes the key: the revoke's header revision
// must be the revision of that delete. A lease whose put failed is left to
// expire after the run (its key may or may not be attached).
func (h *linRecorder) leased(ctx context.Context, client int, c *clientv3.Client, value string) {
	var lease clientv3.LeaseID
	grant := h.do(ctx, client, linInput{kind: linGrant}, func(ctx context.Context) (linRecord, error) {
		resp, err := c.Grant(ctx, 600)
		if err != nil {
			return linRecord{}, err
		}
		lease = resp.ID
		return linRecord{out: linOutput{rev: resp.Revision}}, nil
	})
	if grant.err != nil {
		return
	}
	key := fmt.Sprintf("%sl/%02d", linPrefix, client)
	put := h.do(ctx, client, linInput{kind: linPut, key: key, value: value}, func(ctx context.Context) (linRecord, error) {
		resp, err := c.Put(ctx, key, value, clientv3.WithLease(lease))
		if err != nil {
			return linRecord{}, err
		}
		return linRecord{out: linOutput{rev: resp.Header.Revision, changed: true}}, nil
	})
	if put.err != nil {
		return
	}
	h.do(ctx, client, linInput{kind: linRevoke, key: key}, func(ctx context.Context) (linRecord, error) {
		resp, err := c.Revoke(ctx, lease)
		if err != nil {
			return linRecord{}, err
		}
		return linRecord{out: linOutput{rev: resp.Header.Revision, changed: true}}, nil
	})
}

func (h *linRecorder) get(ctx context.Context, client int, c *clientv3.Client, key string) linRecord {
	return h.do(ctx, client, linInput{kind: linGet, key: key}, func(ctx context.Context) (linRecord, error) {
		resp, err := c.Get(ctx, key)
		if err != nil {
			return linRecord{}, err
		}
		out := linOutput{rev: resp.Header.Revision}
		if len(resp.Kvs) > 0 {
			out.kv = toLinKV(resp.Kvs[0])
		}
		return linRecord{out: out}, nil
	})
}

// watchRecord is one watch (or one session of a resumed watch) and what
// it delivered.
type watchRecord struct {
	name  string
	spec  watchSpec
	resps []clientv3.WatchResponse
	// upTo is the last revision the watch must have delivered: the run's
	// last one, or where a session was cancelled to be resumed.
	upTo int64
}

// linRun is what a run recorded: the input of checkLinearizability.
type linRun struct {
	records []linRecord
	log     []*mvccpb.Event // kv_log from revision 2 to final
	watches []watchRecord
	final   int64
	// visualize is where a failed porcupine check leaves its HTML
	// visualization ("": the system's temporary directory).
	visualize string
}

// runLinearizabilityCheck runs the workload through clients (one per
// instance; linWorkers sequential clients are spread over them) with
// watches on every one, calls fault once linOpsBefore operations have
// completed (nil: no fault), runs until linOpsAfter more have succeeded,
// and checks the history, kv_log (read through be) and every watch. fault
// must return with every instance serving again.
func runLinearizabilityCheck(t *testing.T, clients []*clientv3.Client, be backends.Backend, fault func()) {
	t.Helper()
	run := recordLinearizability(t, clients, be, fault)
	if err := run.check(t); err != nil {
		t.Fatal(err)
	}
}

func recordLinearizability(t *testing.T, clients []*clientv3.Client, be backends.Backend, fault func()) *linRun {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	h := &linRecorder{start: time.Now()}
	seed := uint64(time.Now().UnixNano())
	t.Logf("workload seed %d", seed)

	// Watches: on every instance one from revision 1 with prev_kv and
	// progress requests, and one that is cancelled every so often and
	// resumed from its last revision + 1 on the next instance.
	wctx, stopWatches := context.WithCancel(ctx)
	defer stopWatches()
	var wmu sync.Mutex // guards watches and werrs
	var watches []watchRecord
	var werrs []error
	var wwg sync.WaitGroup
	var upTos []chan int64
	for i, c := range clients {
		upTo, resumedUpTo := make(chan int64, 1), make(chan int64, 1)
		upTos = append(upTos, upTo, resumedUpTo)
		name := fmt.Sprintf("instance %d from revision 1 with prev_kv", i)
		spec := watchSpec{prefix: linPrefix, start: 1, prevKV: true}
		wch := c.Watch(wctx, linPrefix, clientv3.WithPrefix(), clientv3.WithRev(1), clientv3.WithPrevKV(), clientv3.WithProgressNotify())
		wwg.Add(2)
		progressDone := make(chan struct{})
		go func() {
			defer wwg.Done()
			defer close(progressDone)
			resps, err := recordWatch(wctx, wch, upTo)
			wmu.Lock()
			defer wmu.Unlock()
			watches = append(watches, watchRecord{name: name, spec: spec, resps: resps})
			if err != nil {
				werrs = append(werrs, fmt.Errorf("%s: %w", name, err))
			}
		}()
		go func() {
			defer wwg.Done()
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			for {
				select {
				case <-progressDone:
					return
				case <-tick.C:
					_ = c.RequestProgress(wctx) // best effort: an instance may be down
				}
			}
		}()

		wwg.Add(1)
		go func() {
			defer wwg.Done()
			recs, err := resumedWatch(wctx, clients, i, resumedUpTo, seed)
			wmu.Lock()
			defer wmu.Unlock()
			watches = append(watches, recs...)
			if err != nil {
				werrs = append(werrs, fmt.Errorf("resumed watch from instance %d: %w", i, err))
			}
		}()
	}

	workCtx, stopWork := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for w := range linWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h.work(workCtx, w, clients[w%len(clients)], seed)
		}()
	}
	waitFor := func(what string, cond func() bool) {
		for !cond() {
			select {
			case <-ctx.Done():
				stopWork()
				wg.Wait()
				t.Fatalf("%s: timed out with %d operations done, %d of them successful", what, h.done.Load(), h.ok.Load())
			case <-time.After(20 * time.Millisecond): // polling the counters
			}
		}
	}
	target := int64(linOpsAfter)
	if fault != nil {
		waitFor("operations before the fault", func() bool { return h.done.Load() >= linOpsBefore })
		faultAt := time.Now()
		fault()
		t.Logf("fault took %v", time.Since(faultAt).Round(time.Millisecond))
		target = h.ok.Load() + linOpsAfter
	}
	waitFor("operations after the fault", func() bool { return h.ok.Load() >= target })
	stopWork()
	wg.Wait()

	// The final revision, read linearizably through every instance (each
	// must be serving again, and none may be behind what was acknowledged).
	// A write whose client gave up when the work stopped may still commit
	// (as in etcd), so the revision is read until it holds still.
	var final int64
	for prev := int64(-1); final != prev; {
		prev = final
		time.Sleep(300 * time.Millisecond)
		for i, c := range clients {
			resp, err := c.Get(ctx, linPrefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
			if err != nil {
				t.Fatalf("final read through instance %d: %v", i, err)
			}
			final = max(final, resp.Header.Revision)
		}
	}
	log, err := readLog(ctx, be, final)
	if err != nil {
		t.Fatal(err)
	}
	for _, ch := range upTos {
		ch <- final
	}
	wwg.Wait()
	if len(werrs) > 0 {
		t.Fatal(errors.Join(werrs...))
	}
	slices.SortFunc(watches, func(a, b watchRecord) int { return strings.Compare(a.name, b.name) })
	return &linRun{records: h.records, log: log, watches: watches, final: final}
}

// resumedWatch watches linPrefix from revision 1, first on clients[first]:
// after a random number of events it cancels the watch and starts a new
// one on the next instance from the last revision it got + 1, until it
// has delivered revision upTo. It returns one watchRecord per session.
func resumedWatch(ctx context.Context, clients []*clientv3.Client, first int, upTo <-chan int64, seed uint64) ([]watchRecord, error) {
	r := rand.New(rand.NewPCG(seed, uint64(1000+first)))
	var recs []watchRecord
	next, target := int64(1), int64(-1)
	for session := 0; ; session++ {
		inst := (first + session) % len(clients)
		spec := watchSpec{prefix: linPrefix, start: next, prevKV: session%2 == 1}
		rec := watchRecord{name: fmt.Sprintf("instance %d resumed watch session %d (instance %d from %d)", first, session, inst, next), spec: spec}
		opts := []clientv3.OpOption{clientv3.WithPrefix(), clientv3.WithRev(next)}
		if spec.prevKV {
			opts = append(opts, clientv3.WithPrevKV())
		}
		sctx, cancel := context.WithCancel(ctx)
		wch := clients[inst].Watch(sctx, linPrefix, opts...)
		stopAfter := 20 + r.IntN(150) // events in this session
		events := 0
		for {
			if target >= 0 && next > target {
				cancel()
				rec.upTo = target
				return append(recs, rec), nil
			}
			if events >= stopAfter {
				break
			}
			select {
			case wr, ok := <-wch:
				if !ok || wr.Err() != nil {
					cancel()
					return append(recs, rec), fmt.Errorf("%s: watch ended: %w", rec.name, wr.Err())
				}
				rec.resps = append(rec.resps, wr)
				if n := len(wr.Events); n > 0 {
					events += n
					next = wr.Events[n-1].Kv.ModRevision + 1
				}
			case target = <-upTo:
			case <-ctx.Done():
				cancel()
				return append(recs, rec), fmt.Errorf("%s: timed out before revision %d (at %d)", rec.name, target, next)
			}
		}
		cancel()
		rec.upTo = next - 1
		recs = append(recs, rec)
	}
}

// check runs every check on the run and logs what it checked.
func (run *linRun) check(t *testing.T) error {
	t.Helper()
	replay, err := replayLog(run.log)
	if err != nil {
		return err
	}
	if replay.last != run.final {
		return fmt.Errorf("kv_log ends at revision %d, but a client read revision %d", replay.last, run.final)
	}
	ops, stats, err := attributeWrites(run.records, replay)
	if err != nil {
		return err
	}
	if err := checkRevisionOrder(ops); err != nil {
		return err
	}
	var history []porcupine.Operation
	for _, op := range ops {
		switch op.in.kind {
		case linMulti, linGrant:
		case linRevoke:
			in := op.in
			in.kind = linDelete
			history = append(history, porcupine.Operation{ClientId: op.client, Input: in, Output: op.out, Call: op.call, Return: op.ret})
		case linList:
			for i := range linKeys {
				k := linKey(i)
				history = append(history, porcupine.Operation{ClientId: op.client, Input: linInput{kind: linGet, key: k},
					Output: linOutput{rev: op.out.rev, kv: op.listed[k]}, Call: op.call, Return: op.ret})
			}
		default:
			history = append(history, porcupine.Operation{ClientId: op.client, Input: op.in, Output: op.out, Call: op.call, Return: op.ret})
		}
	}
	start := time.Now()
	res, info := porcupine.CheckOperationsVerbose(linModel, history, linCheckTimeout)
	took := time.Since(start)
	events := 0
	for _, w := range run.watches {
		events += len(watchEvents(w.resps))
	}
	t.Logf("%s; porcupine: %d operations on %d keys checked in %v: %s; %d watches (sessions) delivered %d events up to revision %d",
		stats, len(history), linKeys, took.Round(time.Millisecond), res, len(run.watches), events, run.final)
	switch res {
	case porcupine.Illegal:
		dir := run.visualize
		if dir == "" {
			dir = os.TempDir()
		}
		path := filepath.Join(dir, fmt.Sprintf("kvsql-linearizability-%d.html", time.Now().UnixNano()))
		if err := porcupine.VisualizePath(linModel, info, path); err != nil {
			path = "(visualization failed: " + err.Error() + ")"
		}
		return fmt.Errorf("porcupine: the history of some key is not linearizable; visualization: %s", path)
	case porcupine.Unknown:
		return fmt.Errorf("porcupine did not finish within %v", linCheckTimeout)
	}
	var errs []error
	for _, w := range run.watches {
		upTo := w.upTo
		if upTo == 0 {
			upTo = run.final
		}
		if err := replay.checkResponses(w.spec, w.resps, upTo); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", w.name, err))
		}
	}
	return errors.Join(errs...)
}

// linStats counts what attributeWrites did with the records.
type linStats struct {
	records, failed, tookEffect, reads, writes int
	errs                                       map[string]int // failures by error
}

func (s linStats) String() string {
	return fmt.Sprintf("%d operations (%d reads, %d writes), %d failed of which %d took effect (errors: %v)", s.records, s.reads, s.writes, s.failed, s.tookEffect, s.errs)
}

// attributeWrites matches every write with the revision kv_log has for it
// and returns the operations to check: those that succeeded, and the
// failed writes that took effect (with kv_log's revision and no return).
// Failed reads, and failed writes that kv_log does not have, say nothing
// and are left out. Puts carry unique values, so a put is found by its
// value; failed deletes of a key are interchangeable, and a delete of it
// that no acknowledged delete made is given to the earliest called of
// them, which constrains it least.
func attributeWrites(records []linRecord, replay *logReplay) ([]linRecord, linStats, error) {
	type logWrite struct {
		evs []*mvccpb.Event
		by  int // index in records, -1 until attributed
	}
	revs := map[int64]*logWrite{}
	byValue := map[string]int64{}
	for _, ev := range replay.events {
		if !strings.HasPrefix(string(ev.Kv.Key), linPrefix) {
			continue
		}
		rev := ev.Kv.ModRevision
		if revs[rev] == nil {
			revs[rev] = &logWrite{by: -1}
		}
		revs[rev].evs = append(revs[rev].evs, ev)
		if ev.Type == mvccpb.PUT {
			byValue[string(ev.Kv.Value)] = rev
		}
	}
	// matches reports whether the write r made exactly the events evs.
	matches := func(r linRecord, evs []*mvccpb.Event) bool {
		want := map[string]mvccpb.Event_EventType{}
		switch r.in.kind {
		case linMulti:
			want[linMultiA], want[linMultiB] = mvccpb.PUT, mvccpb.PUT
		case linDelete, linRevoke:
			want[r.in.key] = mvccpb.DELETE
		default:
			want[r.in.key] = mvccpb.PUT
		}
		if len(evs) != len(want) {
			return false
		}
		for _, ev := range evs {
			if typ, ok := want[string(ev.Kv.Key)]; !ok || typ != ev.Type || (typ == mvccpb.PUT && string(ev.Kv.Value) != r.in.value) {
				return false
			}
		}
		return true
	}
	describe := func(evs []*mvccpb.Event) string {
		var s []string
		for _, ev := range evs {
			s = append(s, eventString((*clientv3.Event)(ev)))
		}
		if len(s) == 0 {
			return "nothing of the workload"
		}
		return strings.Join(s, "; ")
	}
	claim := func(i int, r linRecord) error {
		w := revs[r.out.rev]
		if w == nil || !matches(r, w.evs) {
			var evs []*mvccpb.Event
			if w != nil {
				evs = w.evs
			}
			return fmt.Errorf("%s: kv_log has at revision %d: %s", r, r.out.rev, describe(evs))
		}
		if w.by >= 0 {
			return fmt.Errorf("%s and %s were both acknowledged at revision %d", r, records[w.by], r.out.rev)
		}
		w.by = i
		return nil
	}

	stats := linStats{records: len(records), errs: map[string]int{}}
	var ops []linRecord
	var failedDeletes []int
	for i, r := range records {
		if r.err == nil {
			if r.isWrite() {
				if err := claim(i, r); err != nil {
					return nil, stats, err
				}
			}
			ops = append(ops, r)
			continue
		}
		stats.failed++
		stats.errs[r.err.Error()]++
		switch r.in.kind {
		case linPut, linMulti, linCAS:
			rev, ok := byValue[r.in.value]
			if !ok {
				continue // it never took effect
			}
			r.out = linOutput{rev: rev, changed: true}
			r.ret = math.MaxInt64
			if err := claim(i, r); err != nil {
				return nil, stats, err
			}
			stats.tookEffect++
			ops = append(ops, r)
		case linDelete, linRevoke:
			failedDeletes = append(failedDeletes, i)
		}
	}
	slices.SortFunc(failedDeletes, func(a, b int) int { return cmp.Compare(records[a].call, records[b].call) })
	var unmade []int64
	for rev, w := range revs {
		if w.by < 0 {
			unmade = append(unmade, rev)
		}
	}
	slices.Sort(unmade)
	for _, rev := range unmade {
		w := revs[rev]
		j := slices.IndexFunc(failedDeletes, func(i int) bool {
			return matches(linRecord{in: records[i].in}, w.evs)
		})
		if j < 0 {
			return nil, stats, fmt.Errorf("kv_log has at revision %d %s, which no client's write made (or was acknowledged with)", rev, describe(w.evs))
		}
		r := records[failedDeletes[j]]
		failedDeletes = slices.Delete(failedDeletes, j, j+1)
		r.out, r.ret = linOutput{rev: rev, changed: true}, math.MaxInt64
		stats.tookEffect++
		ops = append(ops, r)
	}
	for _, r := range ops {
		if r.isWrite() {
			stats.writes++
		} else {
			stats.reads++
		}
	}
	return ops, stats, nil
}

// checkRevisionOrder checks that the order of revisions respects real
// time: an operation that started after another one returned has a higher
// position, where a write at R is at 2R and a read at header revision H at
// 2H+1 (after the write at H; reads at the same H share it).
func checkRevisionOrder(ops []linRecord) error {
	pos := func(r linRecord) int64 {
		if r.isWrite() {
			return 2 * r.out.rev
		}
		return 2*r.out.rev + 1
	}
	byCall := slices.Clone(ops)
	slices.SortFunc(byCall, func(a, b linRecord) int { return cmp.Compare(a.call, b.call) })
	byRet := slices.Clone(ops)
	slices.SortFunc(byRet, func(a, b linRecord) int { return cmp.Compare(a.ret, b.ret) })
	maxPos, j := int64(-1), 0
	var maxOp linRecord
	for _, b := range byCall {
		for ; j < len(byRet) && byRet[j].ret < b.call; j++ {
			if p := pos(byRet[j]); p > maxPos {
				maxPos, maxOp = p, byRet[j]
			}
		}
		if p := pos(b); p < maxPos || (p == maxPos && b.isWrite()) {
			return fmt.Errorf("revisions go back in time: %s started after %s had returned", b, maxOp)
		}
	}
	return nil
}

// TestLinearizability: the workload through three instances on PostgreSQL
// and on MariaDB, and through one on SQLite, without faults.
func TestLinearizability(t *testing.T) {
	t.Parallel()
	cases := append([]struct {
		name  string
		start sharedDB
	}{{"sqlite", sqliteInstances}}, sharedDBBackends...)
	for _, b := range cases {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			n := 3
			if b.name == "sqlite" {
				n = 1
			}
			servers, be := b.start(t, n, serverOptions{SafetyPoll: time.Hour})
			runLinearizabilityCheck(t, clientsFor(t, servers), be, nil)
		})
	}
}

// TestLinearizabilityCheckerRejects shows that the checker can fail: it
// records a real run on SQLite, which passes, then breaks a copy of the
// history or of a watch in one way each and expects the check to name what
// broke.
func TestLinearizabilityCheckerRejects(t *testing.T) {
	t.Parallel()
	servers, be := sqliteInstances(t, 1, serverOptions{})
	run := recordLinearizability(t, clientsFor(t, servers), be, nil)
	if err := run.check(t); err != nil {
		t.Fatalf("the unbroken run fails: %v", err)
	}
	replay, err := replayLog(run.log)
	if err != nil {
		t.Fatal(err)
	}
	// update is an acknowledged put that updated a key (the key existed
	// before it, at prev), with nothing else returned at the same time.
	var update linRecord
	var prev *mvccpb.KeyValue
	for i, ev := range replay.events {
		if replay.prev[i] == nil || ev.Type != mvccpb.PUT || !strings.HasPrefix(string(ev.Kv.Key), linKeyPrefix) {
			continue
		}
		j := slices.IndexFunc(run.records, func(r linRecord) bool {
			return r.err == nil && r.in.kind == linPut && r.in.value == string(ev.Kv.Value)
		})
		if j >= 0 {
			update, prev = run.records[j], replay.prev[i]
			break
		}
	}
	if prev == nil {
		t.Fatal("no acknowledged put updated a key")
	}
	// multi is a watch response with more than one event of one revision.
	multi := slices.IndexFunc(run.watches[0].resps, func(r clientv3.WatchResponse) bool {
		return len(r.Events) > 1 && r.Events[0].Kv.ModRevision == r.Events[1].Kv.ModRevision
	})
	if multi < 0 {
		t.Fatal("no watch response holds a two-key revision")
	}
	if !run.watches[0].spec.prevKV || strings.Contains(run.watches[0].name, "resumed") {
		t.Fatalf("watch 0 is %q; the cases below want the one from revision 1 with prev_kv", run.watches[0].name)
	}
	resumed := slices.IndexFunc(run.watches, func(w watchRecord) bool {
		return w.spec.start > 1 && len(watchEvents(w.resps)) > 0
	})
	if resumed < 0 {
		t.Fatal("no resumed watch session delivered events")
	}
	// A read right after update returned, at the header revision the
	// store had then (the highest any operation returned before it had).
	fresh := int64(0)
	for _, r := range run.records {
		if r.err == nil && r.ret <= update.ret {
			fresh = max(fresh, r.out.rev)
		}
	}
	staleRead := func(rev int64) linRecord {
		return linRecord{client: 999, in: linInput{kind: linGet, key: update.in.key},
			out: linOutput{rev: rev, kv: toLinKV(prev)}, call: update.ret + 1, ret: update.ret + 2}
	}
	// withEvents are the responses of watch 0 that carry events (the
	// others are progress notifications).
	var withEvents []int
	for i, r := range run.watches[0].resps {
		if len(r.Events) > 0 {
			withEvents = append(withEvents, i)
		}
	}
	cases := []struct {
		name   string
		want   string
		break_ func(r *linRun)
	}{
		{"a read after a put returns the value before it, with a fresh header revision", "porcupine",
			func(r *linRun) { r.records = append(r.records, staleRead(fresh)) }},
		{"a read after a put returns the value before it, with the header revision before it: a revision going back", "revisions go back in time",
			func(r *linRun) { r.records = append(r.records, staleRead(update.out.rev-1)) }},
		{"a put is acknowledged with another revision than kv_log's", "kv_log has at revision",
			func(r *linRun) {
				i := slices.IndexFunc(r.records, func(x linRecord) bool { return x.in.value == update.in.value })
				r.records[i].out.rev--
			}},
		{"an acknowledged put is not in kv_log (another value is)", "kv_log has at revision",
			func(r *linRun) {
				r.log = slices.Clone(r.log)
				i := slices.IndexFunc(r.log, func(ev *mvccpb.Event) bool { return string(ev.Kv.Value) == update.in.value })
				ev := proto.Clone(r.log[i]).(*mvccpb.Event)
				ev.Kv.Value = []byte("a value no client wrote")
				r.log[i] = ev
			}},
		{"a watch delivers an event twice", "unique",
			func(r *linRun) {
				w := &r.watches[0]
				w.resps = slices.Clone(w.resps)
				i := withEvents[1]
				w.resps[i].Events = slices.Concat(w.resps[i].Events, w.resps[i].Events)
			}},
		{"a watch misses a response", "reliable",
			func(r *linRun) {
				w := &r.watches[0]
				w.resps = slices.Delete(slices.Clone(w.resps), withEvents[5], withEvents[5]+1)
			}},
		{"a watch delivers two responses out of order", "ordered",
			func(r *linRun) {
				w := &r.watches[0]
				w.resps = slices.Clone(w.resps)
				i := slices.IndexFunc(withEvents, func(i int) bool { return i > 0 && len(w.resps[i-1].Events) > 0 })
				if i < 0 {
					t.Fatal("no two responses with events follow each other")
				}
				w.resps[withEvents[i]-1], w.resps[withEvents[i]] = w.resps[withEvents[i]], w.resps[withEvents[i]-1]
			}},
		{"a watch splits a revision over two responses", "atomic",
			func(r *linRun) {
				w := &r.watches[0]
				resp := w.resps[multi]
				a, b := resp, resp
				a.Events, b.Events = resp.Events[:1], resp.Events[1:]
				w.resps = slices.Concat(w.resps[:multi], []clientv3.WatchResponse{a, b}, w.resps[multi+1:])
			}},
		{"a watch event carries a wrong prev_kv", "prev_kv",
			func(r *linRun) {
				w := &r.watches[0]
				w.resps = slices.Clone(w.resps)
				i := slices.IndexFunc(w.resps, func(x clientv3.WatchResponse) bool { return len(x.Events) > 0 && x.Events[0].PrevKv != nil })
				resp := w.resps[i]
				ev := proto.Clone((*mvccpb.Event)(resp.Events[0])).(*mvccpb.Event)
				ev.PrevKv.Value = []byte("not the previous value")
				resp.Events = append([]*clientv3.Event{(*clientv3.Event)(ev)}, resp.Events[1:]...)
				w.resps[i] = resp
			}},
		{"a resumed watch starts after the revision it was resumed from", "resumable",
			func(r *linRun) {
				w := &r.watches[resumed]
				i := slices.IndexFunc(w.resps, func(x clientv3.WatchResponse) bool { return len(x.Events) > 0 })
				w.resps = slices.Delete(slices.Clone(w.resps), i, i+1)
			}},
		{"a progress notification claims a revision whose event comes after it", "bookmarkable",
			func(r *linRun) {
				w := &r.watches[0]
				i := slices.IndexFunc(w.resps, func(x clientv3.WatchResponse) bool { return len(x.Events) > 0 })
				progress := clientv3.WatchResponse{Header: w.resps[i].Header}
				progress.Header.Revision = w.resps[i].Events[0].Kv.ModRevision
				w.resps = slices.Concat(w.resps[:i], []clientv3.WatchResponse{progress}, w.resps[i:])
			}},
	}
	for _, tc := range cases {
		broken := *run
		broken.visualize = t.TempDir()
		broken.records = slices.Clone(run.records)
		broken.watches = slices.Clone(run.watches)
		tc.break_(&broken)
		err := broken.check(t)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: check = %v; want an error about %q", tc.name, err, tc.want)
			continue
		}
		t.Logf("%s: rejected: %v", tc.name, err)
	}
}
