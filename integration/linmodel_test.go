package integration

// The etcd KV model the linearizability checker gives porcupine, one key at
// a time (porcupine checks each key's history on its own: see Partition).
//
// etcd's state is a map key -> (value, create revision, mod revision,
// version) plus one global revision that every write increments. That
// revision ties the keys together, so a model partitioned by key cannot
// hold it. Two checks together are equivalent to checking the whole
// history against the global model:
//
//   - per key (porcupine, this file): the key's operations are
//     linearizable, where a write's revision must be above every revision
//     at which the key was read or written before it, and a read at header
//     revision H sees the key's last write, which must be at or below H.
//     So in the key's linearization, writes come in revision order and each
//     read sits between the writes around its H.
//   - across keys (checkRevisionOrder in linearizability_test.go): ordering
//     every operation by its revision (a write at R, a read at H just after
//     the write at H) respects real time, and every write's revision is the
//     one kv_log has for it.
//
// Then the revision order is one linearization of the whole history: per
// key it is a valid sequence (the first check), the global revision after
// the write at R is R (kv_log is gapless and each of its revisions belongs
// to exactly one write), and real time is respected (the second check).

import (
	"fmt"
	"slices"

	"github.com/anishathalye/porcupine"
)

type linOpKind int

const (
	linGet linOpKind = iota
	linPut
	linDelete
	// linCAS is Kubernetes' GuaranteedUpdate: If(mod_revision(key) ==
	// expect) Then(Put(key, value)) Else(Get(key)).
	linCAS
)

// linKV is a key's state as a read returns it; the zero value is "absent".
type linKV struct {
	exists               bool
	value                string
	create, mod, version int64
}

func (kv linKV) String() string {
	if !kv.exists {
		return "<absent>"
	}
	return fmt.Sprintf("%q(create=%d mod=%d ver=%d)", kv.value, kv.create, kv.mod, kv.version)
}

// linInput is one operation on one key.
type linInput struct {
	kind   linOpKind
	key    string
	value  string // put, cas
	expect int64  // cas: the mod revision compared (0: the key is absent)
}

// linOutput is its result: rev is the response header's revision (for a
// write that changed the key: the revision it committed at).
type linOutput struct {
	rev int64
	// kv: what a get, or a cas whose compare failed, read.
	kv linKV
	// changed: a cas succeeded; a delete deleted the key. A put always
	// changes its key.
	changed bool
}

// linKeyState is the model's state of one key. floor is the highest
// revision at which the key was written or read so far: the key's next
// write must commit above it.
type linKeyState struct {
	kv    linKV
	last  int64 // revision of the last write, delete included (0: none)
	floor int64
}

// step applies one operation to s; ok is whether the output is possible.
func (s linKeyState) step(in linInput, out linOutput) (bool, linKeyState) {
	read := func(kv linKV) (bool, linKeyState) {
		if kv != s.kv || out.rev < s.last {
			return false, s
		}
		s.floor = max(s.floor, out.rev)
		return true, s
	}
	write := func(deleted bool) (bool, linKeyState) {
		if out.rev <= s.floor {
			return false, s
		}
		next := linKeyState{last: out.rev, floor: out.rev}
		if !deleted {
			next.kv = linKV{exists: true, value: in.value, create: out.rev, mod: out.rev, version: 1}
			if s.kv.exists {
				next.kv.create, next.kv.version = s.kv.create, s.kv.version+1
			}
		}
		return true, next
	}
	switch in.kind {
	case linGet:
		return read(out.kv)
	case linPut:
		return write(false)
	case linDelete:
		if !out.changed {
			return read(linKV{}) // nothing to delete: no new revision
		}
		if !s.kv.exists {
			return false, s
		}
		return write(true)
	case linCAS:
		if (s.kv.mod == in.expect) != out.changed {
			return false, s
		}
		if !out.changed {
			return read(out.kv)
		}
		return write(false)
	}
	panic(fmt.Sprintf("unknown operation kind %d", in.kind))
}

// linModel is the per-key etcd KV model.
var linModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		var keys []string
		for _, op := range history {
			k := op.Input.(linInput).key
			if _, ok := byKey[k]; !ok {
				keys = append(keys, k)
			}
			byKey[k] = append(byKey[k], op)
		}
		slices.Sort(keys)
		out := make([][]porcupine.Operation, 0, len(keys))
		for _, k := range keys {
			out = append(out, byKey[k])
		}
		return out
	},
	Init: func() any { return linKeyState{} },
	Step: func(state, input, output any) (bool, any) {
		return state.(linKeyState).step(input.(linInput), output.(linOutput))
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(linInput), output.(linOutput)
		switch in.kind {
		case linGet:
			return fmt.Sprintf("get(%q) -> %s @%d", in.key, out.kv, out.rev)
		case linPut:
			return fmt.Sprintf("put(%q, %q) -> @%d", in.key, in.value, out.rev)
		case linDelete:
			return fmt.Sprintf("delete(%q) -> deleted=%v @%d", in.key, out.changed, out.rev)
		default:
			if out.changed {
				return fmt.Sprintf("cas(%q, mod=%d, %q) -> put @%d", in.key, in.expect, in.value, out.rev)
			}
			return fmt.Sprintf("cas(%q, mod=%d, %q) -> failed, read %s @%d", in.key, in.expect, in.value, out.kv, out.rev)
		}
	},
	DescribeState: func(state any) string {
		s := state.(linKeyState)
		return fmt.Sprintf("%s last=%d floor=%d", s.kv, s.last, s.floor)
	},
}
