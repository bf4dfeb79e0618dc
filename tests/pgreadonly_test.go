package tests

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/loopgate/loopgate/tests/lgtest"
)

// roSchema is made by the superuser as role app: a table, functions and
// views that write while looking like reads.
const roSchema = `SET ROLE app;
CREATE TABLE ro_t (id int);
INSERT INTO ro_t SELECT generate_series(1, 5);
CREATE SEQUENCE ro_seq;
CREATE FUNCTION f() RETURNS int LANGUAGE sql VOLATILE AS 'DELETE FROM ro_t RETURNING 1';
CREATE FUNCTION "F"() RETURNS int LANGUAGE sql VOLATILE AS 'DELETE FROM ro_t RETURNING 1';
CREATE FUNCTION f_upd() RETURNS int LANGUAGE plpgsql AS $$BEGIN UPDATE ro_t SET id = id + 100; RETURN 1; END$$;
CREATE FUNCTION f_ins() RETURNS int LANGUAGE plpgsql AS $$BEGIN INSERT INTO ro_t VALUES (99); RETURN 1; END$$;
CREATE FUNCTION f_stable() RETURNS int LANGUAGE sql STABLE AS 'SELECT count(*)::int FROM ro_t';
CREATE FUNCTION f_rw() RETURNS text LANGUAGE sql STABLE AS $$SELECT set_config('default_transaction_read_only', 'off', false)$$;
CREATE FUNCTION op_del(int, int) RETURNS int LANGUAGE sql VOLATILE AS 'DELETE FROM ro_t RETURNING 1';
CREATE OPERATOR === (leftarg = int, rightarg = int, function = op_del);
CREATE VIEW v AS SELECT f_ins() AS x;
CREATE VIEW v2 AS SELECT x FROM v;
CREATE VIEW vop AS SELECT 1 === 1 AS x;
CREATE DOMAIN d_del AS int CHECK (op_del(VALUE, 1) > 0);
CREATE TABLE rls_t (a int);
ALTER TABLE rls_t ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
CREATE POLICY p ON rls_t USING (f() > 0);
CREATE SCHEMA s;
CREATE FUNCTION s.g() RETURNS int LANGUAGE sql VOLATILE AS 'DELETE FROM public.ro_t RETURNING 1';`

// roState is what a read-only session must leave alone.
const roState = `SELECT (SELECT count(*) FROM ro_t) || ',' || (SELECT sum(id) FROM ro_t) || ',' ||
	(SELECT last_value || ',' || is_called FROM ro_seq) || ',' || (SELECT count(*) FROM pg_largeobject_metadata)`

// roRestore puts back roState after a case that changed it.
const roRestore = `DELETE FROM ro_t; INSERT INTO ro_t SELECT generate_series(1, 5); SELECT setval('ro_seq', 1, false);
	SELECT lo_unlink(oid) FROM pg_largeobject_metadata`

