// Package migrate copies another etcd-API store's state into an empty
// kvsql database through backends.Loader. FromKine reads kine's table
// (k3s-io/kine: the k3s default SQLite state.db, or kine on PostgreSQL or
// MySQL/MariaDB).
package migrate

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"strconv"

	"github.com/kvsql/kvsql/backends"
)

// Flavor is the SQL database kine ran on; it picks the placeholders.
type Flavor int

// The databases kine runs on.
const (
	SQLite Flavor = iota
	Postgres
	MySQL
)

// Kine's table, as k3s-io/kine lays it out on every database: one row per
// change of a key, id being the revision.
//
//	id               the revision of the change (an auto-increment id)
//	name             the key
//	created          1 if the change created the key
//	deleted          1 if it deleted the key
//	create_revision  the key's create revision (0 or NULL on a created row,
//	                 whose create revision is its id)
//	prev_revision    the id of the key's previous row
//	lease            a TTL in seconds: kine's lease IDs are their TTL
//	value, old_value the value, and the previous row's
//
// Two kinds of rows are kine's own and change no key: "compact_rev_key",
// whose prev_revision is the compact revision, and "gap-N" rows that fill
// an id a failed insert skipped. kine stores the apiserver's
// compact_rev_key under "compact_rev_key_apiserver" with the value
// "VERSION|VALUE", because it tracks no key versions of its own.
const (
	kineCompactKey   = "compact_rev_key"
	kineAPICompact   = "compact_rev_key_apiserver"
	kineGapPrefix    = "gap-"
	kinePageRows     = 2000
	kinePageMaxBytes = 8 << 20
)

// kineQueries are the statements FromKine runs, in a flavor's placeholders.
type kineQueries struct {
	revisions, page, leases string
}

var kineStatements = map[Flavor]kineQueries{
	SQLite: {
		revisions: `SELECT COALESCE(MAX(id), 0), COALESCE((SELECT MAX(prev_revision) FROM kine WHERE name = 'compact_rev_key'), 0) FROM kine`,
		page: `SELECT id, name, created, deleted, create_revision, prev_revision, lease, value FROM kine
			WHERE id > ? ORDER BY id LIMIT ?`,
		leases: kineLeases,
	},
	MySQL: {
		revisions: `SELECT COALESCE(MAX(id), 0), COALESCE((SELECT MAX(prev_revision) FROM kine WHERE name = 'compact_rev_key'), 0) FROM kine`,
		page: `SELECT id, name, created, deleted, create_revision, prev_revision, lease, value FROM kine
			WHERE id > ? ORDER BY id LIMIT ?`,
		leases: kineLeases,
	},
	Postgres: {
		revisions: `SELECT COALESCE(MAX(id), 0), COALESCE((SELECT MAX(prev_revision) FROM kine WHERE name = 'compact_rev_key'), 0) FROM kine`,
		page: `SELECT id, name, created, deleted, create_revision, prev_revision, lease, value FROM kine
			WHERE id > $1 ORDER BY id LIMIT $2`,
		leases: kineLeases,
	},
}

// kineLeases lists the TTLs ("lease IDs") of live keys: each key's newest
// row, if it is not a deletion.
const kineLeases = `SELECT DISTINCT k.lease FROM kine k JOIN (SELECT MAX(id) AS id FROM kine GROUP BY name) m ON k.id = m.id
	WHERE k.deleted = 0 AND k.lease > 0 AND k.name <> 'compact_rev_key' ORDER BY k.lease`

// Info describes a migration.
type Info struct {
	// Revision and Compact are the current and compact revisions (-1:
	// never compacted) of the migrated database.
	Revision, Compact int64
	// Rows counts the changes copied; Skipped kine's own rows left out
	// (compact_rev_key, gap rows); Leases the leases created.
	Rows, Skipped, Leases int64
}

// Progress reports how far a migration has come: Revision of LastRevision.
type Progress struct {
	Rows, Revision, LastRevision int64
}

