package integration

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
)

// TestMoveLeader: three instances on one database; `etcdctl move-leader`
// through all three endpoints hands leadership from A to B: afterwards
// every instance's Status names B, B has taken over lease expiry, and C,
// which also tries for the lock every 500 ms, never took it in between.
// Moving to a member that does not exist is refused with etcd's "bad
// leader transferee", and a follower refuses with etcd's "not leader".
func TestMoveLeader(t *testing.T) {
	t.Parallel()
	for _, se := range sharedEndpoints {
		t.Run(se.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			ep := se.endpoint(t)
			a := startKVSQLProc(t, "--endpoint="+ep, "--name=a")
			pollUntil(t, 20*time.Second, "A takes the leader lock", func() bool { return se.leaderHeld(t, ep) })
			b := startKVSQLProc(t, "--endpoint="+ep, "--name=b")
			c := startKVSQLProc(t, "--endpoint="+ep, "--name=c")
			procs := map[string]*kvsqlProc{"a": a, "b": b, "c": c}
			ca := a.client(t)
			ids := map[string]uint64{}
			pollUntil(t, 20*time.Second, "MemberList lists the three instances", func() bool {
				ml, err := ca.MemberList(ctx)
				if err != nil {
					t.Fatal(err)
				}
				for _, m := range ml.Members {
					ids[m.Name] = m.ID
				}
				return len(ml.Members) == 3
			})
			leaderIs := func(name string) func() bool {
				return func() bool {
					for _, p := range procs {
						st, err := p.client(t).Status(ctx, p.Addr)
						if err != nil || st.Leader != ids[name] {
							return false
						}
					}
					return true
				}
			}
			pollUntil(t, 20*time.Second, "every instance names A as leader", leaderIs("a"))

			all := strings.Join([]string{a.Addr, b.Addr, c.Addr}, ",")
			ctl := newCtl(t, all)
			out := ctl.ok(t, "move-leader", fmt.Sprintf("%x", ids["b"]))
			if !strings.Contains(out, "Leadership transferred") {
				t.Errorf("etcdctl move-leader: %q", out)
			}
			pollUntil(t, 20*time.Second, "every instance names B as leader", leaderIs("b"))
			if !strings.Contains(b.log.String(), "took over lease expiry") {
				t.Errorf("B's log does not show it took over lease expiry:\n%s", b.log.String())
			}
			if strings.Contains(c.log.String(), "took over lease expiry") {
				t.Errorf("C took the leader lock during the move to B:\n%s", c.log.String())
			}

			r := ctl.run(t, "", "move-leader", "1234abcd")
			if r.Code == 0 || !strings.Contains(r.Err, "bad leader transferee") {
				t.Errorf("move-leader to a non-member: exit %d, %q; want etcd's bad leader transferee", r.Code, r.Err)
			}
			_, err := c.client(t).MoveLeader(ctx, ids["a"])
			if !errors.Is(rpctypes.Error(err), rpctypes.ErrNotLeader) {
				t.Errorf("MoveLeader through follower C: %v, want %v", err, rpctypes.ErrNotLeader)
			}
			// And back to A, through B's endpoint alone.
			if _, err := b.client(t).MoveLeader(ctx, ids["a"]); err != nil {
				t.Fatalf("MoveLeader B -> A: %v", err)
			}
			pollUntil(t, 20*time.Second, "every instance names A as leader again", leaderIs("a"))
			if strings.Contains(c.log.String(), "took over lease expiry") {
				t.Errorf("C took the leader lock during the move back to A")
			}
			// Writes through every instance still work (B forwards to A again).
			for name, p := range procs {
				if _, err := p.client(t).Put(ctx, "after-move/"+name, "x"); err != nil {
					t.Errorf("put through %s after the moves: %v", name, err)
				}
			}
		})
	}
}

// TestMoveLeaderSingle: on the embedded SQLite default the one instance
// leads: moving leadership to itself succeeds and to any other member is
// etcd's "bad leader transferee".
func TestMoveLeaderSingle(t *testing.T) {
	t.Parallel()
	c := newClient(t, startSQLite(t, serverOptions{}))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := c.Status(ctx, c.Endpoints()[0])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.MoveLeader(ctx, st.Header.MemberId); err != nil {
		t.Errorf("MoveLeader to itself: %v", err)
	}
	if _, err := c.MoveLeader(ctx, st.Header.MemberId+1); !errors.Is(rpctypes.Error(err), rpctypes.ErrBadLeaderTransferee) {
		t.Errorf("MoveLeader to another member: %v, want %v", err, rpctypes.ErrBadLeaderTransferee)
	}
}
