package tests

import (
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/loopgate/loopgate/tests/lgtest"
)

// masksCLI runs `loopgate masks learned VERB --socket S ARGS` as root.
func (s *pgSetup) masksCLI(t *testing.T, verb string, args ...string) string {
	t.Helper()
	full := append([]string{"masks", "learned", verb, "--socket", s.socket}, args...)
	out, err := exec.Command(lgtest.Binary(t), full...).CombinedOutput()
	if err != nil {
		t.Fatalf("loopgate %s: %v: %s", strings.Join(full, " "), err, out)
	}
	return string(out)
}

// TestPostgresLearnedMasks: a detector that fires on a table column makes
// it a column mask of the rule for every later session, until an operator
// drops it (and a dropped column is not learned again).
func TestPostgresLearnedMasks(t *testing.T) {
	s := newPGSetup(t)
	const computed = "SELECT replace(email, '@', ' at ') FROM users WHERE id = 1"
	inClear := func(when string) {
		t.Helper()
		if got := s.psqlOK(t, "careful", computed); got != "ada at example.com" {
			t.Fatalf("%s: computed email = %q, want it in clear (detectors see values only)", when, got)
		}
	}
	refused := func(when string) {
		t.Helper()
		out, stderr, code := s.psql(t, "careful", nil, "-v", "VERBOSITY=verbose", "-c", computed)
		if code == 0 || !strings.Contains(stderr, "42501") || !strings.Contains(stderr, "column email is masked by rule careful-writes") {
			t.Fatalf("%s: computed email: code %d, out %q, stderr %q; want 42501 naming the column", when, code, out, stderr)
		}
	}
	inClear("before learning")
	if got := s.psqlOK(t, "careful", "SELECT email FROM users WHERE id = 1"); got != "***********.com" {
		t.Fatalf("SELECT email = %q, want masked", got)
	}
	// A new session: the column is now masked for the rule.
	refused("after learning")
	if got := s.psqlOK(t, "careful", "SELECT email AS e FROM users WHERE id = 2"); got != "***********.com" {
		t.Fatalf("renamed learned column = %q, want masked", got)
	}
	lgtest.Eventually(t, 10*time.Second, "learned column recorded", func() bool {
		out := s.masksCLI(t, "list")
		return strings.Contains(out, "careful-writes") && strings.Contains(out, "users.email") && strings.Contains(out, "learned")
	})
	t.Logf("masks learned list:\n%s", s.masksCLI(t, "list"))
	out, err := exec.Command(lgtest.Binary(t), "policy", "explain", "--config", s.cfg, "--workload", "careful", "--target", "appdb", computed).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "users.email") || !strings.Contains(string(out), "column email is masked") {
		t.Fatalf("policy explain after learning: %v\n%s", err, out)
	}
	t.Logf("policy explain:\n%s", out)

	s.masksCLI(t, "drop", "careful-writes", "email", "users.email")
	inClear("after drop")
	if got := s.psqlOK(t, "careful", "SELECT email FROM users WHERE id = 1"); got != "***********.com" {
		t.Fatalf("SELECT email after drop = %q, want masked by the detector", got)
	}
	inClear("after drop and another detection") // not learned again
	if out := s.masksCLI(t, "list"); !strings.Contains(out, "dropped") {
		t.Fatalf("masks learned list after drop:\n%s", out)
	}

	s.masksCLI(t, "confirm", "careful-writes", "email", "users.email")
	refused("after confirm")

	out, err = exec.Command(lgtest.Binary(t), "audit", "verify", "--config", s.cfg).CombinedOutput()
	if err != nil {
		t.Fatalf("audit verify: %v\n%s", err, out)
	}
}
