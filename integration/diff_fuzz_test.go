package integration

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kvsql/kvsql/backends/mysql"
	"github.com/kvsql/kvsql/backends/postgres"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/pkg/v3/idutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// FuzzDiffTxn builds up to four Txns from the fuzz input (compares over
// keys and ranges with every target and result, puts with leases and
// ignore flags, deletes, ranges with every option, nested txns) and checks
// that kvsql answers each exactly as etcd does. The seed corpus runs in
// every `go test`; `go test -fuzz FuzzDiffTxn ./integration/` explores
// further. One etcd and one kvsql per backend serve every input of a run,
// so state carries over between inputs, the same way on both sides.
func FuzzDiffTxn(f *testing.F) {
	for _, seed := range [][]byte{
		{},
		{1, 0, 2, 3, 1, 0, 0, 5, 2, 1},
		{3, 2, 1, 0, 4, 3, 2, 1, 0, 6, 6, 6, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10},
		{0, 3, 2, 2, 2, 2, 5, 5, 5, 5, 1, 1, 1, 6, 6, 0, 3, 3, 3, 3, 3, 3, 3},
		{2, 1, 1, 1, 1, 1, 3, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4},
		{255, 254, 253, 200, 100, 50, 25, 12, 6, 3, 1, 0, 7, 14, 28, 56, 112, 224},
		[]byte("the quick brown fox jumps over the lazy dog, twice: the quick brown fox"),
	} {
		f.Add(seed)
	}
	var ds []*differ
	for _, b := range kvsqlBackends {
		d := newDiffer(f, serverOptions{}, b.start)
		for _, id := range []int64{1, 2, 3} {
			d.ok(d.leaseGrant(id, 1000))
		}
		ds = append(ds, d)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, d := range ds {
			d.t = t
			cur := d.currentRev()
			c := &byteChooser{data: data}
			for range 1 + c.intn(4) {
				resp, err := d.txn(genTxn(c, cur, 0))
				if err == nil {
					cur = resp.Header.Revision
				}
			}
			d.rng(&pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}})
		}
	})
}

// fuzzDiffers starts one etcd and one kvsql per backend for a fuzz target
// (they serve every input of the run, so state carries over between
// inputs, the same way on both sides) and grants leases 1, 2 and 3.
func fuzzDiffers(f *testing.F, opts serverOptions) map[string]*differ {
	ds := map[string]*differ{}
	for _, b := range kvsqlBackends {
		d := newDiffer(f, opts, b.start)
		for _, id := range []int64{1, 2, 3} {
			d.ok(d.leaseGrant(id, 1000))
		}
		ds[b.name] = d
	}
	return ds
}

// requestKinds are the requests FuzzDiffRequest decodes its input as, by
// the input's first byte.
var requestKinds = []func() proto.Message{
	func() proto.Message { return &pb.RangeRequest{} },
	func() proto.Message { return &pb.PutRequest{} },
	func() proto.Message { return &pb.DeleteRangeRequest{} },
	func() proto.Message { return &pb.TxnRequest{} },
}

