package snapshot

import (
	"bytes"
	"cmp"
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

// Batch sizes of a restore: rows go to the database in batches of at most
// restoreBatchRows rows or restoreBatchBytes bytes of values.
const (
	restoreBatchRows  = 2000
	restoreBatchBytes = 8 << 20
	// defaultWindowBytes is RestoreOptions.WindowBytes' default.
	defaultWindowBytes = 64 << 20
)

// ErrNoChecksum means that the file has no SHA-256 appended (it was copied from a
// data directory rather than saved through the Snapshot RPC).
var ErrNoChecksum = errors.New("snapshot file has no SHA-256 checksum")

// RestoreOptions configures Restore.
type RestoreOptions struct {
	// SkipHashCheck accepts a file without a SHA-256 (etcd's member/snap/db
	// copied from a data directory) and skips verifying one that has it,
	// as etcdutl's --skip-hash-check.
	SkipHashCheck bool
	// Progress, if set, is called after every batch written.
	Progress func(Progress)
	// WindowBytes is how much of the file's history one mapping of it
	// reads (see view); 0 means 64 MiB.
	WindowBytes int
}

// Progress reports how far a restore has come.
type Progress struct {
	// Versions is the number of rows of history written so far; Revision
	// the newest revision among them, of LastRevision in the file.
	Versions, Revision, LastRevision int64
}

// Restore loads the snapshot file at path (written by etcd or by kvsql)
// into dst, which must be empty: every version in its "key" bucket with
// its revision, create revision, version and lease, its leases with their
// TTL, its compact revision, and its current revision (the newest revision
// key, or the compact revision if that is newer, as etcd computes it).
// A file ending in a SHA-256 is verified first. The load is one database
// transaction, written in batches; memory holds one batch.
func Restore(ctx context.Context, path string, dst backends.Loader, opts RestoreOptions) (Info, error) {
	var info Info
	size, err := verifyChecksum(path, opts.SkipHashCheck)
	if err != nil {
		return info, err
	}
	info.Size = size
	var auth backends.AuthState
	var hasAuth bool
	load, err := dst.BeginLoad(ctx)
	if err != nil {
		return info, err
	}
	defer func() { _ = load.Rollback() }()
	// The small buckets first, then the history in windows.
	err = view(path, func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketKey, bucketMeta} {
			if tx.Bucket(name) == nil {
				return fmt.Errorf("%s is not an etcd snapshot: it has no %q bucket", path, name)
			}
		}
		if info.Compact, err = readCompact(tx.Bucket(bucketMeta)); err != nil {
			return err
		}
		if err := loadLeases(ctx, tx.Bucket(bucketLease), load, &info); err != nil {
			return err
		}
		auth, hasAuth, err = readAuth(tx)
		return err
	})
	if err != nil {
		return info, err
	}
	h := &historyLoader{ctx: ctx, load: load, info: &info, progress: opts.Progress, windowBytes: cmp.Or(opts.WindowBytes, defaultWindowBytes)}
	for !h.done {
		if err := view(path, h.window); err != nil {
			return info, err
		}
	}
	if err := h.flush(); err != nil {
		return info, err
	}
	info.Revision = max(h.last, info.Compact, 1)
	if err := load.Commit(ctx, info.Revision, info.Compact); err != nil {
		return info, err
	}
	if !hasAuth {
		return info, nil
	}
	// Users, roles and the auth flag, as the snapshot has them.
	as, ok := dst.(backends.AuthStore)
	if !ok {
		return info, errors.New("the key space is restored, but this backend stores no users and roles")
	}
	if err := backends.ReplaceAuth(ctx, as, auth); err != nil {
		return info, fmt.Errorf("the key space is restored, but the users and roles are not (restore into a new database again): %w", err)
	}
	info.Users, info.Roles = len(auth.Users), len(auth.Roles)
	return info, nil
}

// view runs fn in a read transaction of the bolt database at path, opened
// for it and closed after it. bolt reads the file through mmap, and every
// page read stays resident in the process until the file is unmapped:
// reading the history in windows, each through a mapping of its own,
// keeps that to one window rather than the whole file.
func view(path string, fn func(tx *bolt.Tx) error) error {
	db, err := bolt.Open(path, 0o400, &bolt.Options{ReadOnly: true})
	if err != nil {
		return fmt.Errorf("open %s as an etcd snapshot (bolt database): %w", path, err)
	}
	if err := db.View(fn); err != nil {
		_ = db.Close()
		return err
	}
	return db.Close()
}

