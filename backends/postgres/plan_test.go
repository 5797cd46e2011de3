package postgres

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
)

// The watch tailer reads a few new revisions after every commit, and a
// watch replays history through qChanges: neither may scan kv_log as a
// whole. The planner cannot tell how few rows a revision range holds, and
// once chose a merge join that sorted all of kv_log on every read. With a
// long history (a million revisions) and fresh statistics, every plan the
// statements can get (generic, as pgx's cached statements end up with,
// and custom) must reach kv_log through its indexes only. Without the
// LATERAL prev join the generic plan of qChangesUpToCurrent fails this.
func TestLogStatementsUseIndexes(t *testing.T) {
	ctx := context.Background()
	_, c := openWithConn(t)
	// 1 000 000 revisions over 1000 keys, each row pointing at the key's
	// previous revision, as a long-lived cluster's log looks.
	for _, q := range []string{
		`INSERT INTO kv_log (rev, sub, key, deleted, create_rev, prev_rev, version, lease, value)
			SELECT g, 0, convert_to('/registry/k' || (g % 1000), 'UTF8'), false, 2, CASE WHEN g > 1001 THEN g - 1000 ELSE 0 END,
				1, 0, convert_to(repeat('v', 20), 'UTF8')
			FROM generate_series(2, 1 + 1000000) g`,
		`UPDATE kv_meta SET rev = 1 + 1000000 WHERE id = 1`,
		`ANALYZE kv_log`,
	} {
		if _, err := c.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	// Compaction's cleanup steps must cost what they remove, not the
	// whole log: each finds the older versions of its rows' keys through
	// kv_log_key_rev.
	statements := []struct{ name, q, types, args string }{
		{"qChanges", qChanges, "bigint, bigint", "999990, 1000001"},
		{"qChangesUpToCurrent", qChangesUpToCurrent, "bigint, bigint", "999990, 1000001"},
		{"qStepEnd", qStepEnd, "bigint, bigint, integer", "999000, 1000001, 1000"},
		{"qDeleteSuperseded", qDeleteSuperseded, "bigint, bigint, bigint", "1000001, 999000, 1000000"},
		{"qDeleteTombstones", qDeleteTombstones, "bigint, bigint, bigint", "1000001, 999000, 1000000"},
		// Latest reads fetch each returned row's value from kv_log by its
		// primary key (schema/009).
		{"qCurrentRange", qCurrentRange, "boolean, bytea, bytea, bigint", `false, '\x2f', '\x30', 501`},
		{"qGetLatestMany", qGetLatestMany, "bytea[], boolean", `ARRAY['\x2f726567697374727920'::bytea, '\x2f'::bytea], false`},
		{"qCurrentMany", qCurrentMany, "bytea[]", `ARRAY['\x2f'::bytea]`},
	}
	for _, st := range statements {
		name, q := st.name, st.q
		for _, mode := range []string{"force_generic_plan", "force_custom_plan"} {
			if _, err := c.Exec(ctx, "SET plan_cache_mode = "+mode); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Exec(ctx, "PREPARE s("+st.types+") AS "+q); err != nil {
				t.Fatalf("prepare %s: %v", name, err)
			}
			var plan string
			if err := c.QueryRow(ctx, "EXPLAIN (FORMAT JSON) EXECUTE s("+st.args+")").Scan(&plan); err != nil {
				t.Fatalf("explain %s: %v", name, err)
			}
			if _, err := c.Exec(ctx, "DEALLOCATE s"); err != nil {
				t.Fatal(err)
			}
			var nodes []map[string]any
			if err := json.Unmarshal([]byte(plan), &nodes); err != nil {
				t.Fatal(err)
			}
			if scans := seqScans(nodes[0]["Plan"].(map[string]any), "kv_log"); scans > 0 {
				t.Errorf("%s (%s) scans all of kv_log %d time(s) per read:\n%s", name, mode, scans, indent(plan))
			}
		}
	}
}

// seqScans counts the sequential scans of table in a JSON plan tree.
func seqScans(node map[string]any, table string) int {
	n := 0
	if node["Node Type"] == "Seq Scan" && node["Relation Name"] == table {
		n++
	}
	if kids, ok := node["Plans"].([]any); ok {
		for _, k := range kids {
			n += seqScans(k.(map[string]any), table)
		}
	}
	return n
}

func indent(s string) string { return "\t" + strings.ReplaceAll(s, "\n", "\n\t") }
