package integration

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// alarm sends an AlarmRequest to both servers, each naming itself as the
// member, and compares the answers with member IDs left out.
func (d *differ) alarm(action pb.AlarmRequest_AlarmAction, a pb.AlarmType) {
	d.t.Helper()
	do(d, fmt.Sprintf("Alarm %s %s", action, a), func(ctx context.Context, tg target) (*pb.AlarmResponse, error) {
		st, err := tg.maint.Status(ctx, &pb.StatusRequest{})
		if err != nil {
			return nil, err
		}
		resp, err := tg.maint.Alarm(ctx, &pb.AlarmRequest{Action: action, MemberID: st.Header.MemberId, Alarm: a})
		if resp != nil {
			for _, m := range resp.Alarms {
				if m.MemberID != st.Header.MemberId {
					d.t.Errorf("%s: alarm of member %x, want the server's own %x", tg.name, m.MemberID, st.Header.MemberId)
				}
				m.MemberID = 0
			}
		}
		return resp, err
	})
}

// alarmedOps runs, on both servers, every kind of request an alarm may
// refuse or let through.
func alarmedOps(d *differ, lease int64) {
	d.t.Helper()
	d.put(putReq("k/new", "v"))
	d.rng(&pb.RangeRequest{Key: bs("k/"), RangeEnd: bs(prefixEnd("k/"))})
	d.txn(&pb.TxnRequest{Success: []*pb.RequestOp{opPut(putReq("k/t", "v"))}})
	d.txn(&pb.TxnRequest{Compare: []*pb.Compare{cmpValue("k/a", "", pb.Compare_EQUAL, "nope")},
		Failure: []*pb.RequestOp{opPut(putReq("k/f", "v"))}})
	// etcd charges only a txn's top-level puts against the quota.
	d.txn(&pb.TxnRequest{Success: []*pb.RequestOp{opTxn(&pb.TxnRequest{Success: []*pb.RequestOp{opPut(putReq("k/nested", "v"))}})}})
	d.txn(&pb.TxnRequest{Success: []*pb.RequestOp{opRange(&pb.RangeRequest{Key: bs("k/a")})}})
	d.txn(&pb.TxnRequest{Success: []*pb.RequestOp{opDel(&pb.DeleteRangeRequest{Key: bs("k/b")})}})
	d.del(&pb.DeleteRangeRequest{Key: bs("k/c")})
	d.leaseGrant(0x77, 60)
	d.leaseRevoke(lease)
	d.compact(d.currentRev())
}

// TestDiffAlarms: with a NOSPACE or CORRUPT alarm raised through
// Maintenance.Alarm, kvsql refuses and lets through exactly the requests
// etcd does, with etcd's errors; raising a raised alarm, raising NONE and
// disarming answer as etcd's do, and a disarmed server writes again.
func TestDiffAlarms(t *testing.T) {
	t.Parallel()
	runDiff(t, serverOptions{}, func(d *differ) {
		for i, a := range []pb.AlarmType{pb.AlarmType_NOSPACE, pb.AlarmType_CORRUPT} {
			lease := int64(0x100 + i)
			d.leaseGrant(lease, 60)
			for _, k := range []string{"k/a", "k/b", "k/c"} {
				d.put(putReq(k, "v"))
			}
			d.alarm(pb.AlarmRequest_ACTIVATE, a)
			d.alarm(pb.AlarmRequest_GET, pb.AlarmType_NONE)
			d.alarm(pb.AlarmRequest_ACTIVATE, a) // already raised: answered with it all the same
			alarmedOps(d, lease)
			d.alarm(pb.AlarmRequest_DEACTIVATE, a)
			d.alarm(pb.AlarmRequest_DEACTIVATE, a) // already clear
			d.alarm(pb.AlarmRequest_GET, a)
			d.put(putReq("k/after", "v"))
		}
		d.alarm(pb.AlarmRequest_ACTIVATE, pb.AlarmType_NONE)
		d.alarm(pb.AlarmRequest_GET, pb.AlarmType_NONE)
	})
}

