package mysql

import (
	"context"
	"database/sql"
	"strings"
	"testing"
)

// The watch tailer reads a few new revisions after every commit, a watch
// replays history through qChanges, and compaction cleans up in steps: with
// a long history none may read kv_log as a whole (see the PostgreSQL
// dialect's test of the same).
func TestLogStatementsUseIndexes(t *testing.T) {
	ctx := context.Background()
	_, db := openWithSQL(t)
	// 1 000 000 revisions over 1000 keys, each row pointing at the key's
	// previous revision.
	for _, q := range []string{
		`CREATE TEMPORARY TABLE digits (d INT NOT NULL)`,
		`INSERT INTO digits VALUES (0), (1), (2), (3), (4), (5), (6), (7), (8), (9)`,
		`INSERT INTO kv_log (rev, sub, k, deleted, create_rev, prev_rev, version, lease, v)
			SELECT g, 0, CONCAT('/registry/k', g % 1000), 0, 2, IF(g > 1001, g - 1000, 0), 1, 0, REPEAT('v', 20)
			FROM (SELECT 2 + a.d + 10 * b.d + 100 * c.d + 1000 * e.d + 10000 * f.d + 100000 * h.d AS g
				FROM digits a, digits b, digits c, digits e, digits f, digits h) s`,
		`UPDATE kv_meta SET rev = 1 + 1000000 WHERE id = 1`,
		`ANALYZE TABLE kv_log`,
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	bind := func(q string, args ...string) string {
		for _, a := range args {
			q = strings.Replace(q, "?", a, 1)
		}
		return q
	}
	// Compaction's cleanup steps must cost what they remove, not the
	// whole log.
	for name, q := range map[string]string{
		"qChanges":            bind(qChanges, "999990", "1000001"),
		"qChangesUpToCurrent": bind(qChangesUpToCurrent, "999990", "1000001"),
		"qStepEnd":            bind(qStepEnd, "999000", "1000001", "1000"),
		"qDeleteSuperseded":   bind(qDeleteSuperseded, "999000", "1000000", "1000001", "1000001"),
		"qDeleteTombstones":   bind(qDeleteTombstones, "999000", "1000000", "1000001"),
	} {
		rows, err := db.QueryContext(ctx, "EXPLAIN "+q)
		if err != nil {
			t.Fatalf("explain %s: %v", name, err)
		}
		cols, _ := rows.Columns()
		var plan []string
		for rows.Next() {
			vals := make([]sql.NullString, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				t.Fatal(err)
			}
			row := map[string]string{}
			var line []string
			for i, c := range cols {
				row[c] = vals[i].String
				line = append(line, c+"="+vals[i].String)
			}
			plan = append(plan, strings.Join(line, " "))
			if row["table"] != "m" && row["type"] == "ALL" {
				t.Errorf("%s reads all of table %s", name, row["table"])
			}
		}
		rows.Close()
		if t.Failed() {
			t.Logf("%s plan:\n\t%s", name, strings.Join(plan, "\n\t"))
		}
	}
}

// A paginated list counts the rest of its range on every page (etcd's
// count) and reads a page in key order: both must read kv_current's
// clustered index by range, which holds no values (schema/009), and each
// returned row's value must be one primary-key lookup of its kv_log row,
// never a scan of kv_log.
func TestCurrentReadsUseTheKeyOrder(t *testing.T) {
	ctx := context.Background()
	_, db := openWithSQL(t)
	// 20 000 keys of 2 KiB values, each with its kv_log row.
	const keys = `SELECT a.d + 10 * b.d + 100 * c.d + 1000 * e.d + 10000 * f.d AS g
				FROM digits a, digits b, digits c, digits e, digits f WHERE f.d < 2`
	for _, q := range []string{
		`CREATE TEMPORARY TABLE digits (d INT NOT NULL)`,
		`INSERT INTO digits VALUES (0), (1), (2), (3), (4), (5), (6), (7), (8), (9)`,
		`INSERT INTO kv_log (rev, sub, k, deleted, create_rev, prev_rev, version, lease, v)
			SELECT g + 2, 0, CONCAT('/registry/pods/default/pod-', LPAD(g, 7, '0')), 0, g + 2, 0, 1, 0, REPEAT('v', 2048)
			FROM (` + keys + `) s`,
		`INSERT INTO kv_current (k, create_rev, mod_rev, mod_sub, version, lease)
			SELECT CONCAT('/registry/pods/default/pod-', LPAD(g, 7, '0')), g + 2, g + 2, 0, 1, 0
			FROM (` + keys + `) s`,
		`ANALYZE TABLE kv_current, kv_log`,
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	bind := func(q string, args ...string) string {
		for _, a := range args {
			q = strings.Replace(q, "?", a, 1)
		}
		return q
	}
	const from, end = "'/registry/pods/default/pod-0010000'", "'/registry/pods0'"
	for name, q := range map[string]string{
		"qCountCurRange":   bind(qCountCurRange, from, end),
		"qCountCurFromKey": bind(qCountCurFromKey, from),
		"qCurrentRange":    bind(qCurrentRange, "0", from, end, "501"),
		"qCurrentFromKey":  bind(qCurrentFromKey, "0", from, "501"),
	} {
		var plan []string
		bad := false
		rows, err := db.QueryContext(ctx, "EXPLAIN "+q)
		if err != nil {
			t.Fatalf("explain %s: %v", name, err)
		}
		cols, _ := rows.Columns()
		for rows.Next() {
			vals := make([]sql.NullString, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				t.Fatal(err)
			}
			row := map[string]string{}
			var line []string
			for i, col := range cols {
				row[col] = vals[i].String
				line = append(line, col+"="+vals[i].String)
			}
			plan = append(plan, strings.Join(line, " "))
			switch row["table"] {
			case "c", "kv_current":
				bad = bad || row["type"] != "range" || row["key"] != "PRIMARY"
			case "v":
				bad = bad || row["type"] != "eq_ref" || row["key"] != "PRIMARY"
			default:
				bad = true
			}
		}
		rows.Close()
		if bad {
			t.Errorf("%s: want a range read of kv_current's primary key (and a primary-key lookup of kv_log per row); plan:\n\t%s",
				name, strings.Join(plan, "\n\t"))
		}
	}
}
