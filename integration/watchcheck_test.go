package integration

// Checking what watches delivered against kv_log, the history every
// instance serves its watches from. The guarantees are etcd's
// (https://etcd.io/docs/v3.6/learning/api_guarantees/#watch-apis), checked
// the way etcd's robustness suite checks them: ordered, unique, atomic,
// bookmarkable, reliable, resumable, and prev_kv equal to the key's
// previous version.

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/protobuf/proto"

	"github.com/kvsql/kvsql/backends"
)

// readLog returns kv_log's events of revisions 2..upTo, reading as many
// times as Changes needs (one read is bounded in bytes).
func readLog(ctx context.Context, be backends.Backend, upTo int64) ([]*mvccpb.Event, error) {
	var out []*mvccpb.Event
	for after := int64(0); after < upTo; {
		evs, err := be.Changes(ctx, after, upTo-after)
		if err != nil {
			return nil, fmt.Errorf("read kv_log after revision %d: %w", after, err)
		}
		if len(evs) == 0 {
			break // nothing committed above after: upTo is not reached yet
		}
		out = append(out, evs...)
		after = evs[len(evs)-1].Kv.ModRevision
	}
	return out, nil
}

// logReplay is kv_log replayed from an empty store: every event with the
// state its key had just before the event's revision.
type logReplay struct {
	events []*mvccpb.Event
	// prev[i] is events[i]'s key just before events[i]'s revision, nil
	// where it did not exist: what prev_kv must carry.
	prev []*mvccpb.KeyValue
	// last is the last revision in the log (1 when it is empty).
	last int64
}

// replayLog replays evs (the whole history from revision 2, in order) and
// checks that it is a history etcd could have written: revisions gapless
// and increasing, every put's version and create revision following from
// the key's previous version, every delete of a key that existed.
func replayLog(evs []*mvccpb.Event) (*logReplay, error) {
	r := &logReplay{events: evs, prev: make([]*mvccpb.KeyValue, len(evs)), last: 1}
	state := map[string]*mvccpb.KeyValue{}
	for i := 0; i < len(evs); {
		rev := evs[i].Kv.ModRevision
		if rev != r.last+1 {
			return nil, fmt.Errorf("kv_log: revision %d follows %d", rev, r.last)
		}
		j := i
		for j < len(evs) && evs[j].Kv.ModRevision == rev {
			j++
		}
		// Every event of a revision sees the state before the revision.
		for k := i; k < j; k++ {
			r.prev[k] = state[string(evs[k].Kv.Key)]
		}
		for k := i; k < j; k++ {
			ev, prev := evs[k], r.prev[k]
			switch ev.Type {
			case mvccpb.PUT:
				wantVer, wantCreate := int64(1), rev
				if prev != nil {
					wantVer, wantCreate = prev.Version+1, prev.CreateRevision
				}
				if ev.Kv.Version != wantVer || ev.Kv.CreateRevision != wantCreate {
					return nil, fmt.Errorf("kv_log: %s: want version %d and create revision %d after %s",
						eventString((*clientv3.Event)(ev)), wantVer, wantCreate, kvString(prev))
				}
				state[string(ev.Kv.Key)] = ev.Kv
			case mvccpb.DELETE:
				if prev == nil {
					return nil, fmt.Errorf("kv_log: %s deletes a key that did not exist", eventString((*clientv3.Event)(ev)))
				}
				delete(state, string(ev.Kv.Key))
			}
		}
		r.last, i = rev, j
	}
	return r, nil
}

func kvString(kv *mvccpb.KeyValue) string {
	if kv == nil {
		return "<none>"
	}
	return fmt.Sprintf("%q=%q (create=%d mod=%d ver=%d lease=%d)", kv.Key, kv.Value, kv.CreateRevision, kv.ModRevision, kv.Version, kv.Lease)
}

// watchSpec is what a watch asked for.
type watchSpec struct {
	prefix string // the keys watched: this prefix ("" = every key)
	start  int64  // the revision asked for (1 = the whole history)
	prevKV bool
}

// want returns the events a watch with spec must deliver up to revision
// upTo, with prev_kv as etcd sets it.
func (r *logReplay) want(spec watchSpec, upTo int64) []*mvccpb.Event {
	var out []*mvccpb.Event
	for i, ev := range r.events {
		rev := ev.Kv.ModRevision
		if rev < spec.start || rev > upTo || !bytes.HasPrefix(ev.Kv.Key, []byte(spec.prefix)) {
			continue
		}
		want := &mvccpb.Event{Type: ev.Type, Kv: ev.Kv}
		if spec.prevKV {
			want.PrevKv = r.prev[i]
		}
		out = append(out, want)
	}
	return out
}

