package postgres

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/kvsql/kvsql/backends"
)

// migrate applies schema/NNN_*.sql above the recorded version, under a
// transaction-scoped advisory lock so that instances starting together
// against an empty database apply each migration exactly once.
func migrate(ctx context.Context, pool *pgxpool.Pool) error {
	tx, err := pool.Begin(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = tx.Rollback(context.Background()) }()
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(migrateLockKey)); err != nil {
		return err
	}
	if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS kv_schema (version integer NOT NULL)`); err != nil {
		return err
	}
	rows, err := tx.Query(ctx, `SELECT version FROM kv_schema`)
	if err != nil {
		return err
	}
	applied, err := backends.ScanVersions(rows)
	rows.Close()
	if err != nil {
		return err
	}
	ms, err := backends.Migrations(schemaFS, "schema")
	if err != nil {
		return err
	}
	pending, err := backends.Pending(ms, applied)
	if err != nil {
		return err
	}
	for _, m := range pending {
		if _, err := tx.Exec(ctx, m.SQL); err != nil {
			return fmt.Errorf("migration %s: %w", m.Name, err)
		}
		if _, err := tx.Exec(ctx, `INSERT INTO kv_schema (version) VALUES ($1)`, m.Version); err != nil {
			return fmt.Errorf("migration %s: %w", m.Name, err)
		}
	}
	return tx.Commit(ctx)
}
