package backends

import (
	"context"
	"database/sql"
	"fmt"
)

// Prepared holds a dialect's fixed statements prepared once on a
// database/sql handle, at open. A transaction then reuses the copy its
// connection already prepared (database/sql keeps one per connection):
// no parse on every call, and on a network database one round trip per
// statement instead of prepare plus execute. Preparing at open, not lazily,
// matters where a handle has a single connection (SQLite's writer): a
// prepare on the handle while a transaction holds that connection would
// wait for itself.
type Prepared struct {
	m map[string]*sql.Stmt // read-only after PrepareAll
}

// PrepareAll prepares queries on db.
func PrepareAll(ctx context.Context, db *sql.DB, queries []string) (*Prepared, error) {
	p := &Prepared{m: make(map[string]*sql.Stmt, len(queries))}
	for _, q := range queries {
		s, err := db.PrepareContext(ctx, q)
		if err != nil {
			p.Close()
			return nil, fmt.Errorf("prepare %q: %w", q, err)
		}
		p.m[q] = s
	}
	return p, nil
}

// Stmt returns q's statement on the handle (nil if q was not prepared); use
// it outside transactions.
func (p *Prepared) Stmt(q string) *sql.Stmt { return p.m[q] }

// Close closes the statements.
func (p *Prepared) Close() {
	for _, s := range p.m {
		_ = s.Close()
	}
}

// StmtTx runs statements in one database/sql transaction, prepared ones
// through their prepared copy and others (built per call, such as
// multi-row inserts) directly.
type StmtTx struct {
	Tx       *sql.Tx
	Prepared *Prepared
}

// Query runs q.
func (t StmtTx) Query(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	if s, ok := t.Prepared.m[q]; ok {
		return t.Tx.StmtContext(ctx, s).QueryContext(ctx, args...)
	}
	return t.Tx.QueryContext(ctx, q, args...)
}

// Exec runs q.
func (t StmtTx) Exec(ctx context.Context, q string, args ...any) (sql.Result, error) {
	if s, ok := t.Prepared.m[q]; ok {
		return t.Tx.StmtContext(ctx, s).ExecContext(ctx, args...)
	}
	return t.Tx.ExecContext(ctx, q, args...)
}

// QueryRow runs q and scans its one row into dst (sql.ErrNoRows if none).
func (t StmtTx) QueryRow(ctx context.Context, q string, args []any, dst ...any) error {
	if s, ok := t.Prepared.m[q]; ok {
		return t.Tx.StmtContext(ctx, s).QueryRowContext(ctx, args...).Scan(dst...)
	}
	return t.Tx.QueryRowContext(ctx, q, args...).Scan(dst...)
}

// SQLPoolStats describes a database/sql pool.
func SQLPoolStats(name string, db *sql.DB) PoolStats {
	st := db.Stats()
	return PoolStats{Name: name, MaxOpen: st.MaxOpenConnections, Open: st.OpenConnections, InUse: st.InUse,
		Idle: st.Idle, WaitCount: st.WaitCount, WaitDuration: st.WaitDuration}
}
