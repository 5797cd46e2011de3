package snapshot

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"

	bolt "go.etcd.io/bbolt"
	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/server/v3/lease/leasepb"
	"google.golang.org/protobuf/proto"

	"github.com/kvsql/kvsql/backends"
)

// Page sizes of the reads from the database. A history page starts at
// firstHistoryPage rows and doubles or halves to land near
// historyPageBytes; each page is one bolt transaction, so memory holds one
// page of rows and its dirty bolt pages, never the history.
const (
	firstHistoryPage = 256
	maxHistoryPage   = 16384
	historyPageBytes = 4 << 20
	leasePage        = 1000
	// fillPercent is how full bolt fills its pages for keys appended in
	// order (etcd's backend uses the same for its sequential writes).
	fillPercent = 0.9
)

// Info describes a snapshot file.
type Info struct {
	// Revision is the current revision the snapshot holds; Compact its
	// compact revision (-1: never compacted).
	Revision, Compact int64
	// Versions counts the rows of the "key" bucket (every version of every
	// key, tombstones included); Leases the leases.
	Versions, Leases int64
	// Size is the size of the database in bytes (without the SHA-256).
	Size int64
	// Users and Roles count the auth users and roles written (Create) or
	// restored (Restore).
	Users, Roles int
}

// File is a snapshot file built by Create in a temporary file. Close
// removes it.
type File struct {
	Info
	f *os.File
}

