package integration

import (
	"bytes"
	"fmt"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
)

// Paginated lists, as kube-apiserver reads them (each page from just after
// the previous page's last key, at the first page's revision or at the
// latest), answer etcd's count on every page, also when keys are created
// and deleted between pages, before and after the page boundary (kvsql
// carries a list's count from page to page instead of counting again).
func TestDiffPaginatedCounts(t *testing.T) {
	t.Parallel()
	runDiff(t, serverOptions{}, func(d *differ) {
		for i := range 60 {
			d.ok(d.put(putReq(fmt.Sprintf("p/%02d", i), "v")))
		}
		end := bs(prefixEnd("p/"))
		// list pages through p/, every page at the first page's revision
		// if fixed, else at the latest; write, if set, runs after every
		// page.
		list := func(fixed bool, write func(page int, last []byte)) {
			key := bs("p/")
			var rev int64
			for page := 0; ; page++ {
				resp, err := d.rng(&pb.RangeRequest{Key: key, RangeEnd: end, Limit: 7, Revision: rev})
				if err != nil || !resp.More {
					return
				}
				if fixed && rev == 0 {
					rev = resp.Header.Revision
				}
				last := resp.Kvs[len(resp.Kvs)-1].Key
				key = append(bytes.Clone(last), 0)
				if write != nil {
					write(page, last)
				}
			}
		}
		list(true, nil)
		list(false, nil)
		// Writes between pages: a key created just after the page's last
		// key (inside the next page), one deleted further on, one created
		// before the page (already passed).
		churn := func(page int, last []byte) {
			d.ok(d.put(putReq(string(last)+"-new", "v")))
			d.ok(d.del(&pb.DeleteRangeRequest{Key: bs(fmt.Sprintf("p/%02d", 59-page))}))
			d.ok(d.put(putReq(fmt.Sprintf("p/%02d-early", page), "v")))
		}
		list(true, churn)
		list(false, churn)
		list(true, nil)
		list(false, nil)
		// keys only and from-key ranges.
		resp, _ := d.rng(&pb.RangeRequest{Key: bs("p/"), RangeEnd: bs("\x00"), Limit: 5, KeysOnly: true})
		if resp != nil && len(resp.Kvs) == 5 {
			d.rng(&pb.RangeRequest{Key: append(bytes.Clone(resp.Kvs[4].Key), 0), RangeEnd: bs("\x00"), Limit: 5, Revision: resp.Header.Revision})
		}
	})
}
