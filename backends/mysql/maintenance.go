package mysql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"

	"github.com/kvsql/kvsql/backends"
)

// BeginCompact implements backends.Dialect: a READ COMMITTED transaction
// on the read pool (prepared statements) that does not touch kv_meta. READ
// COMMITTED keeps InnoDB from taking gap locks on the key index, where
// writers insert.
func (d *dialect) BeginCompact(ctx context.Context) (backends.CompactTx, error) {
	tx, err := d.db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	if err != nil {
		return nil, err
	}
	return &compactTx{tx: tx, st: backends.StmtTx{Tx: tx, Prepared: d.stmts}}, nil
}

// compactTx implements backends.CompactTx.
type compactTx struct {
	tx *sql.Tx
	st backends.StmtTx
}

func (c *compactTx) CleanedTo(ctx context.Context) (int64, error) {
	var rev int64
	err := c.st.QueryRow(ctx, qCleanedTo, nil, &rev)
	return rev, err
}

func (c *compactTx) SetCleanedTo(ctx context.Context, rev int64) error {
	_, err := c.st.Exec(ctx, qSetCleanedTo, rev)
	return err
}

func (c *compactTx) StepEnd(ctx context.Context, from, upTo int64, limit int) (int64, error) {
	var rev int64
	err := c.st.QueryRow(ctx, qStepEnd, []any{from, upTo, limit}, &rev)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	return rev, err
}

func (c *compactTx) DeleteSuperseded(ctx context.Context, compact, from, to int64) (int64, error) {
	older, err := c.st.Exec(ctx, qDeleteSuperseded, from, to, compact, compact)
	if err != nil {
		return 0, err
	}
	tombs, err := c.st.Exec(ctx, qDeleteTombstones, from, to, compact)
	if err != nil {
		return 0, err
	}
	n, err := older.RowsAffected()
	if err != nil {
		return 0, err
	}
	m, err := tombs.RowsAffected()
	return n + m, err
}

func (c *compactTx) Commit() error { return c.tx.Commit() }

func (c *compactTx) Rollback() error { return c.tx.Rollback() }

// Size implements backends.Dialect: the tablespaces' file sizes and their
// part not free (qSizeFiles), where the server lets this user read them,
// else InnoDB's table statistics (qSize), which lag behind the data.
func (d *dialect) Size(ctx context.Context) (int64, int64, error) {
	var size, inUse int64
	err := d.db.QueryRowContext(ctx, qSizeFiles).Scan(&size, &inUse)
	if err == nil && size > 0 {
		return size, inUse, nil
	}
	if ctx.Err() != nil {
		return 0, 0, ctx.Err()
	}
	// No such view (MySQL names it differently), no PROCESS privilege, or
	// tablespace names this query does not match (a database name with
	// characters InnoDB encodes in file names).
	err = d.db.QueryRowContext(ctx, qSize).Scan(&size, &inUse)
	return size, inUse, err
}

// Defragment implements backends.Dialect (see qOptimize). OPTIMIZE TABLE
// reports a failure as a result row, not as an error.
func (d *dialect) Defragment(ctx context.Context) error {
	rows, err := d.db.QueryContext(ctx, qOptimize)
	if err != nil {
		return err
	}
	defer rows.Close()
	var errs []error
	for rows.Next() {
		var table, op, kind, text string
		if err := rows.Scan(&table, &op, &kind, &text); err != nil {
			return err
		}
		if strings.EqualFold(kind, "error") {
			errs = append(errs, fmt.Errorf("optimize %s: %s", table, text))
		}
	}
	return errors.Join(append(errs, rows.Err())...)
}

func (t *txn) AlarmList(ctx context.Context) ([]*pb.AlarmMember, error) {
	rows, err := t.st.Query(ctx, qAlarms)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	return backends.ScanAlarms(rows)
}

func (t *txn) AlarmInsert(ctx context.Context, member uint64, alarm int32) (bool, error) {
	return changed(t.st.Exec(ctx, qAlarmInsert, member, alarm))
}

func (t *txn) AlarmDelete(ctx context.Context, member uint64, alarm int32) (bool, error) {
	return changed(t.st.Exec(ctx, qAlarmDelete, member, alarm))
}

// changed reports whether a statement changed a row.
func changed(res sql.Result, err error) (bool, error) {
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n > 0, err
}