// quotaProc starts kvsql with a small quota (on SQLite, or on endpoint).
func quotaProc(t *testing.T, endpoint string, quota int64, extra ...string) *kvsqlProc {
	args := append([]string{fmt.Sprintf("--quota-backend-bytes=%d", quota)}, extra...)
	if endpoint != "" {
		args = append(args, "--endpoint="+endpoint)
	}
	return startKVSQLProc(t, args...)
}

// fillUntilNoSpace puts 64 KiB random (incompressible) values until kvsql
// refuses one with etcd's NOSPACE error, and returns how many it took.
func fillUntilNoSpace(t *testing.T, ctx context.Context, c *clientv3.Client) int {
	t.Helper()
	value := make([]byte, 64<<10)
	for i := 0; i < 2000; i++ {
		_, _ = rand.Read(value)
		_, err := c.Put(ctx, fmt.Sprintf("fill/%05d", i), string(value))
		if err == nil {
			continue
		}
		if !isNoSpace(err) {
			t.Fatalf("put %d: %v, want etcd's %v", i, err, rpctypes.ErrGRPCNoSpace)
		}
		return i
	}
	t.Fatal("no NOSPACE after 2000 puts of 64 KiB")
	return 0
}

// isNoSpace reports whether err is etcd's NOSPACE error as clientv3
// returns it.
func isNoSpace(err error) bool {
	return err != nil && errors.Is(rpctypes.Error(err), rpctypes.ErrNoSpace)
}

// checkNoSpaceState: with NOSPACE raised, puts and lease grants fail with
// etcd's error, while reads, deletes and compaction work, etcdctl lists
// the alarm, and Status reports it.
func checkNoSpaceState(t *testing.T, ctx context.Context, c *clientv3.Client, ctl ctl) {
	t.Helper()
	if _, err := c.Put(ctx, "fill/more", "x"); !isNoSpace(err) {
		t.Errorf("put under NOSPACE: %v, want %v", err, rpctypes.ErrGRPCNoSpace)
	}
	if _, err := c.Grant(ctx, 60); !isNoSpace(err) {
		t.Errorf("lease grant under NOSPACE: %v, want %v", err, rpctypes.ErrGRPCNoSpace)
	}
	if _, err := c.Get(ctx, "fill/", clientv3.WithPrefix(), clientv3.WithCountOnly()); err != nil {
		t.Errorf("range under NOSPACE: %v", err)
	}
	alarms, err := c.AlarmList(ctx)
	if err != nil || len(alarms.Alarms) == 0 || alarms.Alarms[0].Alarm != pb.AlarmType_NOSPACE {
		t.Errorf("AlarmList: %v %v, want a NOSPACE alarm", alarms, err)
	}
	if out := ctl.ok(t, "alarm", "list"); !strings.Contains(out, "alarm:NOSPACE") {
		t.Errorf("etcdctl alarm list: %q, want alarm:NOSPACE", out)
	}
	st, err := c.Status(ctx, c.Endpoints()[0])
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(st.Errors, " "), "alarm:NOSPACE") {
		t.Errorf("Status errors %q: want the NOSPACE alarm, as etcd lists it", st.Errors)
	}
}

// freeAndDisarm deletes everything, compacts, defragments and disarms
// through etcdctl, as etcd's runbook says, and checks writes work again.
func freeAndDisarm(t *testing.T, ctx context.Context, c *clientv3.Client, ctl ctl) {
	t.Helper()
	del, err := c.Delete(ctx, "fill/", clientv3.WithPrefix())
	if err != nil {
		t.Fatalf("delete under NOSPACE: %v", err)
	}
	if _, err := c.Compact(ctx, del.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		t.Fatalf("compact under NOSPACE: %v", err)
	}
	ctl.ok(t, "defrag")
	ctl.ok(t, "alarm", "disarm")
	if out := ctl.ok(t, "alarm", "list"); strings.Contains(out, "NOSPACE") {
		t.Errorf("etcdctl alarm list after disarm: %q", out)
	}
}

