package tests

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/loopgate/loopgate/tests/lgtest"
)

var killLabel = regexp.MustCompile(`'(k9-\d+-\d+)'`)

// TestPostgresKill9KeepsAcknowledged runs statements through loopgate
// under the default config (store sync: normal, where an allowed
// statement's record is committed to the WAL but not fsynced before the
// statement is forwarded) and kills the daemon with SIGKILL at a random
// moment, three times. After each restart, every statement psql printed
// a result for (acknowledged) must be in the store, and audit verify must
// pass: recorded >= acknowledged.
func TestPostgresKill9KeepsAcknowledged(t *testing.T) {
	s := newPGSetup(t)
	var acked []string
	for round := range 3 {
		acked = append(acked, s.killMidStream(t, round, 20+rand.IntN(1500))...)
		s.daemon.Restart()
	}
	out, err := exec.Command(lgtest.Binary(t), "sessions", "export", "--config", s.cfg, "--format", "jsonl").Output()
	if err != nil {
		t.Fatal(err)
	}
	recorded := map[string]bool{}
	for _, line := range strings.Split(string(out), "\n") {
		var ev struct{ Kind, Text, Decision string }
		json.Unmarshal([]byte(line), &ev)
		if m := killLabel.FindStringSubmatch(ev.Text); m != nil && ev.Kind == "command" && ev.Decision == "allow" {
			recorded[m[1]] = true
		}
	}
	for _, label := range acked {
		if !recorded[label] {
			t.Errorf("statement %s acknowledged to the client but not recorded", label)
		}
	}
	if out, err := exec.Command(lgtest.Binary(t), "audit", "verify", "--config", s.cfg).CombinedOutput(); err != nil {
		t.Errorf("audit verify after kill -9: %v\n%s", err, out)
	}
	if got := lgtest.Sessions(t, s.cfg, "--outcome", "interrupted"); len(got) < 3 {
		t.Errorf("%d sessions marked interrupted, want at least 3", len(got))
	}
	t.Logf("%d statements acknowledged before three kills, %d recorded", len(acked), len(recorded))
}

// killMidStream streams statements through one psql session and kills the
// daemon once after psql has printed n results; it returns every label
// psql printed (line-buffered: printed means its result arrived).
func (s *pgSetup) killMidStream(t *testing.T, round, n int) []string {
	t.Helper()
	cmd := exec.Command(lgtest.Binary(t), "run", "--config", s.cfg, "--workload", "agent", "--",
		"stdbuf", "-oL", "psql", "-X", "-A", "-t", "-w", "-h", "127.0.0.1", "-p", s.port, "-U", "agent", "-d", "app")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		w := bufio.NewWriter(stdin)
		for i := 0; ; i++ {
			if _, err := fmt.Fprintf(w, "SELECT 'k9-%d-%d';\n", round, i); err != nil {
				return
			}
			if i%64 == 63 && w.Flush() != nil {
				return
			}
		}
	}()
	done := make(chan struct{})
	timer := time.AfterFunc(60*time.Second, func() { cmd.Process.Kill() })
	defer timer.Stop()
	var labels []string
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		label := strings.TrimSpace(sc.Text())
		if !strings.HasPrefix(label, "k9-") {
			continue
		}
		labels = append(labels, label)
		if len(labels) == n {
			close(done)
			s.daemon.Stop(syscall.SIGKILL)
		}
	}
	io.Copy(io.Discard, stdout)
	stdin.Close()
	cmd.Wait()
	select {
	case <-done:
	default:
		t.Fatalf("round %d: psql ended after %d results, before the kill at %d", round, len(labels), n)
	}
	t.Logf("round %d: killed after %d results, %d printed in all", round, n, len(labels))
	return labels
}
