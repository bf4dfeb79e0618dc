package tests

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/loopgate/loopgate/tests/lgtest"
)

// pgSetup is a real PostgreSQL server behind a daemon, with a database
// "app" owned by role "app" whose password only the daemon knows.
type pgSetup struct {
	pg      *lgtest.Postgres
	cfg     string
	daemon  *lgtest.Daemon
	port    string
	appPass string
	socket  string // API unix socket
	apiPort int    // API loopback TCP port
}

func newPGSetup(t *testing.T) *pgSetup { return newPGSetupTB(t) }

func newPGSetupTB(t testing.TB) *pgSetup {
	t.Helper()
	lgtest.RequireRoot(t)
	pg := lgtest.StartPostgres(t)
	appPass := "app-secret-" + strconv.Itoa(os.Getpid())
	pg.MustExec(t, "CREATE ROLE app LOGIN PASSWORD '"+appPass+"'")
	pg.MustExec(t, "CREATE DATABASE app OWNER app")
	dir := t.TempDir()
	passFile := filepath.Join(dir, "app.pass")
	os.WriteFile(passFile, []byte(appPass+"\n"), 0o600)
	s := &pgSetup{pg: pg, port: strconv.Itoa(pg.Port), appPass: appPass}
	s.socket = filepath.Join(lgtest.SharedDir(t), "api.sock")
	s.apiPort = lgtest.FreePort(t)
	s.cfg = lgtest.WriteConfig(t, fmt.Sprintf(`listen: 127.0.0.1:%d
store: %s
bpffs: %s
daemon_cgroup: %s
api: {socket: `+s.socket+`, group: "`+strconv.Itoa(apiGroup)+`", listen: "127.0.0.1:`+strconv.Itoa(s.apiPort)+`"}
approvals: {timeout: 4s}
approvers:
  - {name: root, uid: 0}
  - {name: operator, uid: 1}
  - {name: nobody-approver, uid: 65534}
oidc:
  - {issuer: "https://idp.invalid", audience: loopgate}
targets:
  - name: appdb
    protocol: postgres
    address: %s
    credentials: {user: app, password_file: %s}
workloads:
  - name: agent
    cgroup: %s/agent
  - name: admin
    cgroup: %s/admin
  - name: signed
    cgroup: %s/signed
    token: {issuer: "https://idp.invalid", subject: "repo:acme"}
  - name: stranger
    cgroup: %s/stranger
  - name: careful
    cgroup: %s/careful
  - name: bench
    cgroup: %s/bench
masks:
  - {name: email, detect: email, mode: partial}
  - {name: ssn, columns: ["*.ssn"], mode: redact}
rules:
  - id: agent-app
    workloads: [agent, signed]
    targets: [appdb]
    allow: [read, write, transaction, session, copy]
    approve: [unbounded-write]
    deny: [ddl, drop, privilege, set-role, server-file, copy-program]
    mask: [email, ssn]
    approvers: [root, operator, nobody-approver]
  - id: careful-writes
    workloads: [careful]
    targets: [appdb]
    allow: [read, session, transaction, copy]
    mask: [email]
    approve: [write, unbounded-write]
    approvers: [root, operator]
    approvals_required: 2
  - id: admin-app
    workloads: [admin]
    targets: [appdb]
    allow: ["*"]
    record: async
  - id: bench-app
    workloads: [bench]
    targets: [appdb]
    allow: ["*"]
    mask: [ssn]
    record: async
`, lgtest.FreePort(t), filepath.Join(dir, "loopgate.db"), lgtest.PinDir(t), lgtest.CgroupName(t)+"-daemon",
		pg.Addr(), passFile, lgtest.CgroupName(t), lgtest.CgroupName(t)+"-b", lgtest.CgroupName(t)+"-c", lgtest.CgroupName(t)+"-d", lgtest.CgroupName(t)+"-e", lgtest.CgroupName(t)+"-f"))
	s.daemon = lgtest.StartDaemon(t, s.cfg)
	// Schema, made through loopgate by the admin workload.
	s.psqlOK(t, "admin", `CREATE TABLE users (id int primary key, email text unique, ssn text);
INSERT INTO users VALUES (1, 'ada@example.com', '123-45-6789'), (2, 'bob@example.com', '987-65-4321'), (3, 'cy@example.com', '555-12-3456');
CREATE TABLE t (id int, v text);
INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 10) g;
CREATE TABLE approvals_t (id int);`)
	return s
}

