package tests

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/loopgate/loopgate/tests/lgtest"
)

// TestPostgresDynamicRoles: each session logs in as a role created for it
// (VALID UNTIL now+ttl, member of app_rw), dropped when the session ends,
// and the session is ended when the role expires.
func TestPostgresDynamicRoles(t *testing.T) {
	lgtest.RequireRoot(t)
	pg := lgtest.StartPostgres(t)
	pg.MustExec(t, "CREATE ROLE app_rw NOLOGIN")
	pg.MustExec(t, "CREATE DATABASE app")
	pg.MustExecIn(t, "app", "CREATE TABLE items (id int); INSERT INTO items VALUES (1), (2); GRANT SELECT ON items TO app_rw")
	dir := t.TempDir()
	passFile := filepath.Join(dir, "admin.pass")
	os.WriteFile(passFile, []byte(pg.SuperPassword), 0o600)
	port := strconv.Itoa(pg.Port)
	cfg := lgtest.WriteConfig(t, fmt.Sprintf(`listen: 127.0.0.1:%d
store: %s
bpffs: %s
daemon_cgroup: %s
targets:
  - name: appdb
    protocol: postgres
    address: %s
    credentials: {user: postgres, password_file: %s, dynamic: {role: app_rw, ttl: 10s}}
workloads:
  - {name: agent, cgroup: %s}
rules:
  - {id: r, workloads: [agent], targets: [appdb], allow: [read, session]}
`, lgtest.FreePort(t), filepath.Join(dir, "lg.db"), lgtest.PinDir(t), lgtest.CgroupName(t)+"-daemon", pg.Addr(), passFile, lgtest.CgroupName(t)))
	lgtest.StartDaemon(t, cfg)
	psql := func(sql string) (string, string, int) {
		return lgtest.Run(t, cfg, "agent", nil, nil, "psql", "-X", "-A", "-t", "-w", "-h", "127.0.0.1", "-p", port, "-d", "app", "-c", sql)
	}
	tempRoles := func() string {
		out, _ := pg.Exec(context.Background(), "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'lg\\_%'")
		return out
	}

	out, stderr, code := psql("SELECT current_user, pg_has_role('app_rw', 'member'), (SELECT count(*) FROM items)")
	f := strings.Split(strings.TrimSpace(out), "|")
	if code != 0 || len(f) != 3 || !strings.HasPrefix(f[0], "lg_") || f[1] != "t" || f[2] != "2" {
		t.Fatalf("code %d out %q err %q", code, out, stderr)
	}
	lgtest.Eventually(t, 10*time.Second, "session role dropped", func() bool { return tempRoles() == "0" })

	start := time.Now()
	_, stderr, code = psql("SELECT pg_sleep(30)")
	took := time.Since(start)
	if code == 0 || !strings.Contains(stderr, "terminating connection due to administrator command") {
		t.Errorf("expired session: code %d stderr %q", code, stderr)
	}
	if took > 25*time.Second {
		t.Errorf("expired session lasted %s (ttl 10s)", took)
	}
	lgtest.Eventually(t, 10*time.Second, "expired role dropped", func() bool { return tempRoles() == "0" })
	var found bool
	lgtest.Eventually(t, 10*time.Second, "expiry recorded", func() bool {
		for _, x := range lgtest.Sessions(t, cfg) {
			if strings.Contains(x.Error, "expired") {
				found = true
			}
		}
		return found
	})
}

// TestPostgresDynamicRolesCreateRoleOnly: an administrator with CREATEROLE
// and nothing else (no superuser, no pg_signal_backend) ends an expired
// session as the server does and drops its role, and a session role an
// earlier daemon left behind (expired) is dropped too: none accumulate.
func TestPostgresDynamicRolesCreateRoleOnly(t *testing.T) {
	lgtest.RequireRoot(t)
	pg := lgtest.StartPostgres(t)
	pg.MustExec(t, "CREATE ROLE lgadmin LOGIN CREATEROLE PASSWORD 'admin-secret'")
	pg.MustExec(t, "CREATE ROLE app_rw NOLOGIN")
	pg.MustExec(t, "CREATE DATABASE app")
	pg.MustExecIn(t, "app", "CREATE TABLE items (id int); INSERT INTO items VALUES (1); GRANT SELECT ON items TO app_rw")
	// Left by an earlier daemon: expired, never dropped.
	pg.MustExec(t, "CREATE ROLE lg_00112233aabbccdd LOGIN VALID UNTIL '2001-01-01' IN ROLE app_rw")
	dir := t.TempDir()
	passFile := filepath.Join(dir, "admin.pass")
	os.WriteFile(passFile, []byte("admin-secret"), 0o600)
	port := strconv.Itoa(pg.Port)
	cfg := lgtest.WriteConfig(t, fmt.Sprintf(`listen: 127.0.0.1:%d
store: %s
bpffs: %s
daemon_cgroup: %s
targets:
  - name: appdb
    protocol: postgres
    address: %s
    credentials: {user: lgadmin, password_file: %s, dynamic: {role: app_rw, ttl: 10s}}
workloads:
  - {name: agent, cgroup: %s}
rules:
  - {id: r, workloads: [agent], targets: [appdb], allow: [read, session]}
`, lgtest.FreePort(t), filepath.Join(dir, "lg.db"), lgtest.PinDir(t), lgtest.CgroupName(t)+"-daemon", pg.Addr(), passFile, lgtest.CgroupName(t)))
	d := lgtest.StartDaemon(t, cfg)
	tempRoles := func() string {
		out, _ := pg.Exec(context.Background(), "SELECT string_agg(rolname, ',') FROM pg_roles WHERE rolname LIKE 'lg\\_%'")
		return out
	}
	start := time.Now()
	_, stderr, code := lgtest.Run(t, cfg, "agent", nil, nil, "psql", "-X", "-A", "-t", "-w", "-h", "127.0.0.1", "-p", port, "-d", "app", "-c", "SELECT pg_sleep(30)")
	if code == 0 || !strings.Contains(stderr, "terminating connection due to administrator command") {
		t.Errorf("expired session: code %d stderr %q, want the server's termination", code, stderr)
	}
	if took := time.Since(start); took > 25*time.Second {
		t.Errorf("expired session lasted %s (ttl 10s)", took)
	}
	lgtest.Eventually(t, 15*time.Second, "no session role left", func() bool { return tempRoles() == "" })
	if log := d.Log(); strings.Contains(log, "not dropped") || strings.Contains(log, "lacks") {
		t.Errorf("daemon log:\n%s", log)
	}
}
