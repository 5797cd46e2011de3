package kvserver

import (
	"bytes"
	"slices"
	"sync"

	"go.etcd.io/etcd/api/v3/authpb"
	"go.etcd.io/etcd/server/v3/auth"
	"google.golang.org/protobuf/proto"

	"github.com/kvsql/kvsql/backends"
)

// authMirror is an in-memory copy of the stored auth state, served to
// etcd's auth store (go.etcd.io/etcd/server/v3/auth) through its
// AuthBackend interface. That interface has no context and no errors (etcd
// reads its local bolt file), so it cannot reach the database itself: the
// database is read into a mirror, etcd's store works on the mirror, and
// what a change wrote to the mirror is then stored in the database (see
// authGate.change).
//
// Values in users and roles are never modified once stored: reads through
// ReadTx and GetUser/GetRole share them, while BatchTx (which etcd's store
// modifies in place before writing back, as it would a freshly decoded bolt
// value) hands out and stores copies.
type authMirror struct {
	mu      sync.RWMutex // guards every field; etcd's store takes it through ReadTx and BatchTx
	enabled bool
	rev     uint64
	users   map[string]*authpb.User
	roles   map[string]*authpb.Role
	// touchedUsers and touchedRoles name what BatchTx wrote or deleted.
	touchedUsers map[string]bool
	touchedRoles map[string]bool
}

var _ auth.AuthBackend = (*authMirror)(nil)

func newAuthMirror(s backends.AuthState) *authMirror {
	m := &authMirror{
		enabled:      s.Enabled,
		rev:          s.Revision,
		users:        make(map[string]*authpb.User, len(s.Users)),
		roles:        make(map[string]*authpb.Role, len(s.Roles)),
		touchedUsers: map[string]bool{},
		touchedRoles: map[string]bool{},
	}
	for _, u := range s.Users {
		m.users[string(u.Name)] = u
	}
	for _, r := range s.Roles {
		m.roles[string(r.Name)] = r
	}
	return m
}

// changes returns what BatchTx changed relative to base, the state the
// mirror was made from; nil if nothing changed.
func (m *authMirror) changes(base backends.AuthState) *backends.AuthWrite {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.enabled == base.Enabled && m.rev == base.Revision && len(m.touchedUsers) == 0 && len(m.touchedRoles) == 0 {
		return nil
	}
	w := &backends.AuthWrite{Enabled: m.enabled, Revision: m.rev}
	for _, name := range sortedKeys(m.touchedUsers) {
		if u, ok := m.users[name]; ok {
			w.PutUsers = append(w.PutUsers, u)
		} else {
			w.DeleteUsers = append(w.DeleteUsers, []byte(name))
		}
	}
	for _, name := range sortedKeys(m.touchedRoles) {
		if r, ok := m.roles[name]; ok {
			w.PutRoles = append(w.PutRoles, r)
		} else {
			w.DeleteRoles = append(w.DeleteRoles, []byte(name))
		}
	}
	return w
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func (m *authMirror) CreateAuthBuckets() {}
func (m *authMirror) ForceCommit()       {}

func (m *authMirror) ReadTx() auth.AuthReadTx   { return mirrorReadTx{m} }
func (m *authMirror) BatchTx() auth.AuthBatchTx { return mirrorBatchTx{m} }

func (m *authMirror) GetUser(name string) *authpb.User {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.users[name]
}

func (m *authMirror) GetAllUsers() []*authpb.User {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.allUsers()
}

func (m *authMirror) GetRole(name string) *authpb.Role {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.roles[name]
}

func (m *authMirror) GetAllRoles() []*authpb.Role {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.allRoles()
}

// allUsers lists the users in name order, as etcd's bucket does.
func (m *authMirror) allUsers() []*authpb.User {
	out := make([]*authpb.User, 0, len(m.users))
	for _, u := range m.users {
		out = append(out, u)
	}
	slices.SortFunc(out, func(a, b *authpb.User) int { return bytes.Compare(a.Name, b.Name) })
	return out
}

func (m *authMirror) allRoles() []*authpb.Role {
	out := make([]*authpb.Role, 0, len(m.roles))
	for _, r := range m.roles {
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b *authpb.Role) int { return bytes.Compare(a.Name, b.Name) })
	return out
}

// mirrorReadTx reads shared values under the read lock.
type mirrorReadTx struct{ m *authMirror }

func (t mirrorReadTx) RLock()                                 { t.m.mu.RLock() }
func (t mirrorReadTx) RUnlock()                               { t.m.mu.RUnlock() }
func (t mirrorReadTx) UnsafeReadAuthEnabled() bool            { return t.m.enabled }
func (t mirrorReadTx) UnsafeReadAuthRevision() uint64         { return t.m.rev }
func (t mirrorReadTx) UnsafeGetUser(name string) *authpb.User { return t.m.users[name] }
func (t mirrorReadTx) UnsafeGetRole(name string) *authpb.Role { return t.m.roles[name] }
func (t mirrorReadTx) UnsafeGetAllUsers() []*authpb.User      { return t.m.allUsers() }
func (t mirrorReadTx) UnsafeGetAllRoles() []*authpb.Role      { return t.m.allRoles() }

// mirrorBatchTx reads and writes copies under the write lock.
type mirrorBatchTx struct{ m *authMirror }

func (t mirrorBatchTx) Lock()                          { t.m.mu.Lock() }
func (t mirrorBatchTx) Unlock()                        { t.m.mu.Unlock() }
func (t mirrorBatchTx) UnsafeReadAuthEnabled() bool    { return t.m.enabled }
func (t mirrorBatchTx) UnsafeReadAuthRevision() uint64 { return t.m.rev }

func (t mirrorBatchTx) UnsafeGetUser(name string) *authpb.User {
	if u, ok := t.m.users[name]; ok {
		return proto.Clone(u).(*authpb.User)
	}
	return nil
}

func (t mirrorBatchTx) UnsafeGetRole(name string) *authpb.Role {
	if r, ok := t.m.roles[name]; ok {
		return proto.Clone(r).(*authpb.Role)
	}
	return nil
}

func (t mirrorBatchTx) UnsafeGetAllUsers() []*authpb.User {
	us := t.m.allUsers()
	for i, u := range us {
		us[i] = proto.Clone(u).(*authpb.User)
	}
	return us
}

func (t mirrorBatchTx) UnsafeGetAllRoles() []*authpb.Role {
	rs := t.m.allRoles()
	for i, r := range rs {
		rs[i] = proto.Clone(r).(*authpb.Role)
	}
	return rs
}

func (t mirrorBatchTx) UnsafeSaveAuthEnabled(enabled bool) { t.m.enabled = enabled }
func (t mirrorBatchTx) UnsafeSaveAuthRevision(rev uint64)  { t.m.rev = rev }

func (t mirrorBatchTx) UnsafePutUser(u *authpb.User) {
	name := string(u.Name)
	t.m.users[name] = proto.Clone(u).(*authpb.User)
	t.m.touchedUsers[name] = true
}

func (t mirrorBatchTx) UnsafeDeleteUser(name string) {
	delete(t.m.users, name)
	t.m.touchedUsers[name] = true
}

func (t mirrorBatchTx) UnsafePutRole(r *authpb.Role) {
	name := string(r.Name)
	t.m.roles[name] = proto.Clone(r).(*authpb.Role)
	t.m.touchedRoles[name] = true
}

func (t mirrorBatchTx) UnsafeDeleteRole(name string) {
	delete(t.m.roles, name)
	t.m.touchedRoles[name] = true
}