// FuzzDiffRequest decodes the fuzz input as a Range, Put, DeleteRange or
// Txn request (the first byte picks which; the rest is the protobuf), as
// a client could send it, and checks that kvsql answers it exactly as etcd
// does: the same validation error, or the same response. It is the
// differential half of kvserver.FuzzValidate: etcd's validation functions
// are not exported, so etcd itself is asked. Left out: puts of keys longer
// than PostgreSQL's and MySQL's 2048 bytes (refused by design, see
// FuzzDiffKeyValue) and txns etcd 3.7.3 panics on (boundFromKeyDeletes).
func FuzzDiffRequest(f *testing.F) {
	put := func(k string) *pb.RequestOp { return opPut(&pb.PutRequest{Key: bs(k), Value: bs("v")}) }
	for _, m := range []proto.Message{
		&pb.RangeRequest{Key: bs("a"), RangeEnd: bs("b"), SortOrder: 7, SortTarget: pb.RangeRequest_VALUE},
		&pb.RangeRequest{Key: bs("a"), RangeEnd: bs("\x00"), Limit: 2, Revision: 3, MinModRevision: 2},
		&pb.PutRequest{Key: bs("a"), Value: bs("v"), IgnoreValue: true},
		&pb.PutRequest{Key: bs("a"), Lease: 2, PrevKv: true},
		&pb.DeleteRangeRequest{Key: bs("a"), RangeEnd: bs("\x00"), PrevKv: true},
		&pb.TxnRequest{
			Compare: []*pb.Compare{{Key: bs("a"), Target: pb.Compare_MOD, TargetUnion: &pb.Compare_ModRevision{ModRevision: 0}}},
			Success: []*pb.RequestOp{put("a"), {Request: &pb.RequestOp_RequestTxn{RequestTxn: &pb.TxnRequest{
				Success: []*pb.RequestOp{put("b")}, Failure: []*pb.RequestOp{put("b"), opDel(&pb.DeleteRangeRequest{Key: bs("c"), RangeEnd: bs("d")})}}}}},
			Failure: []*pb.RequestOp{opRange(&pb.RangeRequest{Key: bs("a"), SortTarget: 9})},
		},
		&pb.TxnRequest{Compare: []*pb.Compare{{Key: bs("a"), Target: pb.Compare_VALUE, Result: 9, TargetUnion: &pb.Compare_Version{Version: 1}}},
			Success: []*pb.RequestOp{put("a"), put("a")}},
	} {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		kind := slices.IndexFunc(requestKinds, func(k func() proto.Message) bool {
			return k().ProtoReflect().Descriptor() == m.ProtoReflect().Descriptor()
		})
		f.Add(append([]byte{byte(kind)}, b...))
	}
	ds := fuzzDiffers(f, serverOptions{})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		m := requestKinds[data[0]%4]()
		if proto.Unmarshal(data[1:], m) != nil {
			return
		}
		var call func(d *differ)
		switch r := m.(type) {
		case *pb.RangeRequest:
			call = func(d *differ) { d.rng(r) }
		case *pb.PutRequest:
			if len(r.Key) > postgres.MaxKeyBytes {
				return
			}
			call = func(d *differ) { d.put(r) }
		case *pb.DeleteRangeRequest:
			call = func(d *differ) { d.del(r) }
		case *pb.TxnRequest:
			if hasLongPut(r) {
				return
			}
			boundFromKeyDeletes(r)
			call = func(d *differ) { d.txn(r) }
		}
		for _, d := range ds {
			d.t = t
			call(d)
		}
	})
}

// hasLongPut reports whether r or a nested txn puts a key longer than
// PostgreSQL and MySQL store.
func hasLongPut(r *pb.TxnRequest) bool {
	for _, ops := range [][]*pb.RequestOp{r.Success, r.Failure} {
		for _, op := range ops {
			if p := op.GetRequestPut(); p != nil && len(p.Key) > postgres.MaxKeyBytes {
				return true
			}
			if t := op.GetRequestTxn(); t != nil && hasLongPut(t) {
				return true
			}
		}
	}
	return false
}

// fuzzMaxRequestBytes is the request size limit of FuzzDiffKeyValue's
// servers: small, so that inputs reach it cheaply.
const fuzzMaxRequestBytes = 64 << 10

// grow returns b repeated (or zeros, when b is empty) up to n bytes, or
// b's first n bytes.
func grow(b []byte, n int) []byte {
	if n <= len(b) {
		return b[:n]
	}
	out := make([]byte, 0, n)
	for len(out) < n {
		if len(b) == 0 {
			out = append(out, 0)
			continue
		}
		out = append(out, b[:min(len(b), n-len(out))]...)
	}
	return out
}

// memberIDs returns the member IDs of etcd and of kvsql.
func (d *differ) memberIDs() (etcd, kvsql uint64) {
	d.t.Helper()
	var ids []uint64
	for _, tg := range []target{d.etcd, d.kv} {
		resp, err := tg.kv.Range(d.ctx, &pb.RangeRequest{Key: []byte("x")})
		if err != nil {
			d.t.Fatalf("%s: %v", tg.name, err)
		}
		ids = append(ids, resp.Header.MemberId)
	}
	return ids[0], ids[1]
}

// proposalSize is how large etcd measures a put against its request size
// limit (and kvsql does the same): as the raft proposal carrying it, with a
// request ID from the generator of a member with ID memberID.
func proposalSize(r *pb.PutRequest, memberID uint64) int {
	id := idutil.NewGenerator(uint16(memberID), time.Now()).Next()
	return proto.Size(&pb.InternalRaftRequest{Header: &pb.RequestHeader{ID: id}, Put: r})
}