// FromKine copies kine's state from db (kine's database, read in one
// REPEATABLE READ or SQLite read transaction) into dst, which must be
// empty: every kept change of every key with kine's revision (id), create
// revision, lease and value, kine's compact revision and its current
// revision (its newest id). kine stores no key versions, so each version
// is counted as etcd would from the changes kine kept (1 at a create, one
// more at each update; exact unless kine compacted earlier updates away),
// except compact_rev_key's, which kine records for the apiserver. Each
// TTL a live key uses becomes a lease whose ID and TTL are that TTL, as
// kine's Grant answers them. Stop kine (or every k3s server) first.
func FromKine(ctx context.Context, db *sql.DB, flavor Flavor, dst backends.Loader, progress func(Progress)) (Info, error) {
	var info Info
	q, ok := kineStatements[flavor]
	if !ok {
		return info, fmt.Errorf("unknown kine database flavor %d", flavor)
	}
	opts := &sql.TxOptions{Isolation: sql.LevelRepeatableRead, ReadOnly: true}
	if flavor == SQLite {
		opts = nil // a deferred transaction reads one snapshot
	}
	tx, err := db.BeginTx(ctx, opts)
	if err != nil {
		return info, fmt.Errorf("begin read transaction on kine's database: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	var current, compact int64
	if err := tx.QueryRowContext(ctx, q.revisions).Scan(&current, &compact); err != nil {
		return info, fmt.Errorf("read kine's revisions (is this kine's database? it needs the table kine): %w", err)
	}
	info.Revision, info.Compact = max(current, 1), compact
	if compact <= 0 {
		info.Compact = -1
	}
	load, err := dst.BeginLoad(ctx)
	if err != nil {
		return info, err
	}
	defer func() { _ = load.Rollback() }()
	var after int64
	for {
		rows, skipped, last, err := kinePage(ctx, tx, q.page, after)
		if err != nil {
			return info, err
		}
		if last == after {
			break
		}
		after = last
		info.Skipped += skipped
		if err := load.Append(ctx, rows); err != nil {
			return info, err
		}
		info.Rows += int64(len(rows))
		if progress != nil {
			progress(Progress{Rows: info.Rows, Revision: last, LastRevision: current})
		}
	}
	leases, err := tx.QueryContext(ctx, q.leases)
	if err != nil {
		return info, fmt.Errorf("list kine's leases: %w", err)
	}
	ttls, err := backends.ScanIDs(leases)
	_ = leases.Close()
	if err != nil {
		return info, fmt.Errorf("list kine's leases: %w", err)
	}
	for _, ttl := range ttls {
		if err := load.AddLease(ctx, ttl, ttl); err != nil {
			return info, err
		}
		info.Leases++
	}
	if err := load.Commit(ctx, info.Revision, info.Compact); err != nil {
		return info, err
	}
	return info, nil
}

// kinePage reads the rows after id after (at most kinePageRows, or fewer
// once they hold kinePageMaxBytes) and turns them into kvsql log rows. It
// returns the id of the last row read (after if none).
func kinePage(ctx context.Context, tx *sql.Tx, q string, after int64) (out []backends.LogRow, skipped, last int64, err error) {
	rows, err := tx.QueryContext(ctx, q, after, kinePageRows)
	if err != nil {
		return nil, 0, 0, fmt.Errorf("read kine rows after %d: %w", after, err)
	}
	defer rows.Close()
	last = after
	size := 0
	for rows.Next() {
		var (
			id                         int64
			name, value                []byte
			created, deleted           sql.NullInt64
			createRev, prevRev, ttlSec sql.NullInt64
		)
		if err := rows.Scan(&id, &name, &created, &deleted, &createRev, &prevRev, &ttlSec, &value); err != nil {
			return nil, 0, 0, fmt.Errorf("read kine row after %d: %w", last, err)
		}
		last = id
		key := string(name)
		if key == kineCompactKey || (len(key) > len(kineGapPrefix) && key[:len(kineGapPrefix)] == kineGapPrefix) {
			skipped++
			continue
		}
		r := backends.LogRow{Rev: id, Key: name, Deleted: deleted.Int64 != 0, CreateRev: createRev.Int64, Lease: ttlSec.Int64, Value: value}
		if created.Int64 != 0 {
			r.CreateRev, r.Version = id, 1
		}
		if key == kineAPICompact {
			// kine's stand-in for the apiserver's compact_rev_key: its
			// value carries the version kine reports for it.
			r.Key = []byte(kineCompactKey)
			if !r.Deleted {
				r.Version, r.Value = decodeKineVersion(value)
			}
		}
		out = append(out, r)
		size += len(name) + len(value)
		if size >= kinePageMaxBytes {
			break
		}
	}
	return out, skipped, last, rows.Err()
}

// decodeKineVersion splits kine's "VERSION|VALUE" (older kine stored only
// "VERSION", with the value "0" implied).
func decodeKineVersion(v []byte) (int64, []byte) {
	ver, val, ok := bytes.Cut(v, []byte("|"))
	if !ok {
		ver, val = v, []byte("0")
	}
	n, _ := strconv.ParseInt(string(ver), 10, 64)
	return n, val
}