// Create reads src's state from one database snapshot and writes it as an
// etcd bolt database into a new temporary file in dir (os.TempDir() if
// empty). Building it costs the size of the database in dir and one page
// of rows in memory.
func Create(ctx context.Context, src backends.Snapshotter, dir string) (*File, error) {
	f, err := os.CreateTemp(dir, "kvsql-snapshot-*.db")
	if err != nil {
		return nil, fmt.Errorf("create snapshot file: %w", err)
	}
	path := f.Name()
	_ = f.Close()
	var info Info
	err = src.ReadSnapshot(ctx, func(v *backends.SnapshotView) error {
		info, err = build(ctx, path, v)
		return err
	})
	if err != nil {
		_ = os.Remove(path)
		return nil, err
	}
	f, err = os.Open(path)
	if err != nil {
		_ = os.Remove(path)
		return nil, fmt.Errorf("open snapshot file: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		_ = f.Close()
		_ = os.Remove(path)
		return nil, fmt.Errorf("stat snapshot file: %w", err)
	}
	info.Size = st.Size()
	return &File{Info: info, f: f}, nil
}

// Close removes the file.
func (f *File) Close() error {
	return errors.Join(f.f.Close(), os.Remove(f.f.Name()))
}

// Send streams the file as etcd's Maintenance.Snapshot does: chunks of
// 32 KiB with the bytes remaining after each, then one more message with
// the SHA-256 of everything sent (remaining 0), which etcdutl snapshot
// restore verifies.
func (f *File) Send(send func(blob []byte, remaining int64) error) error {
	if _, err := f.f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	h := sha256.New()
	var sent int64
	for sent < f.Size {
		// a fresh buffer per message: the transport may still hold the last one
		buf := make([]byte, min(sendChunkBytes, f.Size-sent))
		if _, err := io.ReadFull(f.f, buf); err != nil {
			return fmt.Errorf("read snapshot file: %w", err)
		}
		sent += int64(len(buf))
		h.Write(buf)
		if err := send(buf, f.Size-sent); err != nil {
			return err
		}
	}
	return send(h.Sum(nil), 0)
}

// WriteFile writes the snapshot with its SHA-256 appended to w, as
// `etcdctl snapshot save` stores it.
func (f *File) WriteFile(w io.Writer) error {
	return f.Send(func(blob []byte, _ int64) error {
		_, err := w.Write(blob)
		return err
	})
}

// build writes v into a new bolt database at path.
func build(ctx context.Context, path string, v *backends.SnapshotView) (info Info, err error) {
	info.Revision, info.Compact = v.Current, v.Compact
	auth, err := v.Auth(ctx)
	if err != nil {
		return info, err
	}
	info.Users, info.Roles = len(auth.Users), len(auth.Roles)
	// The file is a scratch copy until it is sent: no fsync.
	db, err := bolt.Open(path, 0o600, &bolt.Options{NoSync: true, NoGrowSync: true})
	if err != nil {
		return info, fmt.Errorf("open bolt database %s: %w", path, err)
	}
	defer func() {
		if cerr := db.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("close bolt database: %w", cerr)
		}
	}()
	if err := db.Update(func(tx *bolt.Tx) error {
		for _, name := range allBuckets {
			if _, err := tx.CreateBucket(name); err != nil {
				return fmt.Errorf("create bucket %s: %w", name, err)
			}
		}
		return addAuth(tx, auth)
	}); err != nil {
		return info, err
	}
	last, err := writeHistory(ctx, db, v, &info)
	if err != nil {
		return info, err
	}
	if err := writeLeases(ctx, db, v, &info); err != nil {
		return info, err
	}
	err = db.Update(func(tx *bolt.Tx) error {
		if v.Current > max(last, 1) {
			// The current revision is past the newest version kept (a
			// database migrated from kine may end in revisions that
			// changed no key). etcd takes its current revision from the
			// newest revision key, so mark it with an empty entry, as
			// `etcdutl snapshot restore --bump-revision` does.
			b := tx.Bucket(bucketKey)
			b.FillPercent = fillPercent
			if err := b.Put(revKey(v.Current, 0, false), []byte{}); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		puts := [][2][]byte{
			// kvsql reports the current revision as its raft index (Status).
			{metaConsistentIndex, uint64Bytes(uint64(max(v.Current, 1)))},
			{metaTerm, uint64Bytes(1)},
			{metaStorageVersion, []byte(StorageVersion)},
		}
		if v.Compact > 0 {
			c := revKey(v.Compact, 0, false)
			puts = append(puts, [2][]byte{metaScheduledCompact, c}, [2][]byte{metaFinishedCompact, c})
		}
		for _, p := range puts {
			if err := meta.Put(p[0], p[1]); err != nil {
				return fmt.Errorf("write meta %s: %w", p[0], err)
			}
		}
		return tx.Bucket(bucketCluster).Put(clusterVersionKey, []byte(StorageVersion))
	})
	return info, err
}

// writeHistory copies every kv_log row into the "key" bucket, a page per
// bolt transaction, and returns the newest revision written.
func writeHistory(ctx context.Context, db *bolt.DB, v *backends.SnapshotView, info *Info) (int64, error) {
	var afterRev, afterSub int64
	limit := firstHistoryPage
	marshal := proto.MarshalOptions{Deterministic: true}
	for {
		rows, err := v.History(ctx, afterRev, afterSub, limit)
		if err != nil {
			return 0, err
		}
		if len(rows) == 0 {
			return afterRev, nil
		}
		pageBytes := 0
		err = db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketKey)
			b.FillPercent = fillPercent
			for _, r := range rows {
				// etcd stores a tombstone as a KeyValue holding only the key.
				kv := &mvccpb.KeyValue{Key: r.Key}
				if !r.Deleted {
					kv = &mvccpb.KeyValue{Key: r.Key, CreateRevision: r.CreateRev, ModRevision: r.Rev,
						Version: r.Version, Lease: r.Lease, Value: r.Value}
				}
				val, err := marshal.Marshal(kv)
				if err != nil {
					return fmt.Errorf("encode revision %d.%d: %w", r.Rev, r.Sub, err)
				}
				if err := b.Put(revKey(r.Rev, r.Sub, r.Deleted), val); err != nil {
					return fmt.Errorf("write revision %d.%d: %w", r.Rev, r.Sub, err)
				}
				pageBytes += len(val)
			}
			return nil
		})
		if err != nil {
			return 0, err
		}
		info.Versions += int64(len(rows))
		lastRow := rows[len(rows)-1]
		afterRev, afterSub = lastRow.Rev, lastRow.Sub
		switch {
		case pageBytes < historyPageBytes/2 && limit < maxHistoryPage:
			limit *= 2
		case pageBytes > historyPageBytes*2 && limit > 1:
			limit /= 2
		}
	}
}

// writeLeases copies the leases into the "lease" bucket with their TTL.
// RemainingTTL stays 0, as etcd writes it unless lease checkpointing is
// on: an etcd restored from the file gives each lease its full TTL.
func writeLeases(ctx context.Context, db *bolt.DB, v *backends.SnapshotView, info *Info) error {
	after := int64(-1 << 63)
	for {
		ls, err := v.Leases(ctx, after, leasePage)
		if err != nil {
			return err
		}
		if len(ls) == 0 {
			return nil
		}
		err = db.Update(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketLease)
			for _, l := range ls {
				val, err := proto.Marshal(&leasepb.Lease{ID: l.ID, TTL: l.GrantedTTL})
				if err != nil {
					return fmt.Errorf("encode lease %d: %w", l.ID, err)
				}
				if err := b.Put(leaseKey(l.ID), val); err != nil {
					return fmt.Errorf("write lease %d: %w", l.ID, err)
				}
			}
			return nil
		})
		if err != nil {
			return err
		}
		info.Leases += int64(len(ls))
		after = ls[len(ls)-1].ID
	}
}
