package snapshot

import (
	"encoding/binary"
	"fmt"

	bolt "go.etcd.io/bbolt"

	"github.com/kvsql/kvsql/backends"
)

// The auth buckets, in etcd's layout (etcd: server/storage/schema):
// "authEnabled" ({1} or {0}) and "authRevision" (8 bytes big-endian) in
// "auth", each user as an authpb.User under its name in "authUsers", each
// role as an authpb.Role under its name in "authRoles".
var (
	authEnabledKey  = []byte("authEnabled")
	authRevisionKey = []byte("authRevision")
	authOn          = []byte{1}
	authOff         = []byte{0}
)

// addAuth writes the auth state into a snapshot being built (Create made
// the buckets).
func addAuth(tx *bolt.Tx, s backends.AuthState) error {
	b := tx.Bucket(bucketAuth)
	enabled := authOff
	if s.Enabled {
		enabled = authOn
	}
	if err := b.Put(authEnabledKey, enabled); err != nil {
		return err
	}
	if err := b.Put(authRevisionKey, uint64Bytes(s.Revision)); err != nil {
		return err
	}
	users := tx.Bucket(bucketAuthUsers)
	for _, u := range s.Users {
		data, err := backends.MarshalAuth(u)
		if err != nil {
			return err
		}
		if err := users.Put(u.Name, data); err != nil {
			return err
		}
	}
	roles := tx.Bucket(bucketAuthRoles)
	for _, r := range s.Roles {
		data, err := backends.MarshalAuth(r)
		if err != nil {
			return err
		}
		if err := roles.Put(r.Name, data); err != nil {
			return err
		}
	}
	return nil
}

// readAuth reads a snapshot's auth buckets; ok is false when they hold
// nothing (etcd writes auth revision 1 and no flag while auth was never
// used, which is a new kvsql database's state as well).
func readAuth(tx *bolt.Tx) (s backends.AuthState, ok bool, err error) {
	s.Revision = 1
	if b := tx.Bucket(bucketAuth); b != nil {
		if v := b.Get(authEnabledKey); len(v) == 1 && v[0] == 1 {
			s.Enabled, ok = true, true
		}
		if v := b.Get(authRevisionKey); v != nil {
			if len(v) != 8 {
				return s, false, fmt.Errorf("auth revision of %d bytes, want 8", len(v))
			}
			s.Revision = binary.BigEndian.Uint64(v)
			ok = ok || s.Revision > 1
		}
	}
	if b := tx.Bucket(bucketAuthUsers); b != nil {
		if err := b.ForEach(func(_, v []byte) error {
			u, err := backends.UnmarshalUser(v)
			s.Users = append(s.Users, u)
			return err
		}); err != nil {
			return s, false, err
		}
	}
	if b := tx.Bucket(bucketAuthRoles); b != nil {
		if err := b.ForEach(func(_, v []byte) error {
			r, err := backends.UnmarshalRole(v)
			s.Roles = append(s.Roles, r)
			return err
		}); err != nil {
			return s, false, err
		}
	}
	return s, ok || len(s.Users) > 0 || len(s.Roles) > 0, nil
}