// verifyChecksum checks the SHA-256 that ends a snapshot saved through
// the Snapshot RPC and returns the size of the database before it.
func verifyChecksum(path string, skip bool) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, err
	}
	size := st.Size()
	if !hasChecksum(size) {
		if skip {
			return size, nil
		}
		return 0, fmt.Errorf("%s: %w; if it is a db file copied from an etcd data directory, pass --skip-hash-check", path, ErrNoChecksum)
	}
	size -= sha256.Size
	if skip {
		return size, nil
	}
	h := sha256.New()
	if _, err := io.Copy(h, io.LimitReader(f, size)); err != nil {
		return 0, fmt.Errorf("read %s: %w", path, err)
	}
	want := make([]byte, sha256.Size)
	if _, err := io.ReadFull(f, want); err != nil {
		return 0, fmt.Errorf("read %s: %w", path, err)
	}
	if !bytes.Equal(h.Sum(nil), want) {
		return 0, fmt.Errorf("%s: SHA-256 mismatch: the file is damaged or incomplete (expected %x, computed %x)", path, want, h.Sum(nil))
	}
	return size, nil
}

// readCompact returns the compact revision the meta bucket records (-1 if
// none): the scheduled one if it is newer than the finished one, since
// etcd finishes that compaction when it opens the database.
func readCompact(meta *bolt.Bucket) (int64, error) {
	compact := int64(-1)
	for _, k := range [][]byte{metaFinishedCompact, metaScheduledCompact} {
		v := meta.Get(k)
		if v == nil {
			continue
		}
		rev, _, _, err := parseRevKey(v)
		if err != nil {
			return 0, fmt.Errorf("meta %s: %w", k, err)
		}
		compact = max(compact, rev)
	}
	if compact == 0 {
		compact = -1 // etcd's compaction at 0 means none
	}
	return compact, nil
}

// historyLoader appends the revision keys of the "key" bucket, in revision
// order, one window of the file at a time.
type historyLoader struct {
	ctx         context.Context
	load        *backends.BulkLoad
	info        *Info
	progress    func(Progress)
	windowBytes int

	batch      []backends.LogRow
	batchBytes int
	// after is the last revision key read (nil before the first window);
	// last its revision, lastInFile the newest revision in the file.
	after            []byte
	last, lastInFile int64
	done             bool
}

// window reads up to h.windowBytes of the history after h.after and
// appends it in batches; it sets h.done at the end of the bucket.
func (h *historyLoader) window(tx *bolt.Tx) error {
	c := tx.Bucket(bucketKey).Cursor()
	var k, v []byte
	if h.after == nil {
		if lk, _ := c.Last(); lk != nil {
			var err error
			if h.lastInFile, _, _, err = parseRevKey(lk); err != nil {
				return err
			}
		}
		k, v = c.First()
	} else {
		k, v = c.Seek(h.after)
		if k != nil && bytes.Equal(k, h.after) {
			k, v = c.Next()
		}
	}
	read := 0
	for ; k != nil; k, v = c.Next() {
		if read >= h.windowBytes {
			// k is read again at the start of the next window
			return nil
		}
		read += len(k) + len(v)
		rev, sub, tombstone, err := parseRevKey(k)
		if err != nil {
			return err
		}
		h.after = append(h.after[:0], k...)
		h.last = rev
		var kv mvccpb.KeyValue
		if err := proto.Unmarshal(v, &kv); err != nil {
			return fmt.Errorf("revision %d.%d: decode key-value: %w", rev, sub, err)
		}
		if len(kv.Key) == 0 {
			// A revision marker without a key (etcdutl's --bump-revision,
			// or kvsql's for a current revision past the newest change):
			// it only moves the current revision.
			continue
		}
		h.batch = append(h.batch, backends.LogRow{Rev: rev, Sub: sub, Key: kv.Key, Deleted: tombstone,
			CreateRev: kv.CreateRevision, Version: kv.Version, Lease: kv.Lease, Value: kv.Value})
		h.batchBytes += len(kv.Key) + len(kv.Value)
		if len(h.batch) >= restoreBatchRows || h.batchBytes >= restoreBatchBytes {
			if err := h.flush(); err != nil {
				return err
			}
		}
	}
	h.done = true
	return nil
}

// flush appends the batch.
func (h *historyLoader) flush() error {
	if len(h.batch) == 0 {
		return nil
	}
	if err := h.load.Append(h.ctx, h.batch); err != nil {
		return err
	}
	h.info.Versions += int64(len(h.batch))
	if h.progress != nil {
		h.progress(Progress{Versions: h.info.Versions, Revision: h.last, LastRevision: h.lastInFile})
	}
	h.batch, h.batchBytes = h.batch[:0], 0
	return h.ctx.Err()
}

// loadLeases creates every lease of the "lease" bucket with its TTL.
func loadLeases(ctx context.Context, b *bolt.Bucket, load *backends.BulkLoad, info *Info) error {
	if b == nil {
		return nil
	}
	return b.ForEach(func(k, v []byte) error {
		var l leasepb.Lease
		if err := proto.Unmarshal(v, &l); err != nil {
			return fmt.Errorf("lease %x: decode: %w", k, err)
		}
		if err := load.AddLease(ctx, l.ID, l.TTL); err != nil {
			return err
		}
		info.Leases++
		return nil
	})
}