// psql runs the real psql client in a workload against the real database
// address; it knows no password. It returns stdout, stderr, exit code.
func (s *pgSetup) psql(t testing.TB, workload string, env []string, args ...string) (string, string, int) {
	t.Helper()
	full := append([]string{"psql", "-X", "-A", "-t", "-w", "-h", "127.0.0.1", "-p", s.port, "-U", "agent", "-d", "app"}, args...)
	return lgtest.Run(t, s.cfg, workload, append([]string{"PGCONNECT_TIMEOUT=10"}, env...), nil, full...)
}

// startSleeping starts psql as the agent running SELECT pg_sleep(60) and
// returns once the server runs it; stderr collects what psql says.
func (s *pgSetup) startSleeping(t *testing.T) (*exec.Cmd, *strings.Builder) {
	t.Helper()
	cmd := exec.Command(lgtest.Binary(t), "run", "--config", s.cfg, "--workload", "agent", "--",
		"psql", "-X", "-w", "-h", "127.0.0.1", "-p", s.port, "-d", "app", "-c", "SELECT pg_sleep(60)")
	stderr := &strings.Builder{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lgtest.Eventually(t, 10*time.Second, "pg_sleep running", func() bool {
		out, _ := s.pg.Exec(context.Background(), "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(60)' AND state = 'active'")
		return out == "1"
	})
	return cmd, stderr
}

func (s *pgSetup) psqlOK(t testing.TB, workload, sql string) string {
	t.Helper()
	out, stderr, code := s.psql(t, workload, nil, "-v", "ON_ERROR_STOP=1", "-c", sql)
	if code != 0 {
		t.Fatalf("psql %q exited %d: %s", sql, code, stderr)
	}
	return strings.TrimSpace(out)
}

func TestPostgres(t *testing.T) {
	s := newPGSetup(t)

	t.Run("read through loopgate", func(t *testing.T) {
		if got := s.psqlOK(t, "agent", "SELECT count(*) FROM users"); got != "3" {
			t.Errorf("count = %q", got)
		}
		// The session ran as app, whatever user the agent claimed.
		if got := s.psqlOK(t, "agent", "SELECT current_user"); got != "app" {
			t.Errorf("current_user = %q", got)
		}
		// A session the agent ends is recorded as ended well (its end
		// is queued: written within the flusher's linger).
		lgtest.Eventually(t, 10*time.Second, "two sessions recorded as closed", func() bool {
			return len(lgtest.Sessions(t, s.cfg, "--outcome", "closed")) >= 2
		})
		if bad := lgtest.Sessions(t, s.cfg, "--outcome", "error"); len(bad) > 0 {
			t.Errorf("sessions recorded as failed: %+v", bad)
		}
	})

	t.Run("denials", func(t *testing.T) {
		for _, tc := range []struct {
			name, sql, want string
		}{
			{"drop denied", "DROP TABLE t", "loopgate: drop denied by rule agent-app"},
			{"ddl denied", "CREATE TABLE x (a int)", "loopgate: ddl denied by rule agent-app"},
			{"multi-statement denied whole", "SELECT 1; DROP TABLE t", "drop denied"},
			{"comment and case", "/* hi */ dRoP /**/ TABLE \"t\" -- x", "drop denied"},
			{"set role", "SET ROLE postgres", "set-role denied"},
			{"set_config role", "SELECT set_config('role', 'postgres', false)", "set-role denied"},
			{"server file", "SELECT pg_read_file('/etc/passwd')", "server-file denied"},
			{"function wrapping drop", "CREATE FUNCTION f() RETURNS void LANGUAGE sql AS 'DROP TABLE t'", "denied"},
			{"unbounded delete needs approval", "DELETE FROM t", "not approved: approval timed out"},
			{"parse error is unknown", "SELEC 1", "unknown denied"},
			{"privilege", "GRANT SELECT ON t TO PUBLIC", "privilege denied by rule agent-app"},
			{"copy program", "COPY t FROM PROGRAM 'id'", "copy-program denied by rule agent-app"},
			{"procedural is not listed", "DO $$ BEGIN PERFORM 1; END $$", "procedural denied by rule agent-app"},
			{"explain analyze runs the statement", "EXPLAIN ANALYZE DELETE FROM t", "not approved: approval timed out"},
			{"cte that deletes everything", "WITH d AS (DELETE FROM t RETURNING *) SELECT count(*) FROM d", "not approved: approval timed out"},
			{"prepared statement reuse", "PREPARE p AS DELETE FROM t; EXECUTE p", "not approved: approval timed out"},
			{"too long to show an approver", "DELETE FROM t /* " + strings.Repeat("x", 70000) + " */", "too long to show an approver"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				t.Parallel() // the approval cases each wait for the timeout
				_, stderr, code := s.psql(t, "agent", nil, "-v", "VERBOSITY=verbose", "-c", tc.sql)
				if code == 0 || !strings.Contains(stderr, "ERROR:  42501: "+tc.want) && !strings.Contains(stderr, tc.want) {
					t.Errorf("code %d stderr %q, want 42501 %q", code, stderr, tc.want)
				}
				if !strings.Contains(stderr, "42501") {
					t.Errorf("no SQLSTATE 42501 in %q", stderr)
				}
				if strings.Contains(stderr, "PL/pgSQL") {
					t.Errorf("the raising DO block shows through: %q", stderr)
				}
			})
		}
	})
	if got := s.pg.MustExecIn(t, "app", "SELECT count(*) FROM pg_tables WHERE tablename IN ('t', 'x')"); got != "1" {
		t.Errorf("tables t, x: %s exist, want only t", got)
	}

	t.Run("allowed classes", func(t *testing.T) {
		for _, sql := range []string{
			"SELECT count(*) FROM users",        // read
			"UPDATE t SET v = 'w' WHERE id = 1", // write
			"BEGIN; SELECT 1; COMMIT",           // transaction
			"SET work_mem = '8MB'",              // session
			"COPY t FROM STDIN",                 // copy (no rows on stdin)
		} {
			if _, stderr, code := s.psql(t, "agent", nil, "-v", "ON_ERROR_STOP=1", "-c", sql); code != 0 {
				t.Errorf("%q: code %d %s", sql, code, stderr)
			}
		}
	})

	t.Run("denied inside a transaction aborts it like postgres", func(t *testing.T) {
		out, stderr, _ := s.psql(t, "agent", nil, "-c", "BEGIN", "-c", "INSERT INTO t VALUES (100, 'x')", "-c", "DROP TABLE t",
			"-c", "SELECT 1", "-c", "ROLLBACK", "-c", "SELECT count(*) FROM t WHERE id = 100")
		if !strings.Contains(stderr, "drop denied") || !strings.Contains(stderr, "current transaction is aborted") {
			t.Errorf("stderr = %q", stderr)
		}
		if !strings.HasSuffix(strings.TrimSpace(out), "0") {
			t.Errorf("out = %q: the insert should have been rolled back", out)
		}
	})

	t.Run("copy from stdin", func(t *testing.T) {
		var data strings.Builder
		for i := 200; i < 300; i++ {
			fmt.Fprintf(&data, "%d\tcopied\n", i)
		}
		f := filepath.Join(t.TempDir(), "rows.tsv")
		os.WriteFile(f, []byte(data.String()), 0o644)
		s.psqlOK(t, "agent", `\copy t FROM '`+f+`'`)
		if got := s.psqlOK(t, "agent", "SELECT count(*) FROM t WHERE v = 'copied'"); got != "100" {
			t.Errorf("copied rows = %q", got)
		}
	})

	t.Run("masked results", func(t *testing.T) {
		if got := s.psqlOK(t, "agent", "SELECT id, email, ssn FROM users ORDER BY id LIMIT 2"); got != "1|***********.com|[redacted]\n2|***********.com|[redacted]" {
			t.Errorf("agent saw %q", got)
		}
		// Renaming a column does not unmask it (real names come from the
		// catalog), in simple and extended protocol.
		if got := s.psqlOK(t, "agent", "SELECT ssn AS tax, id FROM users u WHERE u.id = 1"); got != "[redacted]|1" {
			t.Errorf("renamed column: %q", got)
		}
		// The admin rule has no masks.
		if got := s.psqlOK(t, "admin", "SELECT email FROM users WHERE id = 1"); got != "ada@example.com" {
			t.Errorf("admin saw %q", got)
		}
		// A value echoed in an error detail is masked too.
		_, stderr, _ := s.psql(t, "agent", nil, "-c", "INSERT INTO users VALUES (9, 'ada@example.com', 'x')")
		if !strings.Contains(stderr, "duplicate key") || strings.Contains(stderr, "ada@example.com") {
			t.Errorf("unique violation shows %q", stderr)
		}
		// And a notification payload.
		out, _, _ := s.psql(t, "agent", nil, "-c", "LISTEN ch", "-c", "NOTIFY ch, 'mail ada@example.com'")
		if !strings.Contains(out+"", "***********.com") && !strings.Contains(out, "****") {
			_, stderr2, _ := s.psql(t, "agent", nil, "-c", "LISTEN ch", "-c", "NOTIFY ch, 'mail ada@example.com'")
			t.Errorf("notification: out %q err %q", out, stderr2)
		}
		if strings.Contains(out, "ada@example.com") {
			t.Errorf("notification payload not masked: %q", out)
		}
	})

	t.Run("masked columns may be selected, not computed on", func(t *testing.T) {
		for _, tc := range []struct{ sql, want string }{
			{"SELECT upper(ssn) FROM users", "column ssn is masked by rule agent-app"},
			{"SELECT ssn || '' FROM users", "column ssn is masked"},
			{"SELECT id FROM users WHERE ssn LIKE '123%'", "column ssn is masked"},
			{"SELECT x FROM (SELECT ssn AS x FROM users) s", "column ssn is masked"},
			{"SELECT id FROM t UNION ALL SELECT ssn::int FROM users", "column ssn is masked"},
			{"UPDATE users SET email = ssn WHERE id = 1", "column ssn is masked"},
			{"SELECT u FROM users u", "a whole-row reference to u"},
			{"SELECT row_to_json(u) FROM users u", "a whole-row reference to u"},
			{"SELECT json_agg(u.*) FROM users u", "a whole row (u.*) used in an expression"},
			{"SELECT x FROM users AS u(a, b, x)", "column aliases in FROM"},
		} {
			_, stderr, code := s.psql(t, "agent", nil, "-c", tc.sql)
			if code == 0 || !strings.Contains(stderr, "42501") && !strings.Contains(stderr, tc.want) || !strings.Contains(stderr, tc.want) {
				t.Errorf("%s: code %d stderr %q, want %q", tc.sql, code, stderr, tc.want)
			}
			if strings.Contains(stderr, "123-45-6789") {
				t.Errorf("%s leaked an SSN: %q", tc.sql, stderr)
			}
		}
		// An error that prints the stored row ("Failing row contains")
		// keeps its message but not its detail.
		_, stderr, code := s.psql(t, "agent", nil, "-c", "UPDATE users SET id = NULL WHERE id = 1")
		if code == 0 || !strings.Contains(stderr, "violates not-null constraint") || !strings.Contains(stderr, "detail withheld") ||
			strings.Contains(stderr, "123-45-6789") {
			t.Errorf("failing row detail: %d %q", code, stderr)
		}
		// Plain columns, renamed or not, stay usable; so do conditions on
		// columns no mask names.
		if got := s.psqlOK(t, "agent", "SELECT * FROM (SELECT id, ssn FROM users) s WHERE id = 3"); got != "3|[redacted]" {
			t.Errorf("subquery star: %q", got)
		}
	})

	t.Run("policy explain classifies SQL like the proxy", func(t *testing.T) {
		for _, tc := range []struct {
			sql, want string
			code      int
		}{
			{"SELECT id, ssn FROM users", "decision: allow\nrule:     agent-app\nclasses:  read", 0},
			{"DROP TABLE t", "decision: deny", 3},
			{"SELECT upper(ssn) FROM users", "column ssn is masked by rule agent-app", 3},
			{"DELETE FROM t", "decision: approve", 0},
		} {
			cmd := exec.Command(lgtest.Binary(t), "policy", "explain", "--config", s.cfg, "--workload", "agent", "--target", "appdb", tc.sql)
			out, _ := cmd.CombinedOutput()
			if cmd.ProcessState.ExitCode() != tc.code || !strings.Contains(string(out), tc.want) {
				t.Errorf("explain %q: exit %d\n%s\nwant exit %d and %q", tc.sql, cmd.ProcessState.ExitCode(), out, tc.code, tc.want)
			}
		}
	})

	t.Run("masked copy", func(t *testing.T) {
		// Column masks apply to COPY rows: columns named by the statement,
		// or by the header line loopgate asks the server for.
		for _, tc := range []struct{ sql, want string }{
			{"COPY users TO STDOUT", "1\t***********.com\t[redacted]\n2\t"},
			{"COPY users (id, ssn) TO STDOUT WITH (FORMAT csv)", "1,\"[redacted]\"\n2,\"[redacted]\"\n3,\"[redacted]\"\n"},
			{"COPY (SELECT id, ssn AS tax FROM users WHERE id < 3 ORDER BY id) TO STDOUT WITH (FORMAT csv, HEADER)", "id,tax\n1,\"[redacted]\"\n2,\"[redacted]\"\n"},
			// email is a column mask by now: the "masked" subtest's rows
			// taught the rule (learned columns), so it is quoted as ssn is.
			{"COPY users TO STDOUT WITH (FORMAT csv, HEADER, DELIMITER ';')", "id;email;ssn\n1;\"***********.com\";\"[redacted]\"\n"},
		} {
			out, stderr, code := s.psql(t, "agent", nil, "-c", tc.sql)
			if code != 0 || !strings.HasPrefix(out, tc.want) || strings.Contains(out, "123-45-6789") || strings.Contains(out, "@example.com") {
				t.Errorf("%s: %d out %q err %q, want prefix %q", tc.sql, code, out, stderr, tc.want)
			}
		}
		// psql's \copy to a file: the file holds masked rows.
		f := filepath.Join(t.TempDir(), "users.tsv")
		os.WriteFile(f, nil, 0o666)
		os.Chmod(filepath.Dir(f), 0o777)
		s.psqlOK(t, "agent", `\copy users to '`+f+`'`)
		if b, _ := os.ReadFile(f); !strings.Contains(string(b), "[redacted]") || strings.Contains(string(b), "123-45-6789") {
			t.Errorf("\\copy wrote %q", b)
		}
		// What cannot be laid out is refused.
		for _, tc := range []struct{ sql, want string }{
			{"COPY (SELECT * FROM users) TO STDOUT", "must name its columns"},
			{"COPY users TO STDOUT WITH (FORMAT binary)", "COPY in binary format cannot apply the column masks"},
			{"COPY (SELECT upper(ssn) FROM users) TO STDOUT", "column ssn is masked"},
			{"SELECT 1; COPY users TO STDOUT", "unless it copies to the client, alone"},
		} {
			_, stderr, code := s.psql(t, "agent", nil, "-c", tc.sql)
			if code == 0 || !strings.Contains(stderr, tc.want) {
				t.Errorf("%s: %d %q, want %q", tc.sql, code, stderr, tc.want)
			}
		}
		// Value detectors scan text COPY output.
		out, stderr, code := s.psql(t, "careful", nil, "-c", "COPY (SELECT id, email FROM users ORDER BY id) TO STDOUT")
		if code != 0 || strings.Contains(out, "@example.com") || !strings.Contains(out, "1\t***********.com") {
			t.Errorf("COPY under detectors: %d out %q err %q", code, out, stderr)
		}
	})

	t.Run("server connections are reused only when clean", func(t *testing.T) {
		pidOf := func(workload, sql string) string {
			t.Helper()
			out, stderr, code := s.psql(t, workload, nil, "-c", sql)
			if code != 0 {
				t.Fatalf("%s: %d %s", sql, code, stderr)
			}
			lines := strings.Split(strings.TrimSpace(out), "\n")
			return lines[len(lines)-1] // psql prints the tags of the statements before
		}
		// A session that leaves state behind and says goodbye.
		first := pidOf("admin", "CREATE TEMP TABLE tmp_left (a int); SET work_mem = '7MB'; PREPARE p1 AS SELECT 1; SELECT pg_backend_pid()")
		// The next session of the workload gets the same server
		// connection, reset: no temp table, no setting, no statement.
		got := pidOf("admin", "SELECT pg_backend_pid() || ' ' || current_setting('work_mem') || ' ' || (SELECT count(*) FROM pg_class WHERE relname = 'tmp_left') || ' ' || (SELECT count(*) FROM pg_prepared_statements)")
		if got != first+" 4MB 0 0" {
			t.Errorf("second session saw %q, want %q (same backend, reset)", got, first+" 4MB 0 0")
		}
		// Another workload never gets it.
		if other := pidOf("agent", "SELECT pg_backend_pid()"); other == first {
			t.Errorf("workload agent got admin's server connection %s", first)
		}
		// A session that ends inside a transaction is not kept: its
		// server connection is closed, which rolls the transaction back.
		if pid := pidOf("admin", "BEGIN; INSERT INTO t VALUES (4242, 'open'); SELECT pg_backend_pid()"); pid != first {
			t.Fatalf("third session got backend %s, want the kept %s", pid, first)
		}
		if pid := pidOf("admin", "SELECT pg_backend_pid()"); pid == first {
			t.Errorf("a server connection left inside a transaction was reused")
		}
		lgtest.Eventually(t, 10*time.Second, "the open transaction rolled back", func() bool {
			return s.pg.MustExecIn(t, "app", "SELECT count(*) FROM t WHERE id = 4242") == "0"
		})
	})

	t.Run("settings that change how SQL reads are refused", func(t *testing.T) {
		// A client encoding whose characters can end in a backslash byte
		// would let E'…\' hide a statement from the classifier.
		_, stderr, code := s.psql(t, "agent", []string{"PGCLIENTENCODING=SJIS"}, "-c", "SELECT 1")
		if code == 0 || !strings.Contains(stderr, "client_encoding=SJIS is not supported") {
			t.Errorf("SJIS session: %d %q", code, stderr)
		}
		// standard_conforming_strings=off would let 'x\' do the same.
		_, stderr, code = s.psql(t, "agent", nil, "-c", "SET standard_conforming_strings = off")
		if code == 0 || !strings.Contains(stderr, "unknown denied by rule agent-app") {
			t.Errorf("SET standard_conforming_strings = off: %d %q", code, stderr)
		}
		_, stderr, code = s.psql(t, "agent", nil, "-c", "SELECT set_config('client_encoding', 'BIG5', false)")
		if code == 0 || !strings.Contains(stderr, "unknown denied by rule agent-app") {
			t.Errorf("set_config client_encoding BIG5: %d %q", code, stderr)
		}
		// A change the classifier cannot see (a function the database
		// already had) ends the session as soon as the server reports it.
		s.pg.MustExecIn(t, "app", `CREATE FUNCTION public.legacy_setup() RETURNS text LANGUAGE sql STABLE
			AS $$ SELECT set_config('standard_conforming_strings', 'off', false) $$`)
		_, stderr, code = s.psql(t, "agent", nil, "-c", "SELECT legacy_setup()", "-c", "SELECT 'after'")
		if code == 0 || !strings.Contains(stderr, "standard_conforming_strings changed to off") {
			t.Errorf("server-side change: %d %q", code, stderr)
		}
		// A login that comes with it (a role default) is refused; the
		// running backends go, so no kept connection is reused.
		t.Cleanup(func() { s.pg.MustExec(t, "ALTER ROLE app RESET standard_conforming_strings") })
		s.pg.MustExec(t, "ALTER ROLE app SET standard_conforming_strings = off")
		s.pg.MustExec(t, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'app'")
		lgtest.Eventually(t, 10*time.Second, "app's backends gone", func() bool {
			return s.pg.MustExec(t, "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app'") == "0"
		})
		_, stderr, code = s.psql(t, "agent", nil, "-c", "SELECT 1")
		if code == 0 || !strings.Contains(stderr, "the server runs with standard_conforming_strings=off") {
			t.Errorf("login with the role default off: %d %q", code, stderr)
		}
		s.pg.MustExec(t, "ALTER ROLE app RESET standard_conforming_strings")
	})

	t.Run("no rule, no session", func(t *testing.T) {
		_, stderr, code := s.psql(t, "stranger", nil, "-c", "SELECT 1")
		if code == 0 || !strings.Contains(stderr, "FATAL:  loopgate: no rule lets workload stranger use target appdb") {
			t.Errorf("code %d stderr %q", code, stderr)
		}
	})

	t.Run("token workload without a valid token", func(t *testing.T) {
		_, stderr, code := s.psql(t, "signed", []string{"PGPASSWORD=not-a-token"}, "-c", "SELECT 1")
		if code == 0 || !strings.Contains(stderr, "FATAL:  loopgate: OIDC token refused") {
			t.Errorf("code %d stderr %q", code, stderr)
		}
	})
}

func TestPostgresClients(t *testing.T) {
	s := newPGSetup(t)
	dsn := "postgres://agent@127.0.0.1:" + s.port + "/app?sslmode=disable&connect_timeout=10"

	t.Run("pgx", func(t *testing.T) {
		var r pgxResult
		client(t, s.cfg, "agent", "", &r, "pgx", dsn)
		if r.Err != "" {
			t.Fatal(r.Err)
		}
		want := pgxResult{Count: 3, Batch: []string{"ok", "42501", r.Batch[2]}, After: 0, PrepDelete: "ok", PrepDrop: "42501", Final: 9}
		if r.Count != want.Count || r.Batch[0] != "ok" || r.Batch[1] != "42501" || r.Batch[2] == "ok" ||
			r.After != 0 || r.PrepDelete != "ok" || r.PrepDrop != "42501" || r.Final != 9 || r.Computed != "42501" || r.ExecDrop != "42501" || r.ExecMasked != "42501" ||
			strings.Join(r.Masked, "|") != "***********.com|[redacted]|0" {
			t.Errorf("pgx saw %+v\nwant %+v (the batch's implicit transaction rolled back, as postgres does)", r, want)
		}
	})

	t.Run("masks do not rely on a driver's habits", func(t *testing.T) {
		var r rawResult
		client(t, s.cfg, "agent", "", &r, "rawpg", "127.0.0.1:"+s.port)
		if r.Err != "" {
			t.Fatal(r.Err)
		}
		for name, seen := range r.Cases {
			t.Logf("%s: %q", name, seen)
			all := strings.Join(seen, "\n")
			if strings.Contains(all, "123-45-6789") || strings.Contains(all, "987-65-4321") || strings.Contains(all, "555-12-3456") {
				t.Errorf("%s: an SSN came through: %q", name, seen)
			}
		}
		if got := strings.Join(r.Cases["no describe"], "\n"); !strings.Contains(got, "need a Describe") {
			t.Errorf("rows without a description: %q, want the session ended with a reason", got)
		}
		if got := strings.Join(r.Cases["portal keeps what it was bound to"], "\n"); !strings.Contains(got, "ERROR 42501 loopgate: drop denied") {
			t.Errorf("re-parsed statement under a bound portal: %q, want the DROP denied", got)
		}
		if got := s.pg.MustExecIn(t, "app", "SELECT count(*) FROM pg_tables WHERE tablename = 't'"); got != "1" {
			t.Errorf("table t gone: %s", got)
		}
		if got := strings.Join(r.Cases["described portal"], "\n"); got != "[redacted]|3" {
			t.Errorf("described portal: %q, want [redacted]|3", got)
		}
	})

	t.Run("a reload changes what a live session masks", func(t *testing.T) {
		// The stranger workload has no rule; give the session a rule that
		// masks emails first, then one that masks ssn too.
		orig, err := os.ReadFile(s.cfg)
		if err != nil {
			t.Fatal(err)
		}
		write := func(masks string) {
			cfg := strings.Replace(string(orig), "rules:\n", "rules:\n  - id: live\n    workloads: [stranger]\n    targets: [appdb]\n    allow: [read, session]\n"+masks, 1)
			if err := os.WriteFile(s.cfg, []byte(cfg), 0o644); err != nil {
				t.Fatal(err)
			}
			s.daemon.Signal(syscall.SIGHUP)
		}
		reloads := strings.Count(s.daemon.Log(), "config reloaded")
		waitReload := func() {
			reloads++
			lgtest.Eventually(t, 10*time.Second, "the reload", func() bool {
				return strings.Count(s.daemon.Log(), "config reloaded") >= reloads
			})
		}
		write("    mask: [email]\n")
		waitReload()
		t.Cleanup(func() {
			os.WriteFile(s.cfg, orig, 0o644)
			s.daemon.Signal(syscall.SIGHUP)
		})
		dir := t.TempDir()
		os.Chmod(dir, 0o777)
		done := make(chan reloadResult, 1)
		go func() {
			var r reloadResult
			client(t, s.cfg, "stranger", "", &r, "pgreload", "127.0.0.1:"+s.port, dir)
			done <- r
		}()
		lgtest.Eventually(t, 20*time.Second, "the first query", func() bool {
			_, err := os.Stat(filepath.Join(dir, "ready"))
			return err == nil
		})
		write("    mask: [email, ssn]\n")
		waitReload()
		os.WriteFile(filepath.Join(dir, "go"), nil, 0o644)
		r := <-done
		if r.Err != "" || strings.Join(r.Before, ",") != "123-45-6789" || strings.Join(r.After, ",") != "[redacted]" {
			t.Errorf("before %q after %q err %q: want the reload's mask on the live session", r.Before, r.After, r.Err)
		}
	})

	t.Run("lib/pq", func(t *testing.T) {
		var r libpqResult
		client(t, s.cfg, "agent", "", &r, "libpq", "host=127.0.0.1 port="+s.port+" dbname=app user=agent sslmode=disable")
		if r.Err != "" || r.Count != 3 || r.Email != "***********.com" || r.Drop != "42501" {
			t.Errorf("lib/pq saw %+v", r)
		}
	})

	t.Run("psycopg2", func(t *testing.T) {
		script := `
import psycopg2, sys
c = psycopg2.connect(host="127.0.0.1", port=` + s.port + `, dbname="app", user="agent")
cur = c.cursor()
cur.execute("SELECT email FROM users WHERE id = %s", (1,))
print(cur.fetchone()[0])
try:
    cur.execute("DROP TABLE t")
except psycopg2.Error as e:
    print(e.pgcode)
    c.rollback()
cur.execute("SELECT count(*) FROM users")
print(cur.fetchone()[0])
`
		out, stderr, code := lgtest.Run(t, s.cfg, "agent", nil, nil, "/usr/bin/python3", "-c", script)
		if code != 0 || strings.Fields(out) == nil || strings.Join(strings.Fields(out), " ") != "***********.com 42501 3" {
			t.Errorf("code %d out %q stderr %q", code, out, stderr)
		}
	})

	t.Run("pgbench", func(t *testing.T) {
		base := []string{"-h", "127.0.0.1", "-p", s.port, "-U", "bench", "app"}
		if out, stderr, code := lgtest.Run(t, s.cfg, "admin", nil, nil, append([]string{"pgbench", "-i", "-s", "1", "-q"}, base...)...); code != 0 {
			t.Fatalf("pgbench -i: %d %s %s", code, out, stderr)
		}
		for _, mode := range []string{"simple", "extended", "prepared"} {
			out, stderr, code := lgtest.Run(t, s.cfg, "admin", nil, nil, append([]string{"pgbench", "-c", "2", "-t", "50", "-M", mode}, base...)...)
			if code != 0 || !strings.Contains(out, "number of transactions actually processed: 100/100") {
				t.Errorf("pgbench -M %s: code %d\n%s\n%s", mode, code, out, stderr)
			}
		}
	})

	t.Run("cancel with a signal", func(t *testing.T) {
		cmd, stderr := s.startSleeping(t)
		start := time.Now()
		cmd.Process.Signal(syscall.SIGINT)
		cmd.Wait()
		if !strings.Contains(stderr.String(), "canceling statement due to user request") {
			t.Errorf("psql stderr %q", stderr.String())
		}
		if time.Since(start) > 10*time.Second {
			t.Errorf("cancel took %s", time.Since(start))
		}
	})

	t.Run("recorded", func(t *testing.T) {
		out, err := exec.Command(lgtest.Binary(t), "sessions", "export", "--config", s.cfg, "--format", "jsonl").Output()
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(out), `"kind":"command","text":"DROP TABLE t"`) ||
			!strings.Contains(string(out), `"decision":"deny","rule_id":"agent-app"`) {
			t.Errorf("denied DROP not recorded with its rule")
		}
		found := false
		for _, line := range strings.Split(string(out), "\n") {
			var ev struct {
				Kind, Text, Tag, Decision string
				RuleID                    string `json:"rule_id"`
				Rows                      int64
			}
			json.Unmarshal([]byte(line), &ev)
			if ev.Kind == "result" && ev.Text == "SELECT count(*) FROM users" && ev.Tag == "SELECT 1" && ev.Rows == 1 &&
				ev.Decision == "allow" && ev.RuleID == "agent-app" {
				found = true
			}
		}
		if !found {
			t.Errorf("no result record with text, tag, rows and rule for psycopg2's SELECT count(*)")
		}
		if out, err := exec.Command(lgtest.Binary(t), "audit", "verify", "--config", s.cfg).CombinedOutput(); err != nil {
			t.Errorf("audit verify: %v %s", err, out)
		}
	})
}

