// Package apiserver runs a real kube-apiserver (watch cache on, default
// feature gates) on kvsql and drives it with kubectl and client-go: one
// apiserver on etcd (the reference), one on SQLite, and an HA pair — two apiservers, each on its own
// kvsql instance, both instances on one PostgreSQL or one MariaDB — where
// every write goes through apiserver A and every read and watch that checks
// it goes through apiserver B.
package apiserver

import (
	"testing"

	"github.com/kvsql/kvsql/integration/k8s/etcdtest"
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
		name string
		// stores starts the etcd-API servers, one per apiserver, and
		// returns their client URLs.
		stores func(t *testing.T) []string
	}{
		// etcd itself, as the reference the scenarios are checked on.
		{"etcd", func(t *testing.T) []string { return []string{etcdtest.Start(t, 0)} }},
		{"sqlite", func(t *testing.T) []string { return []string{startKVSQL(t, "kvsql-1", "").url} }},
		{"postgres-ha", func(t *testing.T) []string { return kvsqlPair(t, testdb.FreshPostgresURL(t)) }},
		{"mariadb-ha", func(t *testing.T) []string { return kvsqlPair(t, testdb.FreshMySQLEndpoint(t)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			stores := tc.stores(t)
			saKey := newServiceAccountKey(t, t.TempDir())
			c := &cluster{name: tc.name, etcd: newEtcdClient(t, stores[0])}
			c.a = newAPIServer(t, bin, "a", stores[0], saKey, apiserverFlags...)
			c.b = c.a
			if len(stores) > 1 {
				c.b = newAPIServer(t, bin, "b", stores[1], saKey, apiserverFlags...)
			}
			c.run(t)
		})
	}
}

// kvsqlPair starts two kvsql instances on one database.
func kvsqlPair(t *testing.T, endpoint string) []string {
	return []string{startKVSQL(t, "kvsql-1", endpoint).url, startKVSQL(t, "kvsql-2", endpoint).url}
}