// TestQuotaNoSpace: on every backend, with --quota-backend-bytes set,
// writes fill the database until a put is refused with etcd's "database
// space exceeded" and the NOSPACE alarm is raised; then only what etcd
// allows works, and after deleting, compacting, defragmenting and
// `etcdctl alarm disarm` writes work again.
func TestQuotaNoSpace(t *testing.T) {
	t.Parallel()
	type tc struct {
		name     string
		endpoint func(t testing.TB) string
	}
	all := []tc{{"sqlite", func(testing.TB) string { return "" }}}
	for _, se := range sharedEndpoints {
		all = append(all, tc{se.name, se.endpoint})
	}
	for _, b := range all {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			ep := b.endpoint(t)
			base := startKVSQLProc(t, endpointArgs(ep)...)
			st, err := base.client(t).Status(ctx, base.Addr)
			if err != nil {
				t.Fatal(err)
			}
			base.kill()
			quota := st.DbSizeInUse + 4<<20
			p := quotaProc(t, ep, quota)
			c := p.client(t)
			ctl := newCtl(t, p.Addr)
			n := fillUntilNoSpace(t, ctx, c)
			t.Logf("quota %d (empty database in use %d): NOSPACE after %d puts of 64 KiB", quota, st.DbSizeInUse, n)
			if n == 0 {
				t.Fatal("the first put was refused")
			}
			checkNoSpaceState(t, ctx, c, ctl)
			freeAndDisarm(t, ctx, c, ctl)
			if _, err := c.Put(ctx, "after", "disarm"); err != nil {
				t.Fatalf("put after disarm: %v", err)
			}
		})
	}
}

func endpointArgs(ep string) []string {
	if ep == "" {
		return nil
	}
	return []string{"--endpoint=" + ep}
}

// TestQuotaNoSpaceTwoInstances: the NOSPACE alarm lives in the database:
// raised through instance A, instance B refuses puts too, and a disarm
// through B lets A write again.
func TestQuotaNoSpaceTwoInstances(t *testing.T) {
	t.Parallel()
	for _, se := range sharedEndpoints {
		t.Run(se.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			ep := se.endpoint(t)
			a := quotaProc(t, ep, 0, "--name=a")
			b := quotaProc(t, ep, 0, "--name=b")
			ca, cb := a.client(t), b.client(t)
			if _, err := ca.Put(ctx, "k", "v"); err != nil {
				t.Fatal(err)
			}
			st, err := ca.Status(ctx, a.Addr)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := pb.NewMaintenanceClient(ca.ActiveConnection()).Alarm(ctx,
				&pb.AlarmRequest{Action: pb.AlarmRequest_ACTIVATE, MemberID: st.Header.MemberId, Alarm: pb.AlarmType_NOSPACE}); err != nil {
				t.Fatal(err)
			}
			if _, err := ca.Put(ctx, "k", "v"); !isNoSpace(err) {
				t.Fatalf("put through A after raising NOSPACE there: %v", err)
			}
			// Lease grants are not forwarded to the leader (A): B refuses
			// them from its own copy of the alarms, read every few seconds.
			pollUntil(t, 20*time.Second, "B refuses lease grants under A's alarm", func() bool {
				_, err := cb.Grant(ctx, 60)
				return isNoSpace(err)
			})
			if _, err := cb.Delete(ctx, "k"); err != nil {
				t.Errorf("delete through B under NOSPACE: %v", err)
			}
			checkNoSpaceState(t, ctx, cb, newCtl(t, b.Addr))
			newCtl(t, b.Addr).ok(t, "alarm", "disarm")
			pollUntil(t, 20*time.Second, "A writes again after the disarm through B", func() bool {
				_, err := ca.Put(ctx, "k", "v")
				return err == nil
			})
		})
	}
}
