package tests

import (
	"bytes"
	"database/sql"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	_ "github.com/mattn/go-sqlite3" // tampering with the store file, as an attacker would

	"github.com/loopgate/loopgate/store"
	"github.com/loopgate/loopgate/store/event"
	"github.com/loopgate/loopgate/tests/lgtest"
)

// lg runs the loopgate binary and returns its combined output and exit
// status.
func lg(t *testing.T, args ...string) (string, int) {
	t.Helper()
	out, err := exec.Command(lgtest.Binary(t), args...).CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return string(out), code
}

// TestStoreBackupAndPrune backs the store up while an agent opens
// sessions through the daemon, verifies the copy, then prunes the live
// store beside the running daemon and checks that audit verify accepts the
// pruned head and still finds an edit after it.
func TestStoreBackupAndPrune(t *testing.T) {
	s := newSetup(t)
	dir := filepath.Dir(s.storePath(t))
	key := filepath.Join(dir, "audit.key")

	// An agent opening one session after another through the proxy.
	script := fmt.Sprintf(`for i in $(seq 1 60); do
		exec 3<>/dev/tcp/127.0.0.2/%d || exit 9
		read -r peer <&3; echo "hi $i" >&3; read -r line <&3; exec 3<&-
		[ "$line" = "hi $i" ] || exit 8
		sleep 0.2
	done`, s.echo4.Addr().Port)
	agent := exec.Command(lgtest.Binary(t), "run", "--config", s.cfg, "--workload", "open", "--", "bash", "-c", script)
	var agentErr bytes.Buffer
	agent.Stderr = &agentErr
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	defer agent.Process.Kill()
	agentDone := make(chan error, 1)
	go func() { agentDone <- agent.Wait() }()
	var before int
	lgtest.Eventually(t, 30*time.Second, "10 sessions recorded", func() bool {
		before = len(s.sessions(t))
		return before >= 10
	})

	// Backup while sessions run; flags after the argument.
	copyPath := filepath.Join(t.TempDir(), "copy.db")
	out, code := lg(t, "store", "backup", copyPath, "--config", s.cfg)
	if code != 0 {
		t.Fatalf("store backup: exit %d\n%s", code, out)
	}
	t.Logf("backup: %s", strings.TrimSpace(out))
	select {
	case <-agentDone:
		t.Error("the agent finished before the backup did: nothing ran while it copied")
	default:
	}
	if err := <-agentDone; err != nil {
		t.Fatalf("agent: %v\n%s", err, agentErr.String())
	}
	out, code = lg(t, "audit", "verify", "--db", copyPath, "--key", key)
	if code != 0 || !strings.HasPrefix(out, "OK: ") {
		t.Fatalf("audit verify of the copy: exit %d\n%s", code, out)
	}
	inCopy := lgtest.Sessions(t, s.cfg, "--db", copyPath)
	if len(inCopy) < before {
		t.Errorf("copy holds %d sessions, %d were recorded before the backup began", len(inCopy), before)
	}
	if total := len(s.sessions(t)); len(inCopy) >= total+1 {
		t.Errorf("copy holds %d sessions, the store %d", len(inCopy), total)
	}

	// Prune beside the running daemon: everything ended before now.
	all := s.sessions(t)
	out, code = lg(t, "store", "prune", "--config", s.cfg, "--before", time.Now().Add(time.Minute).Format(time.RFC3339), "--json")
	if code != 0 || !strings.Contains(out, `"through":`) {
		t.Fatalf("store prune: exit %d\n%s", code, out)
	}
	t.Logf("prune: %s", strings.TrimSpace(out))
	left := s.sessions(t)
	if len(left) >= len(all) {
		t.Errorf("prune left %d of %d sessions", len(left), len(all))
	}
	out, code = lg(t, "audit", "verify", "--config", s.cfg)
	if code != 0 || !strings.Contains(out, "pruned: from event") {
		t.Fatalf("audit verify after prune: exit %d\n%s", code, out)
	}
	// The daemon keeps recording on the pruned chain.
	var r clientResult
	client(t, s.cfg, "open", "", &r, "dial", "4", s.echo4.Addr().String())
	assertRedirected(t, r)
	s.findSession(t, r.PID)
	out, code = lg(t, "audit", "verify", "--config", s.cfg)
	if code != 0 {
		t.Fatalf("audit verify after new sessions: exit %d\n%s", code, out)
	}

	// Stopped, an edit after the new head is found: exit 3.
	s.daemon.Stop(syscall.SIGTERM)
	db, err := sql.Open("sqlite3", "file:"+s.storePath(t))
	if err != nil {
		t.Fatal(err)
	}
	res, err := db.Exec(`UPDATE events SET text = 'forged' WHERE seq = (SELECT MAX(seq) - 1 FROM events)`)
	db.Close()
	if n, _ := res.RowsAffected(); err != nil || n != 1 {
		t.Fatalf("tamper: %v", err)
	}
	out, code = lg(t, "audit", "verify", "--config", s.cfg)
	if code != 3 || !strings.Contains(out, "edited") {
		t.Errorf("audit verify after an edit past the pruned head: exit %d\n%s", code, out)
	}
}

// storePath is the setup's store file, as its config names it.
func (s *setup) storePath(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(s.cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "store: "); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatal("no store: in the config")
	return ""
}

// TestRetentionPrunesOldSessions starts a daemon with retention: on a store
// holding sessions that ended two days ago and newer ones: the daemon prunes
// the old at start, and the store verifies.
func TestRetentionPrunesOldSessions(t *testing.T) {
	lgtest.RequireRoot(t)
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "loopgate.db")
	ctx := lgtest.Context(t, time.Minute)
	db, err := store.Open(ctx, dbPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.EnableCheckpoints(ctx, filepath.Join(dir, "audit.key")); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for i, at := range []time.Time{now.Add(-50 * time.Hour), now.Add(-49 * time.Hour), now.Add(-time.Minute), now.Add(-time.Second)} {
		id := fmt.Sprintf("old%d", i)
		if err := db.OpenSession(ctx, event.Session{ID: id, Workload: "w", Target: "t", Started: at}); err != nil {
			t.Fatal(err)
		}
		if err := db.CloseSession(ctx, id, event.End{Ended: at.Add(time.Millisecond), Outcome: event.OutcomeClosed}); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	cfg := lgtest.WriteConfig(t, fmt.Sprintf(`listen: 127.0.0.1:%d
store: %s
bpffs: %s
daemon_cgroup: %s
api: {socket: %s}
retention: {keep: 24h}
`, lgtest.FreePort(t), dbPath, lgtest.PinDir(t), lgtest.CgroupName(t)+"-daemon", filepath.Join(lgtest.SharedDir(t), "api.sock")))
	d := lgtest.StartDaemon(t, cfg)
	lgtest.Eventually(t, 20*time.Second, "the daemon's retention prune", func() bool {
		return strings.Contains(d.Log(), `msg="retention: store pruned"`)
	})
	if !strings.Contains(d.Log(), "through_event=4 events=4 sessions=2") {
		t.Errorf("daemon log:\n%s", d.Log())
	}
	out, code := lg(t, "audit", "verify", "--config", cfg)
	if code != 0 || !strings.Contains(out, "OK: 4 events, 2 sessions") || !strings.Contains(out, "pruned: from event 5 on") {
		t.Errorf("audit verify after retention: exit %d\n%s", code, out)
	}
}
