package mysql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"

	gomysql "github.com/go-sql-driver/mysql"

	"github.com/kvsql/kvsql/backends"
)

// migrate applies schema/NNN_*.sql above the recorded version. MySQL DDL
// commits implicitly, so instances starting together serialise on a named
// lock instead of a transaction; each statement of a file runs in order.
func migrate(ctx context.Context, db *sql.DB, lock string) error {
	c, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	var got sql.NullInt64
	if err := c.QueryRowContext(ctx, qGetLock, lock, 60).Scan(&got); err != nil || got.Int64 != 1 {
		return fmt.Errorf("take migration lock %s (another instance may be stuck migrating): %w", lock, cmpErr(err, errors.New("not granted within 60 s")))
	}
	defer func() { _, _ = c.ExecContext(context.WithoutCancel(ctx), qReleaseLck, lock) }()
	if _, err := c.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS kv_schema (version INT NOT NULL) ENGINE=InnoDB`); err != nil {
		return err
	}
	rows, err := c.QueryContext(ctx, `SELECT version FROM kv_schema`)
	if err != nil {
		return err
	}
	applied, err := backends.ScanVersions(rows)
	_ = rows.Close()
	if err != nil {
		return err
	}
	ms, err := backends.Migrations(schemaFS, "schema")
	if err != nil {
		return err
	}
	for _, m := range backends.Pending(ms, applied) {
		for _, stmt := range splitStatements(m.SQL) {
			if _, err := c.ExecContext(ctx, stmt); err != nil && !alreadyApplied(err) {
				return fmt.Errorf("migration %s: %w", m.Name, err)
			}
		}
		if _, err := c.ExecContext(ctx, `INSERT INTO kv_schema (version) VALUES (?)`, m.Version); err != nil {
			return fmt.Errorf("migration %s: %w", m.Name, err)
		}
	}
	return nil
}

// cmpErr returns err, or other when err is nil.
func cmpErr(err, other error) error {
	if err != nil {
		return err
	}
	return other
}

// alreadyApplied reports whether a migration statement failed only because
// it took effect before: MySQL commits each DDL statement on its own, so a
// process that died between an ALTER TABLE and recording the version runs
// the ALTER again on its next start. Only adding a column or an index that
// exists is tolerated, not creating a table that exists (that may be
// someone else's table).
func alreadyApplied(err error) bool {
	var me *gomysql.MySQLError
	return errors.As(err, &me) && (me.Number == 1060 || me.Number == 1061) // ER_DUP_FIELDNAME, ER_DUP_KEYNAME
}

// splitStatements splits a schema file on semicolons that end a line,
// dropping comment lines.
func splitStatements(body string) []string {
	var out []string
	var cur strings.Builder
	for _, line := range strings.Split(body, "\n") {
		if t := strings.TrimSpace(line); t == "" || strings.HasPrefix(t, "--") {
			continue
		}
		cur.WriteString(line)
		cur.WriteByte('\n')
		if strings.HasSuffix(strings.TrimSpace(line), ";") {
			out = append(out, strings.TrimSuffix(strings.TrimSpace(cur.String()), ";"))
			cur.Reset()
		}
	}
	return out
}