// TestPostgresShutdown: stopping the daemon ends a session waiting on a
// long statement (on the event loop, nothing blocks to interrupt), the agent
// is told, and the session is recorded as shut down.
func TestPostgresShutdown(t *testing.T) {
	s := newPGSetup(t)
	cmd, stderr := s.startSleeping(t)
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	start := time.Now()
	s.daemon.Stop(syscall.SIGTERM) // drains 2 s, then cancels; fails the test if the daemon hangs
	select {
	case err := <-exited:
		if err == nil || !strings.Contains(stderr.String(), "loopgate: session ended: daemon shutting down") {
			t.Errorf("psql: %v %q, want it told the session ended", err, stderr.String())
		}
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		t.Fatal("psql still waiting 20 s after the daemon stopped")
	}
	t.Logf("session ended %v after SIGTERM: %s", time.Since(start), strings.TrimSpace(stderr.String()))
	if got := lgtest.Sessions(t, s.cfg, "--outcome", "shutdown"); len(got) != 1 {
		t.Errorf("%d sessions recorded as shut down, want 1", len(got))
	}
	if out, err := exec.Command(lgtest.Binary(t), "audit", "verify", "--config", s.cfg).CombinedOutput(); err != nil {
		t.Errorf("audit verify: %v\n%s", err, out)
	}
}
