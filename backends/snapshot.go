package backends

import (
	"context"
	"fmt"
)

// Snapshotter is implemented by backends that can read their whole state
// (history, revisions, leases) from one database snapshot, page by page:
// what Maintenance.Snapshot writes into an etcd snapshot file.
type Snapshotter interface {
	// ReadSnapshot opens a read transaction on one consistent snapshot and
	// calls fn with a view of it; the transaction ends when fn returns.
	// Everything fn reads through the view comes from that one snapshot,
	// however long fn takes (REPEATABLE READ on PostgreSQL and MySQL, a
	// read transaction on SQLite's WAL).
	ReadSnapshot(ctx context.Context, fn func(v *SnapshotView) error) error
}

var _ Snapshotter = (*Engine)(nil)

// SnapshotView reads one database snapshot in pages. It is valid only
// inside the ReadSnapshot callback that received it.
type SnapshotView struct {
	tx Tx
	// Current and Compact are the snapshot's current and compact revisions
	// (Compact is -1 if the database was never compacted).
	Current, Compact int64
}

// History returns up to limit kv_log rows after (afterRev, afterSub) in
// (rev, sub) order: every version still kept, tombstones included, with
// PrevRev set. An empty result means the end of the history.
func (v *SnapshotView) History(ctx context.Context, afterRev, afterSub int64, limit int) ([]LogRow, error) {
	rows, err := v.tx.History(ctx, afterRev, afterSub, limit)
	if err != nil {
		return nil, fmt.Errorf("read history after revision %d.%d: %w", afterRev, afterSub, err)
	}
	return rows, nil
}

// Leases returns up to limit leases with an id above afterID, in id order,
// with their TTL and remaining time. An empty result means the end.
func (v *SnapshotView) Leases(ctx context.Context, afterID int64, limit int) ([]Lease, error) {
	ls, err := v.tx.LeaseRows(ctx, afterID, limit)
	if err != nil {
		return nil, fmt.Errorf("read leases after %d: %w", afterID, err)
	}
	return ls, nil
}

// Auth returns the auth state (users, roles, the enabled flag and the auth
// revision) in this snapshot, users and roles in name order.
func (v *SnapshotView) Auth(ctx context.Context) (AuthState, error) {
	s, err := v.tx.ReadAuth(ctx)
	if err != nil {
		return s, fmt.Errorf("read auth state: %w", err)
	}
	SortAuthState(&s)
	return s, nil
}

// ReadSnapshot implements Snapshotter.
func (e *Engine) ReadSnapshot(ctx context.Context, fn func(v *SnapshotView) error) error {
	return e.read(ctx, func(tx Tx) error {
		cur, compact, err := e.revisions(ctx, tx)
		if err != nil {
			return fmt.Errorf("read revisions: %w", err)
		}
		return fn(&SnapshotView{tx: tx, Current: cur, Compact: compact})
	})
}