// FuzzDiffKeyValue sends arbitrary keys and values (NUL bytes, invalid
// UTF-8, runs of 0xff, empty values; keyLen and valueLen grow them, up to
// past the databases' key limit and past the request size limit) through
// every backend and etcd: puts of the key and of its neighbours key+"\x00"
// and key+"\xff", gets, ranges over the key's prefix (its end computed by
// clientv3.GetPrefixRangeEnd, "\x00" for keys of only 0xff bytes) and from
// the key on, deletes, and a watch over every key with prev_kv. Each answer
// and every watch event must be etcd's, so values round-trip exactly and
// keys sort bytewise. Where a database stores shorter keys than etcd (2048
// bytes on PostgreSQL and MySQL), a put of a longer key must fail with
// InvalidArgument naming the limit, and is not sent to etcd. A put whose
// size is within the one or two bytes by which etcd's and kvsql's request
// IDs differ in size, and so is too large for one of them only, is not
// sent: that is where the two members' limits legitimately differ.
func FuzzDiffKeyValue(f *testing.F) {
	f.Add([]byte("a"), []byte("v"), uint16(0), uint32(0))
	f.Add([]byte{}, []byte{}, uint16(0), uint32(0))
	f.Add([]byte("k\x00\xff"), []byte("\x00\xc3\x28\xff"), uint16(0), uint32(0))
	f.Add([]byte{0xff, 0xff}, []byte{}, uint16(0), uint32(0))
	f.Add([]byte("\xff"), []byte("x"), uint16(2047), uint32(100))
	f.Add([]byte("k"), []byte("v"), uint16(2048), uint32(0))
	f.Add([]byte("k"), []byte("v"), uint16(2049), uint32(0))
	f.Add([]byte("k/"), []byte("big"), uint16(0), uint32(fuzzMaxRequestBytes))
	// testdata/fuzz/FuzzDiffKeyValue/request-size-counts-the-raft-proposal:
	// a put a few bytes under the limit that etcd refuses, since it
	// measures the raft proposal (request plus header), which kvsql
	// accepted while it measured the request alone.
	maxKey := map[string]int{"postgres": postgres.MaxKeyBytes, "mysql": mysql.MaxKeyBytes}
	ds := fuzzDiffers(f, serverOptions{MaxRequestBytes: fuzzMaxRequestBytes})
	watches := map[string]*watchPair{}
	type ids struct{ etcd, kvsql uint64 }
	members := map[string]ids{}
	for name, d := range ds {
		e, k := d.memberIDs()
		members[name] = ids{e, k}
		wp := d.openWatch()
		wp.create(&pb.WatchCreateRequest{Key: []byte{0}, RangeEnd: []byte{0}, PrevKv: true, StartRevision: d.currentRev() + 1})
		watches[name] = wp
	}
	f.Fuzz(func(t *testing.T, key, value []byte, keyLen uint16, valueLen uint32) {
		key = grow(key, max(len(key), int(keyLen)%(postgres.MaxKeyBytes+256)))
		value = grow(value, max(len(value), int(valueLen)%(fuzzMaxRequestBytes+1024)))
		k := string(key)
		for name, d := range ds {
			d.t = t
			put := func(r *pb.PutRequest) {
				t.Helper()
				e, kv := proposalSize(r, members[name].etcd), proposalSize(r, members[name].kvsql)
				if (e > fuzzMaxRequestBytes) != (kv > fuzzMaxRequestBytes) {
					return
				}
				if limit := maxKey[name]; limit > 0 && len(r.Key) > limit {
					_, err := d.kv.kv.Put(d.ctx, r)
					if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), fmt.Sprint(limit)) {
						t.Errorf("put of a %d-byte key: %v; want InvalidArgument naming the limit, %d bytes", len(r.Key), err, limit)
					}
					return
				}
				d.put(r)
			}
			put(&pb.PutRequest{Key: key, Value: value, PrevKv: true})
			put(&pb.PutRequest{Key: bs(k + "\x00"), Value: bs("after")})
			put(&pb.PutRequest{Key: bs(k + "\xff"), Value: value[:min(len(value), 16)]})
			d.rng(&pb.RangeRequest{Key: key})
			d.rng(&pb.RangeRequest{Key: key, RangeEnd: bs(clientv3.GetPrefixRangeEnd(k))})
			d.rng(&pb.RangeRequest{Key: key, RangeEnd: []byte{0}, Limit: 3, KeysOnly: true})
			d.rng(&pb.RangeRequest{Key: []byte{0}, RangeEnd: []byte{0}, CountOnly: true})
			d.del(&pb.DeleteRangeRequest{Key: bs(k + "\x00"), PrevKv: true})
			d.del(&pb.DeleteRangeRequest{Key: key, RangeEnd: bs(clientv3.GetPrefixRangeEnd(k)), PrevKv: true})
			watches[name].compareEvents(fmt.Sprintf("watch after key %q", k))
			watches[name].forget()
		}
	})
}