// checkEvents checks that evs are exactly what a watch with spec must
// deliver up to upTo (events above upTo are ignored): each guarantee is
// checked on its own so that a failure names the one that broke.
func (r *logReplay) checkEvents(spec watchSpec, evs []*clientv3.Event, upTo int64) error {
	var got []*mvccpb.Event
	for _, ev := range evs {
		if ev.Kv.ModRevision <= upTo {
			got = append(got, (*mvccpb.Event)(ev))
		}
	}
	want := r.want(spec, upTo)
	type id struct {
		rev int64
		key string
	}
	seen := map[id]bool{}
	var last id
	for i, ev := range got {
		e := id{ev.Kv.ModRevision, string(ev.Kv.Key)}
		if seen[e] {
			return fmt.Errorf("unique: event %d, %s, was delivered before", i, eventString((*clientv3.Event)(ev)))
		}
		seen[e] = true
		if e.rev < last.rev {
			return fmt.Errorf("ordered: event %d at revision %d follows one at revision %d", i, e.rev, last.rev)
		}
		last = e
	}
	if len(want) > 0 && len(got) > 0 && !proto.Equal(got[0], want[0]) {
		return fmt.Errorf("resumable: the first event after revision %d is %s, kv_log has %s",
			spec.start, eventString((*clientv3.Event)(got[0])), eventString((*clientv3.Event)(want[0])))
	}
	inWant := map[id]*mvccpb.Event{}
	for _, ev := range want {
		inWant[id{ev.Kv.ModRevision, string(ev.Kv.Key)}] = ev
	}
	for _, ev := range want {
		if !seen[id{ev.Kv.ModRevision, string(ev.Kv.Key)}] {
			return fmt.Errorf("reliable: %s (of %d events up to revision %d) was never delivered; %d were",
				eventString((*clientv3.Event)(ev)), len(want), upTo, len(got))
		}
	}
	for i, ev := range got {
		w := inWant[id{ev.Kv.ModRevision, string(ev.Kv.Key)}]
		if w == nil {
			return fmt.Errorf("event %d, %s, is not an event of this watch in kv_log", i, eventString((*clientv3.Event)(ev)))
		}
		if !proto.Equal(ev.PrevKv, w.PrevKv) {
			return fmt.Errorf("prev_kv: event %d, %s, has prev_kv %s; the key was %s", i,
				eventString((*clientv3.Event)(ev)), kvString(ev.PrevKv), kvString(w.PrevKv))
		}
		if !proto.Equal(ev, w) {
			return fmt.Errorf("event %d = %s, kv_log has %s", i, eventString((*clientv3.Event)(ev)), eventString((*clientv3.Event)(w)))
		}
	}
	// Same events, each once, in revision order: only the order of events
	// within one revision is left.
	for i, ev := range got {
		if !proto.Equal(ev, want[i]) {
			return fmt.Errorf("ordered: event %d = %s, kv_log has %s", i, eventString((*clientv3.Event)(ev)), eventString((*clientv3.Event)(want[i])))
		}
	}
	return nil
}

// checkResponses checks how a watch's events were grouped into responses
// (atomic: a revision never split over two; bookmarkable: a progress
// notification at R comes after every event <= R and before every later
// one), then its events with checkEvents.
func (r *logReplay) checkResponses(spec watchSpec, resps []clientv3.WatchResponse, upTo int64) error {
	var evs []*clientv3.Event
	lastRev, progress := int64(0), int64(0)
	for i, resp := range resps {
		if resp.IsProgressNotify() {
			if rev := resp.Header.Revision; rev < lastRev {
				return fmt.Errorf("bookmarkable: response %d is a progress notification at revision %d after an event at %d", i, rev, lastRev)
			} else if rev < progress {
				return fmt.Errorf("bookmarkable: response %d is a progress notification at revision %d after one at %d", i, rev, progress)
			}
			progress = resp.Header.Revision
			continue
		}
		if len(resp.Events) == 0 {
			continue
		}
		if first := resp.Events[0].Kv.ModRevision; first == lastRev {
			return fmt.Errorf("atomic: response %d starts with revision %d, which the response before it ended with", i, first)
		} else if first <= progress {
			return fmt.Errorf("bookmarkable: response %d has an event at revision %d after a progress notification at %d", i, first, progress)
		}
		lastRev = resp.Events[len(resp.Events)-1].Kv.ModRevision
		evs = append(evs, resp.Events...)
	}
	return r.checkEvents(spec, evs, upTo)
}

// recordWatch gathers a watch's responses until it has delivered an event
// at revision upTo or above (the revision arrives on the channel, once
// known), the watch ends, or ctx does.
func recordWatch(ctx context.Context, wch clientv3.WatchChan, upTo <-chan int64) ([]clientv3.WatchResponse, error) {
	var resps []clientv3.WatchResponse
	target, last := int64(-1), int64(0)
	for {
		if target >= 0 && last >= target {
			return resps, nil
		}
		select {
		case wr, ok := <-wch:
			if !ok {
				return resps, fmt.Errorf("watch closed after revision %d", last)
			}
			if err := wr.Err(); err != nil {
				return resps, err
			}
			if len(wr.Events) > 0 {
				last = wr.Events[len(wr.Events)-1].Kv.ModRevision
			}
			resps = append(resps, wr)
		case r := <-upTo:
			target = r
		case <-ctx.Done():
			return resps, fmt.Errorf("timed out at revision %d (want up to revision %d)", last, target)
		}
	}
}

// watchEvents returns the events of resps, in order.
func watchEvents(resps []clientv3.WatchResponse) []*clientv3.Event {
	var evs []*clientv3.Event
	for _, r := range resps {
		evs = append(evs, r.Events...)
	}
	return evs
}

// collect gathers a watch's events until it has seen revision upTo.
func collect(ctx context.Context, wch clientv3.WatchChan, upTo <-chan int64) ([]*clientv3.Event, error) {
	resps, err := recordWatch(ctx, wch, upTo)
	return watchEvents(resps), err
}

// checkWatchesAgainstLog reads kv_log up to rev and checks each named
// watch's events against it (every key, from revision 1, without prev_kv
// unless the name says "prev_kv").
func checkWatchesAgainstLog(ctx context.Context, be backends.Backend, watches map[string][]*clientv3.Event, rev int64) error {
	logEvs, err := readLog(ctx, be, rev)
	if err != nil {
		return err
	}
	replay, err := replayLog(logEvs)
	if err != nil {
		return err
	}
	var errs []error
	for name, evs := range watches {
		spec := watchSpec{start: 1, prevKV: strings.Contains(name, "prev_kv")}
		if err := replay.checkEvents(spec, evs, rev); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}
