package snapshot

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
)

// StorageVersion is the storage version kvsql's snapshots declare (etcd's
// meta/storageVersion): the etcd 3.6 layout.
const StorageVersion = "3.6.0"

// The buckets of etcd 3.6's backend (etcd: server/storage/schema). Every
// snapshot kvsql writes has all of them, as etcd's own do.
var (
	bucketKey            = []byte("key")
	bucketMeta           = []byte("meta")
	bucketLease          = []byte("lease")
	bucketAlarm          = []byte("alarm")
	bucketCluster        = []byte("cluster")
	bucketMembers        = []byte("members")
	bucketMembersRemoved = []byte("members_removed")
	bucketAuth           = []byte("auth")
	bucketAuthUsers      = []byte("authUsers")
	bucketAuthRoles      = []byte("authRoles")

	allBuckets = [][]byte{bucketKey, bucketMeta, bucketLease, bucketAlarm, bucketCluster,
		bucketMembers, bucketMembersRemoved, bucketAuth, bucketAuthUsers, bucketAuthRoles}
)

// Keys of the meta and cluster buckets.
var (
	// metaConsistentIndex and metaTerm: the raft index and term the
	// backend has applied (8 bytes big-endian each). etcdutl snapshot
	// restore replaces both with those of the new cluster's first entries.
	metaConsistentIndex = []byte("consistent_index")
	metaTerm            = []byte("term")
	// metaScheduledCompact and metaFinishedCompact: the compact revision,
	// encoded as a revision key (main, sub 0).
	metaScheduledCompact = []byte("scheduledCompactRev")
	metaFinishedCompact  = []byte("finishedCompactRev")
	metaStorageVersion   = []byte("storageVersion")
	clusterVersionKey    = []byte("clusterVersion")
)

// A revision key is 8 bytes of main revision (big-endian), '_', 8 bytes of
// sub-revision; a tombstone's has a 't' after them.
const (
	revKeyLen      = 8 + 1 + 8
	revSep         = '_'
	tombstoneMark  = 't'
	tombstoneLen   = revKeyLen + 1
	sendChunkBytes = 32 << 10 // etcd's snapshot send buffer size
)

// revKey encodes a revision key.
func revKey(main, sub int64, tombstone bool) []byte {
	b := make([]byte, revKeyLen, tombstoneLen)
	binary.BigEndian.PutUint64(b, uint64(main))
	b[8] = revSep
	binary.BigEndian.PutUint64(b[9:], uint64(sub))
	if tombstone {
		b = append(b, tombstoneMark)
	}
	return b
}

// parseRevKey decodes a revision key.
func parseRevKey(b []byte) (main, sub int64, tombstone bool, err error) {
	switch {
	case len(b) == tombstoneLen && b[revKeyLen] == tombstoneMark:
		tombstone = true
	case len(b) != revKeyLen:
		return 0, 0, false, fmt.Errorf("revision key %x: want %d bytes (or %d for a tombstone)", b, revKeyLen, tombstoneLen)
	}
	if b[8] != revSep {
		return 0, 0, false, fmt.Errorf("revision key %x: no '_' between revision and sub-revision", b)
	}
	return int64(binary.BigEndian.Uint64(b)), int64(binary.BigEndian.Uint64(b[9:])), tombstone, nil
}

// leaseKey encodes a lease bucket key: the ID, 8 bytes big-endian.
func leaseKey(id int64) []byte {
	return binary.BigEndian.AppendUint64(nil, uint64(id))
}

func uint64Bytes(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

// hasChecksum reports whether a snapshot file of n bytes ends with a
// SHA-256 of the database, as etcd decides it: a bolt file is a whole
// number of pages, so its size is a multiple of 512.
func hasChecksum(n int64) bool { return n%512 == sha256.Size }
