package tests

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/loopgate/loopgate/tests/lgtest"
)

// apiGroup is the api.group of pgSetup's daemon: cliAs runs in it.
const apiGroup = 4243

// cliAs runs `loopgate ARGS --socket S` as uid (in apiGroup, so it reaches
// the socket) and returns output and code.
func (s *pgSetup) cliAs(t *testing.T, uid int, args ...string) (string, int) {
	t.Helper()
	// Flags go anywhere after the command words: --socket goes last.
	full := append(append([]string{}, args...), "--socket", s.socket)
	cmd := exec.Command(lgtest.Binary(t), full...)
	if uid != 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid), Groups: []uint32{apiGroup}}}
	}
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return string(out), code
}

type approvalJSON struct {
	ID, State, Workload, Target, Command, Class, Rule string
	ApprovedBy                                        []string `json:"approved_by"`
}

// pending waits for exactly n pending requests and returns them.
func (s *pgSetup) pending(t *testing.T, n int) []approvalJSON {
	t.Helper()
	var got []approvalJSON
	lgtest.Eventually(t, 10*time.Second, fmt.Sprintf("%d pending approvals", n), func() bool {
		out, code := s.cliAs(t, 0, "approvals", "list", "--json")
		if code != 0 {
			t.Fatalf("approvals list: %s", out)
		}
		got = nil
		for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
			if line == "" {
				continue
			}
			var a approvalJSON
			json.Unmarshal([]byte(line), &a)
			got = append(got, a)
		}
		return len(got) == n
	})
	return got
}

// psqlAsync starts psql as nobody in a workload; wait returns its stderr
// and exit code.
func (s *pgSetup) psqlAsync(t *testing.T, workload, sql string) func() (string, string, int) {
	cmd := exec.Command(lgtest.Binary(t), "run", "--config", s.cfg, "--workload", workload, "--user", "nobody", "--",
		"psql", "-X", "-A", "-t", "-w", "-h", "127.0.0.1", "-p", s.port, "-d", "app", "-v", "ON_ERROR_STOP=1", "-c", sql)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return func() (string, string, int) {
		cmd.Wait()
		return stdout.String(), stderr.String(), cmd.ProcessState.ExitCode()
	}
}

