// Package apiserver runs a real kube-apiserver (watch cache on, default
// feature gates) on kvsql and drives it with kubectl and client-go: one
// apiserver on SQLite, and an HA pair — two apiservers, each on its own
// kvsql instance, both instances on one PostgreSQL or one MariaDB — where
// every write goes through apiserver A and every read and watch that checks
// it goes through apiserver B.
package apiserver

import (
	"testing"

	"github.com/kvsql/kvsql/internal/testdb"
)

// apiserverFlags are the flags every apiserver of these tests starts with:
// Events live 5 s (so their lease expiry is observable) and the
// apiserver's compactor is off until the compaction scenario turns it on.
var apiserverFlags = []string{"--event-ttl=5s", "--etcd-compaction-interval=0"}

// compactingFlags are apiserverFlags with the compactor running every 2 s.
var compactingFlags = []string{"--event-ttl=5s", "--etcd-compaction-interval=2s"}

func TestKubeAPIServer(t *testing.T) {
	bin := kubeBinaries(t)
	for _, tc := range []struct {
		name     string
		ha       bool
		endpoint func(testing.TB) string
	}{
		{"sqlite", false, func(testing.TB) string { return "" }},
		{"postgres-ha", true, testdb.FreshPostgresURL},
		{"mariadb-ha", true, testdb.FreshMySQLEndpoint},
	} {
		t.Run(tc.name, func(t *testing.T) {
			endpoint := tc.endpoint(t)
			saKey := newServiceAccountKey(t, t.TempDir())
			k1 := startKVSQL(t, "kvsql-1", endpoint)
			c := &cluster{name: tc.name, etcd: k1.client(t)}
			c.a = newAPIServer(t, bin, "a", k1.url, saKey, apiserverFlags...)
			c.b = c.a
			if tc.ha {
				k2 := startKVSQL(t, "kvsql-2", endpoint)
				c.b = newAPIServer(t, bin, "b", k2.url, saKey, apiserverFlags...)
			}
			c.run(t)
		})
	}
}