// TestPostgresReadOnly runs statements that write while looking like
// reads, under a rule that allows only read, transaction and session: the
// catalog (function volatility, views) or the server's read-only session
// must stop each, and the data must be unchanged after each.
func TestPostgresReadOnly(t *testing.T) {
	lgtest.RequireRoot(t)
	pg := lgtest.StartPostgres(t)
	appPass := "app-secret-" + strconv.Itoa(os.Getpid())
	pg.MustExec(t, "CREATE ROLE app LOGIN PASSWORD '"+appPass+"'")
	pg.MustExec(t, "CREATE DATABASE app OWNER app")
	pg.MustExecIn(t, "app", roSchema)
	dir := t.TempDir()
	passFile := filepath.Join(dir, "app.pass")
	os.WriteFile(passFile, []byte(appPass+"\n"), 0o600)
	cfg := lgtest.WriteConfig(t, fmt.Sprintf(`listen: 127.0.0.1:%d
store: %s
bpffs: %s
daemon_cgroup: %s
targets:
  - name: appdb
    protocol: postgres
    address: %s
    credentials: {user: app, password_file: %s}
workloads:
  - name: reader
    cgroup: %s/reader
rules:
  - id: ro
    workloads: [reader]
    targets: [appdb]
    allow: [read, transaction, session]
`, lgtest.FreePort(t), filepath.Join(dir, "loopgate.db"), lgtest.PinDir(t), lgtest.CgroupName(t)+"-daemon",
		pg.Addr(), passFile, lgtest.CgroupName(t)))
	lgtest.StartDaemon(t, cfg)
	port := strconv.Itoa(pg.Port)
	want := pg.MustExecIn(t, "app", roState)
	script := filepath.Join(dir, "script.sql")

	const (
		ok       = "ok"       // allowed and run, read only
		denied   = "denied"   // loopgate refused it (42501)
		readOnly = "readonly" // the server refused it (25006)
		ended    = "ended"    // loopgate ended the session
	)
	tests := []struct {
		name     string
		sql      []string // one psql -c each (one Query each)
		extended bool     // through pgbench -M extended (Parse/Bind/Execute)
		want     string
		msg      string // in stderr
	}{
		{name: "volatile sql function", sql: []string{"SELECT f()"}, want: denied, msg: "function public.f is VOLATILE sql"},
		{name: "function in FROM", sql: []string{"SELECT * FROM f()"}, want: denied},
		{name: "function in WHERE", sql: []string{"SELECT 1 WHERE f() > 0"}, want: denied},
		{name: "function in recursive CTE", sql: []string{"WITH RECURSIVE r AS (SELECT f()) SELECT * FROM r"}, want: denied},
		{name: "function over generate_series", sql: []string{"SELECT f() FROM generate_series(1,1)"}, want: denied},
		{name: "qualified", sql: []string{"SELECT public.f()"}, want: denied},
		{name: "quoted upper case", sql: []string{`SELECT "F"()`}, want: denied, msg: "public.F"},
		{name: "other schema", sql: []string{"SELECT s.g()"}, want: denied},
		{name: "other schema on search_path", sql: []string{"SET search_path = s, public", "SELECT g()"}, want: denied},
		{name: "scalar subquery", sql: []string{"SELECT (SELECT f())"}, want: denied},
		{name: "IN subquery", sql: []string{"SELECT * FROM ro_t WHERE id IN (SELECT f())"}, want: denied},
		{name: "array subquery plpgsql", sql: []string{"SELECT ARRAY(SELECT f_upd())"}, want: denied},
		{name: "plpgsql update", sql: []string{"SELECT f_upd()"}, want: denied, msg: "plpgsql"},
		{name: "view over inserting function", sql: []string{"SELECT x FROM v"}, want: denied, msg: "public.f_ins"},
		{name: "qualified view", sql: []string{"SELECT * FROM public.v"}, want: denied},
		{name: "view over view", sql: []string{"SELECT x FROM v2"}, want: denied},
		{name: "view over operator", sql: []string{"SELECT x FROM vop"}, want: denied},
		{name: "explain analyze", sql: []string{"EXPLAIN ANALYZE SELECT f()"}, want: denied},
		{name: "copy query", sql: []string{"COPY (SELECT f()) TO STDOUT"}, want: denied},
		{name: "prepare", sql: []string{"PREPARE p AS SELECT f()"}, want: denied},
		{name: "cursor", sql: []string{"BEGIN", "DECLARE c CURSOR FOR SELECT f()", "FETCH c", "COMMIT"}, want: denied},
		{name: "set read-write then call", sql: []string{"SET default_transaction_read_only = off; SELECT f()"}, want: denied},
		{name: "set read-write", sql: []string{"SET default_transaction_read_only = off"}, want: denied, msg: "read-only"},
		{name: "set read-write to default", sql: []string{"SET default_transaction_read_only TO DEFAULT"}, want: denied},
		{name: "reset read-only", sql: []string{"RESET default_transaction_read_only"}, want: denied},
		{name: "set transaction_read_only", sql: []string{"BEGIN", "SET transaction_read_only = off", "COMMIT"}, want: denied},
		{name: "set local", sql: []string{"BEGIN", "SET LOCAL default_transaction_read_only = off", "COMMIT"}, want: denied},
		{name: "begin read write", sql: []string{"BEGIN READ WRITE; SELECT f(); COMMIT"}, want: denied},
		{name: "begin read write alone", sql: []string{"BEGIN READ WRITE", "SELECT 1::d_del", "COMMIT"}, want: denied},
		{name: "start transaction read write", sql: []string{"START TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ WRITE"}, want: denied},
		{name: "set transaction read write", sql: []string{"BEGIN", "SET TRANSACTION READ WRITE", "COMMIT"}, want: denied},
		{name: "session characteristics", sql: []string{"SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE"}, want: denied},
		{name: "set_config read-write", sql: []string{"SELECT set_config('default_transaction_read_only', 'off', false)"}, want: denied},
		{name: "set_config transaction", sql: []string{"SELECT set_config('transaction_read_only', 'off', true)"}, want: denied},
		{name: "logical message", sql: []string{"SELECT pg_logical_emit_message(true, 'x', 'y')"}, want: denied},
		{name: "txid_current", sql: []string{"SELECT txid_current()"}, want: denied},
		{name: "pg_current_xact_id", sql: []string{"SELECT pg_current_xact_id()"}, want: denied},
		{name: "try advisory lock", sql: []string{"SELECT pg_try_advisory_lock(1)"}, want: denied},
		{name: "advisory lock shared", sql: []string{"SELECT pg_advisory_lock_shared(1)"}, want: denied},
		{name: "nextval", sql: []string{"SELECT nextval('ro_seq')"}, want: denied},
		{name: "setval", sql: []string{"SELECT setval('ro_seq', 5)"}, want: denied},
		{name: "notify", sql: []string{"SELECT pg_notify('c', 'x')"}, want: denied},
		{name: "large object", sql: []string{"SELECT lo_create(0)"}, want: denied},
		{name: "terminate", sql: []string{"SELECT pg_terminate_backend(0)"}, want: denied},
		{name: "cancel", sql: []string{"SELECT pg_cancel_backend(0)"}, want: denied},
		{name: "stats reset", sql: []string{"SELECT pg_stat_reset()"}, want: denied},
		{name: "user operator", sql: []string{"SELECT 1 === 1"}, want: denied, msg: "operator === runs function public.op_del"},
		{name: "qualified operator", sql: []string{"SELECT 1 OPERATOR(public.===) 1"}, want: denied},
		{name: "row security policy", sql: []string{"SELECT count(*) FROM rls_t"}, want: denied, msg: "public.f is VOLATILE"},
		{name: "domain check the catalog misses", sql: []string{"SELECT 1::d_del"}, want: readOnly},
		{name: "domain check after discard all", sql: []string{"DISCARD ALL", "SELECT 1::d_del"}, want: readOnly},
		{name: "domain check after begin", sql: []string{"BEGIN", "SELECT 1::d_del", "COMMIT"}, want: readOnly},
		{name: "stable function turning read-only off", sql: []string{"SELECT f_rw()", "SELECT 1::d_del"}, want: ended},
		{name: "extended volatile", sql: []string{"SELECT f();"}, extended: true, want: denied},
		{name: "extended in FROM", sql: []string{"SELECT * FROM f();"}, extended: true, want: denied},
		{name: "extended view", sql: []string{"SELECT x FROM v;"}, extended: true, want: denied},
		{name: "extended operator", sql: []string{"SELECT 1 === 1;"}, extended: true, want: denied},
		{name: "extended domain check", sql: []string{"SELECT 1::d_del;"}, extended: true, want: readOnly},
		{name: "extended txid", sql: []string{"SELECT txid_current();"}, extended: true, want: denied},
		{name: "stable function", sql: []string{"SELECT f_stable()"}, want: ok},
		{name: "plain read", sql: []string{"SELECT count(*) FROM ro_t"}, want: ok},
		{name: "read-only transaction", sql: []string{"BEGIN READ ONLY", "SELECT now()", "COMMIT"}, want: ok},
		{name: "builtins", sql: []string{"SELECT lower('X'), random() >= 0, clock_timestamp() IS NOT NULL"}, want: ok},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr string
			var code int
			if tt.extended {
				os.WriteFile(script, []byte(strings.Join(tt.sql, "\n")+"\n"), 0o644)
				stdout, stderr, code = lgtest.Run(t, cfg, "reader", []string{"PGCONNECT_TIMEOUT=10"}, nil,
					"pgbench", "-n", "-t", "1", "-M", "extended", "-f", script, "-h", "127.0.0.1", "-p", port, "-U", "agent", "app")
			} else {
				args := []string{"psql", "-X", "-A", "-t", "-w", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", port, "-U", "agent", "-d", "app"}
				for _, s := range tt.sql {
					args = append(args, "-c", s)
				}
				stdout, stderr, code = lgtest.Run(t, cfg, "reader", []string{"PGCONNECT_TIMEOUT=10"}, nil, args...)
			}
			if got := pg.MustExecIn(t, "app", roState); got != want {
				t.Errorf("data changed: %s, was %s", got, want)
				pg.MustExecIn(t, "app", roRestore)
			}
			switch tt.want {
			case ok:
				if code != 0 {
					t.Errorf("exit %d: %s", code, stderr)
				}
			case denied:
				if code == 0 || !strings.Contains(stderr, "loopgate:") || strings.Contains(stderr, "read-only transaction") {
					t.Errorf("want a loopgate denial; exit %d, stdout %q, stderr %s", code, stdout, stderr)
				}
			case readOnly:
				if code == 0 || !strings.Contains(stderr, "read-only transaction") {
					t.Errorf("want the server's read-only error; exit %d, stdout %q, stderr %s", code, stdout, stderr)
				}
			case ended:
				if code == 0 || !strings.Contains(stderr, "loopgate:") {
					t.Errorf("want the session ended by loopgate; exit %d, stdout %q, stderr %s", code, stdout, stderr)
				}
			}
			if tt.msg != "" && !strings.Contains(stderr, tt.msg) {
				t.Errorf("stderr does not say %q: %s", tt.msg, stderr)
			}
		})
	}
	// The record says which layer stopped a statement.
	out, err := exec.Command(lgtest.Binary(t), "sessions", "export", "--config", cfg, "--format", "jsonl").Output()
	if err != nil {
		t.Fatalf("export: %v", err)
	}
	for _, want := range []string{"(classified procedural: function public.f is VOLATILE sql)", "server read-only: 25006: ",
		"the session is read-only under rule ro: READ WRITE could make it read-write", "default_transaction_read_only changed to off"} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("the record does not say %q", want)
		}
	}
}
