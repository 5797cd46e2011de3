package mysql

import (
	"reflect"
	"regexp"
	"testing"

	"github.com/kvsql/kvsql/backends"
)

// TestSplitStatements pins the statement splitter on what MySQL's lexer
// reads as one token: a ';' inside a string, a quoted identifier or a
// comment does not end a statement.
func TestSplitStatements(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, body string
		want       []string
	}{
		{"one per line", "CREATE TABLE a (x INT);\nCREATE TABLE b (y INT);\n",
			[]string{"CREATE TABLE a (x INT)", "CREATE TABLE b (y INT)"}},
		{"two on one line", "SELECT 1; SELECT 2;", []string{"SELECT 1", "SELECT 2"}},
		{"no final semicolon", "SELECT 1;\nSELECT 2\n", []string{"SELECT 1", "SELECT 2"}},
		{"semicolon ending a line inside a string", "INSERT INTO t VALUES ('a;\nb');\nSELECT 1;",
			[]string{"INSERT INTO t VALUES ('a;\nb')", "SELECT 1"}},
		{"backslash-escaped quote", "INSERT INTO t VALUES ('it\\'s;\n');\nSELECT 1;",
			[]string{"INSERT INTO t VALUES ('it\\'s;\n')", "SELECT 1"}},
		{"doubled quote", "INSERT INTO t VALUES ('it''s;\n');", []string{"INSERT INTO t VALUES ('it''s;\n')"}},
		{"escaped backslash before the closing quote", "INSERT INTO t VALUES ('a\\\\');\nSELECT ';';",
			[]string{"INSERT INTO t VALUES ('a\\\\')", "SELECT ';'"}},
		{"double-quoted string", "INSERT INTO t VALUES (\"x;\n\\\"y\");", []string{"INSERT INTO t VALUES (\"x;\n\\\"y\")"}},
		{"backtick identifier", "CREATE TABLE `a;\nb` (`c``;` INT);", []string{"CREATE TABLE `a;\nb` (`c``;` INT)"}},
		{"dash comment line", "-- it's a comment;\nSELECT 1;", []string{"SELECT 1"}},
		{"dash comment after a statement", "SELECT 1; -- done;\nSELECT 2;", []string{"SELECT 1", "SELECT 2"}},
		{"hash comment", "# setup; it's\nSELECT 1; # trailing;\n", []string{"SELECT 1"}},
		{"two dashes without a space are minus minus", "SELECT 5--1;", []string{"SELECT 5--1"}},
		{"dashes inside a string", "INSERT INTO t VALUES ('a\n-- b;\n');", []string{"INSERT INTO t VALUES ('a\n-- b;\n')"}},
		{"block comment", "SELECT /* a;\n b's */ 1;\nSELECT 2;", []string{"SELECT   1", "SELECT 2"}},
		{"executable comment kept", "CREATE TABLE t (x INT) /*!50100 ENGINE=InnoDB */;",
			[]string{"CREATE TABLE t (x INT) /*!50100 ENGINE=InnoDB */"}},
		{"only comments", "-- nothing here;\n/* nor; here */\n", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if got := splitStatements(tc.body); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("splitStatements(%q)\n got %q\nwant %q", tc.body, got, tc.want)
			}
		})
	}
}

// TestSplitSchemaFiles checks the splitter on the dialect's own schema:
// every statement is SQL (no comment text left, none empty).
func TestSplitSchemaFiles(t *testing.T) {
	t.Parallel()
	ms, err := backends.Migrations(schemaFS, "schema")
	if err != nil {
		t.Fatal(err)
	}
	keyword := regexp.MustCompile(`^(CREATE|ALTER|INSERT|UPDATE|DELETE|DROP) `)
	for _, m := range ms {
		stmts := splitStatements(m.SQL)
		if len(stmts) == 0 {
			t.Errorf("%s: no statements", m.Name)
		}
		for _, st := range stmts {
			if !keyword.MatchString(st) || regexp.MustCompile(`--|/\*|;`).MatchString(st) {
				t.Errorf("%s: statement %q", m.Name, st)
			}
		}
	}
}
