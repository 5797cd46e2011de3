package backendtest

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/protobuf/proto"

	"github.com/kvsql/kvsql/backends"
)

func authStore(t *testing.T, be backends.Backend) backends.AuthStore {
	t.Helper()
	st, ok := be.(backends.AuthStore)
	if !ok {
		t.Fatalf("%T does not implement backends.AuthStore", be)
	}
	return st
}

// runAuthState: a new database has auth disabled at revision 1 and no users
// or roles; UpdateAuth stores users, roles, the flag and the revision,
// which LoadAuth returns in name order; a failing update changes nothing.
func runAuthState(t *testing.T, be backends.Backend) {
	ctx := context.Background()
	st := authStore(t, be)
	enabled, rev, err := st.AuthMeta(ctx)
	if err != nil || enabled || rev != 1 {
		t.Fatalf("AuthMeta of a new database = %v, %d, %v; want false, 1", enabled, rev, err)
	}
	s, err := st.LoadAuth(ctx)
	if err != nil || s.Enabled || s.Revision != 1 || len(s.Users) != 0 || len(s.Roles) != 0 {
		t.Fatalf("LoadAuth of a new database = %+v, %v", s, err)
	}
	bob := &authpb.User{Name: []byte("bob"), Password: []byte("hash"), Roles: []string{"r1"}}
	alice := &authpb.User{Name: []byte("alice"), Options: &authpb.UserAddOptions{NoPassword: true}}
	r1 := &authpb.Role{Name: []byte("r1"), KeyPermission: []*authpb.Permission{{PermType: authpb.READWRITE, Key: []byte("/t1/"), RangeEnd: []byte("/t10")}}}
	root := &authpb.Role{Name: []byte("root")}
	err = st.UpdateAuth(ctx, func(s backends.AuthState) (*backends.AuthWrite, error) {
		return &backends.AuthWrite{Enabled: true, Revision: s.Revision + 3, PutUsers: []*authpb.User{bob, alice}, PutRoles: []*authpb.Role{root, r1}}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	s, err = st.LoadAuth(ctx)
	if err != nil || !s.Enabled || s.Revision != 4 || len(s.Users) != 2 || len(s.Roles) != 2 {
		t.Fatalf("LoadAuth = %+v, %v", s, err)
	}
	if !proto.Equal(s.Users[0], alice) || !proto.Equal(s.Users[1], bob) || !proto.Equal(s.Roles[0], r1) || !proto.Equal(s.Roles[1], root) {
		t.Fatalf("LoadAuth users %v roles %v: want alice, bob and r1, root as stored", s.Users, s.Roles)
	}
	if enabled, rev, err := st.AuthMeta(ctx); err != nil || !enabled || rev != 4 {
		t.Fatalf("AuthMeta = %v, %d, %v; want true, 4", enabled, rev, err)
	}

	// A failing update writes nothing.
	boom := errors.New("boom")
	err = st.UpdateAuth(ctx, func(s backends.AuthState) (*backends.AuthWrite, error) {
		if s.Revision != 4 || len(s.Users) != 2 {
			t.Errorf("UpdateAuth sees %+v", s)
		}
		return nil, boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("UpdateAuth = %v, want the callback's error", err)
	}
	// Replace bob, delete alice and r1.
	bob2 := &authpb.User{Name: []byte("bob"), Password: []byte("hash2")}
	err = st.UpdateAuth(ctx, func(s backends.AuthState) (*backends.AuthWrite, error) {
		return &backends.AuthWrite{Enabled: false, Revision: 5, PutUsers: []*authpb.User{bob2}, DeleteUsers: [][]byte{[]byte("alice")}, DeleteRoles: [][]byte{[]byte("r1")}}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	s, err = st.LoadAuth(ctx)
	if err != nil || s.Enabled || s.Revision != 5 || len(s.Users) != 1 || !proto.Equal(s.Users[0], bob2) || len(s.Roles) != 1 || string(s.Roles[0].Name) != "root" {
		t.Fatalf("LoadAuth after replace and deletes = %+v, %v", s, err)
	}

	// ReplaceAuth (a snapshot restore) leaves exactly the given state.
	want := backends.AuthState{Enabled: true, Revision: 42, Users: []*authpb.User{alice}, Roles: []*authpb.Role{r1}}
	if err := backends.ReplaceAuth(ctx, st, want); err != nil {
		t.Fatal(err)
	}
	s, err = st.LoadAuth(ctx)
	if err != nil || !s.Enabled || s.Revision != 42 || len(s.Users) != 1 || !proto.Equal(s.Users[0], alice) || len(s.Roles) != 1 || !proto.Equal(s.Roles[0], r1) {
		t.Fatalf("LoadAuth after ReplaceAuth = %+v, %v", s, err)
	}
}

// runAuthTokens: a token is stored only at the revision the caller read,
// is found until it expires or its user's tokens are dropped, and a touch
// moves its expiry.
func runAuthTokens(t *testing.T, be backends.Backend) {
	ctx := context.Background()
	st := authStore(t, be)
	if err := st.AddAuthToken(ctx, "tokA.1", "bob", time.Hour, 2); !errors.Is(err, backends.ErrAuthChanged) {
		t.Fatalf("AddAuthToken at a stale revision = %v, want ErrAuthChanged", err)
	}
	for tok, user := range map[string]string{"tokA.1": "bob", "tokB.1": "bob", "tokC.1": "carol"} {
		if err := st.AddAuthToken(ctx, tok, user, time.Hour, 1); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.AddAuthToken(ctx, "old.1", "carol", -time.Second, 1); err != nil {
		t.Fatal(err)
	}
	if u, err := st.AuthTokenUser(ctx, "tokA.1"); err != nil || u != "bob" {
		t.Fatalf("AuthTokenUser(tokA.1) = %q, %v; want bob", u, err)
	}
	for _, tok := range []string{"old.1", "nope.1"} {
		if _, err := st.AuthTokenUser(ctx, tok); !errors.Is(err, backends.ErrTokenNotFound) {
			t.Fatalf("AuthTokenUser(%s) = %v, want ErrTokenNotFound", tok, err)
		}
	}
	if n, err := st.PurgeAuthTokens(ctx); err != nil || n != 1 {
		t.Fatalf("PurgeAuthTokens = %d, %v; want 1 (the expired token)", n, err)
	}
	// A touch with a negative TTL expires a token; one with a positive
	// TTL keeps it.
	if err := st.TouchAuthTokens(ctx, []string{"tokB.1", "gone.1"}, -time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := st.AuthTokenUser(ctx, "tokB.1"); !errors.Is(err, backends.ErrTokenNotFound) {
		t.Fatalf("AuthTokenUser(tokB.1) after an expiring touch = %v, want ErrTokenNotFound", err)
	}
	if err := st.TouchAuthTokens(ctx, []string{"tokB.1"}, time.Hour); err != nil {
		t.Fatal(err)
	}
	if u, err := st.AuthTokenUser(ctx, "tokB.1"); err != nil || u != "bob" {
		t.Fatalf("AuthTokenUser(tokB.1) after a touch = %q, %v", u, err)
	}
	// Dropping bob's tokens leaves carol's.
	err := st.UpdateAuth(ctx, func(s backends.AuthState) (*backends.AuthWrite, error) {
		return &backends.AuthWrite{Revision: s.Revision + 1, DropTokensOf: []string{"bob"}}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for tok, want := range map[string]bool{"tokA.1": false, "tokB.1": false, "tokC.1": true} {
		_, err := st.AuthTokenUser(ctx, tok)
		if found := err == nil; found != want || (err != nil && !errors.Is(err, backends.ErrTokenNotFound)) {
			t.Fatalf("after dropping bob's tokens, AuthTokenUser(%s) = %v", tok, err)
		}
	}
	err = st.UpdateAuth(ctx, func(s backends.AuthState) (*backends.AuthWrite, error) {
		return &backends.AuthWrite{Revision: s.Revision + 1, DropAllTokens: true}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.AuthTokenUser(ctx, "tokC.1"); !errors.Is(err, backends.ErrTokenNotFound) {
		t.Fatalf("after dropping every token, AuthTokenUser(tokC.1) = %v", err)
	}
	// The cluster secret is created once.
	s1, err := st.ClusterSecret(ctx)
	if err != nil || len(s1) < 16 {
		t.Fatalf("ClusterSecret = %x, %v", s1, err)
	}
	s2, err := st.ClusterSecret(ctx)
	if err != nil || string(s1) != string(s2) {
		t.Fatalf("ClusterSecret again = %x, %v; want %x", s2, err, s1)
	}
}

// runAuthSerialised: concurrent read-modify-write updates never lose one:
// UpdateAuth holds the auth lock from its read to its commit.
func runAuthSerialised(t *testing.T, be backends.Backend) {
	ctx := context.Background()
	st := authStore(t, be)
	const writers, each = 4, 5
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for range writers {
		wg.Go(func() {
			for range each {
				err := st.UpdateAuth(ctx, func(s backends.AuthState) (*backends.AuthWrite, error) {
					return &backends.AuthWrite{Revision: s.Revision + 1}, nil
				})
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if _, rev, err := st.AuthMeta(ctx); err != nil || rev != 1+writers*each {
		t.Fatalf("revision after %d increments = %d, %v", writers*each, rev, err)
	}
}

// runAuthGuard: a write permitted at an auth revision
// (backends.WithAuthRevision) applies while that is the stored revision
// and fails with ErrAuthOldRevision, writing nothing, once an auth change
// moved it; writes without one, or at the new revision, in the same batch,
// are not affected.
func runAuthGuard(t *testing.T, be backends.Backend) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st := authStore(t, be)
	_, rev, err := st.AuthMeta(ctx)
	if err != nil {
		t.Fatal(err)
	}
	at := func(rev uint64) context.Context { return backends.WithAuthRevision(ctx, rev) }
	if _, err := be.Txn(at(rev), put("/g/a", "1")); err != nil {
		t.Fatalf("a write checked at the stored auth revision %d: %v", rev, err)
	}
	if err := st.UpdateAuth(ctx, func(s backends.AuthState) (*backends.AuthWrite, error) {
		return &backends.AuthWrite{Enabled: s.Enabled, Revision: s.Revision + 1}, nil
	}); err != nil {
		t.Fatal(err)
	}
	cur, _, err := be.Revisions(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Alone and in a batch with others: only the old-revision write fails.
	var wg sync.WaitGroup
	errs := make([]error, 3)
	for i, ctx := range []context.Context{at(rev), at(rev + 1), ctx} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = be.Txn(ctx, put("/g/c"+string(rune('0'+i)), "1"))
		}()
	}
	wg.Wait()
	if !errors.Is(errs[0], backends.ErrAuthOldRevision) {
		t.Fatalf("a write checked at auth revision %d after a change to %d: %v, want ErrAuthOldRevision", rev, rev+1, errs[0])
	}
	if errs[1] != nil || errs[2] != nil {
		t.Fatalf("a write at the new auth revision: %v; one without: %v", errs[1], errs[2])
	}
	resp, err := be.Range(ctx, &pb.RangeRequest{Key: []byte("/g/c0")})
	if err != nil || len(resp.Kvs) != 0 {
		t.Fatalf("the refused write is stored: %v, %v", resp.GetKvs(), err)
	}
	if after, _, err := be.Revisions(ctx); err != nil || after != cur+2 {
		t.Fatalf("revision after the two applied writes = %d, %v; want %d", after, err, cur+2)
	}
}