func TestApprovals(t *testing.T) {
	s := newPGSetup(t)
	s.pg.MustExecIn(t, "app", "INSERT INTO approvals_t SELECT generate_series(1, 5)")
	count := func() string { return s.pg.MustExecIn(t, "app", "SELECT count(*) FROM approvals_t") }

	t.Run("approve once", func(t *testing.T) {
		wait := s.psqlAsync(t, "agent", "DELETE FROM approvals_t")
		req := s.pending(t, 1)[0]
		if req.State != "pending" || req.Workload != "agent" || req.Target != "appdb" || req.Command != "DELETE FROM approvals_t" ||
			req.Class != "unbounded-write" || req.Rule != "agent-app" {
			t.Errorf("request = %+v", req)
		}
		// The requester cannot approve itself; an unknown uid cannot either.
		if out, code := s.cliAs(t, 65534, "approvals", "approve", req.ID); code != 3 || !strings.Contains(out, "self_approval") {
			t.Errorf("self-approval: %d %s", code, out)
		}
		if out, code := s.cliAs(t, 2, "approvals", "approve", req.ID); code != 3 || !strings.Contains(out, "403") {
			t.Errorf("unknown uid: %d %s", code, out)
		}
		if out, code := s.cliAs(t, 0, "approvals", "approve", req.ID, "--reason", "ok for the test"); code != 0 || !strings.Contains(out, "approved") {
			t.Fatalf("approve: %d %s", code, out)
		}
		_, stderr, code := wait()
		if code != 0 || !strings.Contains(stderr, "NOTICE:  loopgate: waiting for approval "+req.ID) {
			t.Errorf("psql: code %d stderr %q", code, stderr)
		}
		if c := count(); c != "0" {
			t.Errorf("rows left %s", c)
		}
		if out, code := s.cliAs(t, 0, "approvals", "approve", req.ID); code != 1 || !strings.Contains(out, "409") {
			t.Errorf("approving a decided request: %d %s", code, out)
		}
	})

	t.Run("bound to the command: the same command asks again; deny", func(t *testing.T) {
		s.pg.MustExecIn(t, "app", "INSERT INTO approvals_t VALUES (1)")
		wait := s.psqlAsync(t, "agent", "DELETE FROM approvals_t")
		req := s.pending(t, 1)[0]
		if out, code := s.cliAs(t, 1, "approvals", "deny", "--reason", "not today", req.ID); code != 0 {
			t.Fatalf("deny: %s", out)
		}
		_, stderr, code := wait()
		if code == 0 || !strings.Contains(stderr, "loopgate: not approved: not today") {
			t.Errorf("psql: code %d stderr %q", code, stderr)
		}
		if c := count(); c != "1" {
			t.Errorf("rows %s after deny", c)
		}
	})

	t.Run("timeout denies", func(t *testing.T) {
		_, stderr, code := s.psqlAsync(t, "agent", "DELETE FROM approvals_t")()
		if code == 0 || !strings.Contains(stderr, "approval timed out") {
			t.Errorf("psql: code %d stderr %q", code, stderr)
		}
	})

	t.Run("window scope", func(t *testing.T) {
		wait := s.psqlAsync(t, "agent", "DELETE FROM approvals_t")
		req := s.pending(t, 1)[0]
		if out, code := s.cliAs(t, 0, "approvals", "approve", "--scope", "window", "--window", "1m", req.ID); code != 0 {
			t.Fatalf("approve: %s", out)
		}
		if _, stderr, code := wait(); code != 0 {
			t.Fatalf("first: %s", stderr)
		}
		s.pg.MustExecIn(t, "app", "INSERT INTO approvals_t VALUES (2)")
		start := time.Now()
		if _, stderr, code := s.psqlAsync(t, "agent", "DELETE FROM approvals_t")(); code != 0 || strings.Contains(stderr, "waiting for approval") {
			t.Errorf("second in window: code %d %s", code, stderr)
		}
		if time.Since(start) > 3*time.Second {
			t.Errorf("second command waited %s", time.Since(start))
		}
	})

	t.Run("two-person rule", func(t *testing.T) {
		wait := s.psqlAsync(t, "careful", "INSERT INTO approvals_t VALUES (7)")
		req := s.pending(t, 1)[0]
		if out, code := s.cliAs(t, 0, "approvals", "approve", req.ID); code != 0 || !strings.Contains(out, "1 of 2") {
			t.Fatalf("first approval: %d %s", code, out)
		}
		if out, code := s.cliAs(t, 0, "approvals", "approve", req.ID); code == 0 || !strings.Contains(out, "409") {
			t.Errorf("same approver twice: %d %s", code, out)
		}
		if out, code := s.cliAs(t, 1, "approvals", "approve", req.ID); code != 0 || !strings.Contains(out, "approved") {
			t.Fatalf("second approval: %d %s", code, out)
		}
		if _, stderr, code := wait(); code != 0 {
			t.Errorf("psql: %s", stderr)
		}
		if c := s.pg.MustExecIn(t, "app", "SELECT count(*) FROM approvals_t WHERE id = 7"); c != "1" {
			t.Errorf("row 7: %s", c)
		}
	})

	t.Run("api needs credentials", func(t *testing.T) {
		resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(s.apiPort) + "/v1/approvals")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("no token: %s", resp.Status)
		}
		req, _ := http.NewRequest("GET", "http://127.0.0.1:"+strconv.Itoa(s.apiPort)+"/v1/approvals", nil)
		req.Header.Set("Authorization", "Bearer eyJhbGciOiJub25lIn0.eyJpc3MiOiJodHRwczovL2lkcC5pbnZhbGlkIn0.")
		resp, err = http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("forged token: %s", resp.Status)
		}
		resp, err = http.Get("http://127.0.0.1:" + strconv.Itoa(s.apiPort) + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		b.ReadFrom(resp.Body)
		resp.Body.Close()
		if !strings.Contains(b.String(), `loopgate_approvals_total{state="approved"}`) || !strings.Contains(b.String(), "loopgate_sessions_total") {
			t.Errorf("metrics lack approval and session totals")
		}
	})

	t.Run("daemon killed while pending: abandoned", func(t *testing.T) {
		// (agent's deletes are inside an approved window now; careful's
		// writes still ask.)
		wait := s.psqlAsync(t, "careful", "INSERT INTO approvals_t VALUES (9)")
		req := s.pending(t, 1)[0]
		s.daemon.Stop(syscall.SIGKILL)
		_, stderr, code := wait()
		if code == 0 {
			t.Errorf("psql succeeded with the daemon dead: %s", stderr)
		}
		s.daemon.Restart()
		out, _ := s.cliAs(t, 0, "approvals", "list", "--state", "abandoned", "--json")
		if !strings.Contains(out, req.ID) {
			t.Errorf("abandoned list %q lacks %s", out, req.ID)
		}
	})

	t.Run("audit trail", func(t *testing.T) {
		out, err := exec.Command(lgtest.Binary(t), "audit", "verify", "--config", s.cfg).CombinedOutput()
		if err != nil {
			t.Errorf("audit verify: %v %s", err, out)
		}
	})
}
