// Package snapshot reads and writes etcd's snapshot files: a bbolt
// database in etcd's mvcc layout (etcd 3.6: buckets "key", "meta",
// "lease", "cluster", "members", "auth*", ...; every version of every key
// in the "key" bucket under its revision, a tombstone marked with 't'),
// followed by the SHA-256 of the database when it came through etcd's
// Maintenance.Snapshot RPC.
//
// Create builds such a file from one backends.SnapshotView, page by page
// into a temporary file (never holding the history in memory), and streams
// it the way etcd's Snapshot RPC does: the file in chunks, then its
// SHA-256. `etcdctl snapshot save`, `etcdutl snapshot status` and
// `etcdutl snapshot restore` accept it. Restore loads a snapshot file (from
// etcd or from kvsql) into an empty database through backends.Loader.
package snapshot
