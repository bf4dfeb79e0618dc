package tests

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/loopgate/loopgate/tests/lgtest"
)

// TestPostgresUpstreamTLS: loopgate verifies the target's certificate and
// never falls back to plaintext.
func TestPostgresUpstreamTLS(t *testing.T) {
	lgtest.RequireRoot(t)
	ca := lgtest.NewCA(t, "target CA")
	crt, key := ca.Issue(t, "db.internal", "127.0.0.1")
	tlsPG := lgtest.StartPostgres(t, lgtest.WithTLS(crt, key))
	plainPG := lgtest.StartPostgres(t)
	other := lgtest.NewCA(t, "someone else")
	ocrt, okey := other.Issue(t, "db.internal", "127.0.0.1")
	strangerPG := lgtest.StartPostgres(t, lgtest.WithTLS(ocrt, okey))
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, b, 0o600)
		return p
	}
	caFile := write("ca.pem", ca.PEM)
	tlsPass, plainPass := write("tls.pass", []byte(tlsPG.SuperPassword)), write("plain.pass", []byte(plainPG.SuperPassword))
	strangerPass := write("stranger.pass", []byte(strangerPG.SuperPassword))
	cfg := lgtest.WriteConfig(t, fmt.Sprintf(`listen: 127.0.0.1:%d
store: %s
bpffs: %s
daemon_cgroup: %s
targets:
  - {name: good, protocol: postgres, address: %s, credentials: {user: postgres, password_file: %s},
     tls: {mode: verify-full, ca_file: %s, server_name: db.internal}}
  - {name: wrong-ca, protocol: postgres, address: %s, credentials: {user: postgres, password_file: %s},
     tls: {mode: verify-full, ca_file: %s}}
  - {name: no-tls, protocol: postgres, address: %s, credentials: {user: postgres, password_file: %s},
     tls: {mode: verify-full, ca_file: %s}}
workloads:
  - {name: agent, cgroup: %s}
rules:
  - {id: r, workloads: [agent], targets: ["*"], allow: [read]}
`, lgtest.FreePort(t), filepath.Join(dir, "lg.db"), lgtest.PinDir(t), lgtest.CgroupName(t)+"-daemon",
		tlsPG.Addr(), tlsPass, caFile, strangerPG.Addr(), strangerPass, caFile, plainPG.Addr(), plainPass, caFile, lgtest.CgroupName(t)))
	lgtest.StartDaemon(t, cfg)
	psql := func(port int, sql string) (string, string, int) {
		return lgtest.Run(t, cfg, "agent", nil, nil, "psql", "-X", "-A", "-t", "-w", "-h", "127.0.0.1", "-p", strconv.Itoa(port), "-d", "postgres", "-c", sql)
	}
	out, stderr, code := psql(tlsPG.Port, "SELECT ssl || ' ' || pg_backend_pid() FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
	first := strings.Fields(out)
	if code != 0 || len(first) != 2 || first[0] != "true" && first[0] != "t" {
		t.Errorf("verified TLS: code %d out %q err %q", code, out, stderr)
	}
	// The TLS server connection is kept and works for the next session.
	out, stderr, code = psql(tlsPG.Port, "SELECT ssl || ' ' || pg_backend_pid() FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
	if code != 0 || strings.Join(first, " ") != strings.TrimSpace(out) {
		t.Errorf("reused TLS connection: code %d out %q err %q, want %q", code, out, stderr, strings.Join(first, " "))
	}
	for name, port := range map[string]int{"plaintext server": plainPG.Port, "certificate from another CA": strangerPG.Port} {
		_, stderr, code = psql(port, "SELECT 1")
		if code == 0 || !strings.Contains(stderr, "loopgate: cannot reach the database") {
			t.Errorf("%s with verify-full: code %d err %q", name, code, stderr)
		}
	}
	// Session ends are queued: wait for both to be written.
	var all string
	lgtest.Eventually(t, 10*time.Second, "two failed sessions recorded", func() bool {
		var errs []string
		for _, x := range lgtest.Sessions(t, cfg, "--outcome", "error") {
			errs = append(errs, x.Error)
		}
		all = strings.Join(errs, "\n")
		return len(errs) >= 2
	})
	if !strings.Contains(all, "certificate") || !strings.Contains(all, "server refused TLS") && !strings.Contains(all, "TLS") {
		t.Errorf("recorded errors do not say why: %q", all)
	}
}

// TestPostgresAgentTLS: an agent that insists on TLS (sslmode=require, or
// verify-full against the daemon's local CA) gets it when the target says
// tls.agent; otherwise it is told the server does not do TLS.
func TestPostgresAgentTLS(t *testing.T) {
	lgtest.RequireRoot(t)
	pg := lgtest.StartPostgres(t)
	dir := t.TempDir()
	pass := filepath.Join(dir, "pass")
	os.WriteFile(pass, []byte(pg.SuperPassword), 0o600)
	plain := lgtest.StartPostgres(t)
	plainPass := filepath.Join(dir, "plain.pass")
	os.WriteFile(plainPass, []byte(plain.SuperPassword), 0o600)
	cfg := lgtest.WriteConfig(t, fmt.Sprintf(`listen: 127.0.0.1:%d
store: %s
bpffs: %s
daemon_cgroup: %s
api: {socket: %s}
targets:
  - {name: db, protocol: postgres, address: %s, credentials: {user: postgres, password_file: %s}, tls: {agent: true}}
  - {name: plain, protocol: postgres, address: %s, credentials: {user: postgres, password_file: %s}}
workloads:
  - {name: agent, cgroup: %s}
rules:
  - {id: r, workloads: [agent], targets: ["*"], allow: [read]}
`, lgtest.FreePort(t), filepath.Join(dir, "state", "lg.db"), lgtest.PinDir(t), lgtest.CgroupName(t)+"-daemon",
		filepath.Join(lgtest.SharedDir(t), "api.sock"), pg.Addr(), pass, plain.Addr(), plainPass, lgtest.CgroupName(t)))
	lgtest.StartDaemon(t, cfg)
	ca := filepath.Join(dir, "state", "ca", "ca.crt")
	psql := func(port int, mode string) (string, string, int) {
		return lgtest.Run(t, cfg, "agent", []string{"PGSSLMODE=" + mode, "PGSSLROOTCERT=" + ca}, nil,
			"psql", "-X", "-A", "-t", "-w", "-h", "127.0.0.1", "-p", strconv.Itoa(port), "-d", "postgres", "-c", "SELECT 1")
	}
	for _, mode := range []string{"require", "verify-full"} {
		if out, stderr, code := psql(pg.Port, mode); code != 0 || strings.TrimSpace(out) != "1" {
			t.Errorf("sslmode=%s: code %d out %q err %q", mode, code, out, stderr)
		}
	}
	if _, stderr, code := psql(plain.Port, "require"); code == 0 || !strings.Contains(stderr, "server does not support SSL") {
		t.Errorf("sslmode=require without tls.agent: code %d err %q", code, stderr)
	}
	if out, stderr, code := psql(plain.Port, "prefer"); code != 0 || strings.TrimSpace(out) != "1" {
		t.Errorf("sslmode=prefer without tls.agent: code %d out %q err %q", code, out, stderr)
	}
}
