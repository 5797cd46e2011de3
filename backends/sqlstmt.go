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
// multi-row inserts) directly. Use it through a pointer: it keeps the
// transaction's copy of each prepared statement, made on first use
// (database/sql makes a new one on every Tx.StmtContext and holds each
// until the transaction ends, which a transaction of many statements,
// such as a bulk load, would pay for in memory).
type StmtTx struct {
	Tx       *sql.Tx
	Prepared *Prepared
	stmts    map[string]*sql.Stmt // guarded by the transaction's one user
}

// stmt returns the transaction's copy of q's prepared statement, nil if
// q was not prepared.
func (t *StmtTx) stmt(ctx context.Context, q string) *sql.Stmt {
	s, ok := t.Prepared.m[q]
	if !ok {
		return nil
	}
	if ts, ok := t.stmts[q]; ok {
		return ts
	}
	if t.stmts == nil {
		t.stmts = map[string]*sql.Stmt{}
	}
	ts := t.Tx.StmtContext(ctx, s)
	t.stmts[q] = ts
	return ts
}

// Query runs q.
func (t *StmtTx) Query(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	if s := t.stmt(ctx, q); s != nil {
		return s.QueryContext(ctx, args...)
	}
	return t.Tx.QueryContext(ctx, q, args...)
}

// Exec runs q.
func (t *StmtTx) Exec(ctx context.Context, q string, args ...any) (sql.Result, error) {
	if s := t.stmt(ctx, q); s != nil {
		return s.ExecContext(ctx, args...)
	}
	return t.Tx.ExecContext(ctx, q, args...)
}

// QueryRow runs q and scans its one row into dst (sql.ErrNoRows if none).
func (t *StmtTx) QueryRow(ctx context.Context, q string, args []any, dst ...any) error {
	if s := t.stmt(ctx, q); s != nil {
		return s.QueryRowContext(ctx, args...).Scan(dst...)
	}
	return t.Tx.QueryRowContext(ctx, q, args...).Scan(dst...)
}

// SQLPoolStats describes a database/sql pool.
func SQLPoolStats(name string, db *sql.DB) PoolStats {
	st := db.Stats()
	return PoolStats{Name: name, MaxOpen: st.MaxOpenConnections, Open: st.OpenConnections, InUse: st.InUse,
		Idle: st.Idle, WaitCount: st.WaitCount, WaitDuration: st.WaitDuration}
}
