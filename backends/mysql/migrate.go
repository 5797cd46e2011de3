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
	pending, err := backends.Pending(ms, applied)
	if err != nil {
		return err
	}
	for _, m := range pending {
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
// exists, or dropping one that is gone, is tolerated, not creating a table
// that exists (that may be someone else's table).
func alreadyApplied(err error) bool {
	var me *gomysql.MySQLError
	if !errors.As(err, &me) {
		return false
	}
	switch me.Number {
	case 1060, 1061, 1091: // ER_DUP_FIELDNAME, ER_DUP_KEYNAME, ER_CANT_DROP_FIELD_OR_KEY
		return true
	}
	return false
}

// splitStatements splits a schema file into the statements MySQL runs one
// by one (the server takes one statement per query here), on the
// semicolons outside string literals, quoted identifiers and comments. It
// reads MySQL's lexical rules: '...' and "..." with backslash escapes and
// doubled quotes, `...` with doubled backticks, comments from "-- " (two
// dashes and a space or control character) or "#" to the end of the line,
// and /* ... */. Comments are dropped, except /*! ... */ and /*+ ... */,
// which the server executes (version-conditional code, optimizer hints).
// Statements are trimmed, without their semicolon; empty ones are skipped.
func splitStatements(body string) []string {
	var out []string
	var cur strings.Builder
	flush := func() {
		if st := strings.TrimSpace(cur.String()); st != "" {
			out = append(out, st)
		}
		cur.Reset()
	}
	for i := 0; i < len(body); i++ {
		c := body[i]
		switch {
		case c == '\'' || c == '"' || c == '`':
			end := quotedEnd(body, i)
			cur.WriteString(body[i:end])
			i = end - 1
		case c == '#' || (c == '-' && strings.HasPrefix(body[i:], "--") && (i+2 == len(body) || body[i+2] <= ' ')):
			end := strings.IndexByte(body[i:], '\n')
			if end < 0 {
				i = len(body)
				continue
			}
			i += end - 1 // the newline itself is kept
		case c == '/' && strings.HasPrefix(body[i:], "/*"):
			end := strings.Index(body[i+2:], "*/")
			if end < 0 {
				end = len(body)
			} else {
				end += i + 4
			}
			if strings.HasPrefix(body[i:], "/*!") || strings.HasPrefix(body[i:], "/*+") {
				cur.WriteString(body[i:end])
			} else {
				cur.WriteByte(' ') // a comment separates tokens
			}
			i = end - 1
		case c == ';':
			flush()
		default:
			cur.WriteByte(c)
		}
	}
	flush()
	return out
}

// quotedEnd returns the index just past the quoted string or identifier
// that starts at body[start] (a quote character), or len(body) if it is
// not closed. A quote is escaped by doubling it and, in strings (not in
// backtick identifiers), by a backslash.
func quotedEnd(body string, start int) int {
	q := body[start]
	for i := start + 1; i < len(body); i++ {
		switch body[i] {
		case '\\':
			if q != '`' {
				i++ // the escaped character, whatever it is
			}
		case q:
			if i+1 < len(body) && body[i+1] == q {
				i++ // a doubled quote stands for itself
				continue
			}
			return i + 1
		}
	}
	return len(body)
}
