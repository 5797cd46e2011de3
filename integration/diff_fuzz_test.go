package integration

import (
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
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
