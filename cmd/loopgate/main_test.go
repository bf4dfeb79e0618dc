package main

import (
	"bytes"
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/urfave/cli/v3"

	"github.com/loopgate/loopgate/store"
	"github.com/loopgate/loopgate/store/event"
)

// runCLI runs the CLI in process and returns its exit status and stderr.
// Stdout is the test's.
func runCLI(t *testing.T, args ...string) (int, string) {
	t.Helper()
	var stderr bytes.Buffer
	code := run(context.Background(), append([]string{"loopgate"}, args...), &stderr)
	return code, stderr.String()
}

func TestEveryCommandHasExamples(t *testing.T) {
	var walk func(c *cli.Command)
	walk = func(c *cli.Command) {
		// A group's help lists its commands, each with examples.
		if c.Name != "help" && len(c.Commands) == 0 && !strings.Contains(c.UsageText, "Examples:") && c.Description == "" {
			t.Errorf("%s: no examples in --help (UsageText)", c.FullName())
		}
		for _, sub := range c.Commands {
			walk(sub)
		}
	}
	app := newApp()
	for _, c := range app.Commands {
		walk(c)
	}
}

func TestUsageErrorsExit2(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string // in stderr
	}{
		{"unknown command", []string{"frob"}, `unknown command "frob"`},
		{"unknown subcommand", []string{"sessions", "frob"}, `sessions: unknown command "frob"`},
		{"unknown flag", []string{"approvals", "approve", "--bogus", "x", "apr_1"}, "bogus"},
		{"missing required flag", []string{"policy", "explain", "SELECT 1"}, `"workload, target" not set`},
		{"bad duration names the flag", []string{"approvals", "approve", "apr_1", "--window", "soon"}, "window"},
		{"bad scope names the flag", []string{"approvals", "approve", "apr_1", "--scope", "forever"}, "--scope"},
		{"two IDs", []string{"approvals", "deny", "apr_1", "apr_2"}, "want one approval ID, got 2"},
		{"bad date names the flag", []string{"store", "prune", "--before", "yesterday"}, "--before"},
		{"backup without a file", []string{"store", "backup"}, "want one FILE"},
		{"bad export format", []string{"sessions", "export", "--db", "/nonexistent", "--format", "xml"}, "--format"},
		{"config error names file:line", []string{"policy", "check", writeFile(t, "bad.yaml", "listen: 1\nbogus: 2\n")}, "bad.yaml:2:1"},
		{"unknown shell", []string{"completion", "tcsh"}, `unknown command "tcsh"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, stderr := runCLI(t, tc.args...)
			if code != exitUsage || !strings.Contains(stderr, tc.want) {
				t.Errorf("exit %d, stderr %q; want %d and %q", code, stderr, exitUsage, tc.want)
			}
		})
	}
}

func TestCompletion(t *testing.T) {
	for _, shell := range []string{"bash", "zsh", "fish"} {
		t.Run(shell, func(t *testing.T) {
			out := captureStdout(t, func() {
				if code, stderr := runCLI(t, "completion", shell); code != 0 {
					t.Fatalf("exit %d: %s", code, stderr)
				}
			})
			if !strings.Contains(out, "loopgate") {
				t.Errorf("completion %s: %q", shell, out)
			}
		})
	}
}

func writeFile(t *testing.T, name, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// captureStdout returns what f writes to os.Stdout.
func captureStdout(t *testing.T, f func()) string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	old := os.Stdout
	os.Stdout = w
	done := make(chan []byte)
	go func() {
		var b bytes.Buffer
		b.ReadFrom(r)
		done <- b.Bytes()
	}()
	defer func() { os.Stdout = old }()
	f()
	w.Close()
	os.Stdout = old
	return string(<-done)
}

// testStore writes a signed store of n closed sessions, the first at base,
// one a minute.
func testStore(t *testing.T, n int, base time.Time) (db, key string) {
	t.Helper()
	dir := t.TempDir()
	db, key = filepath.Join(dir, "loopgate.db"), filepath.Join(dir, "audit.key")
	ctx := context.Background()
	s, err := store.Open(ctx, db)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.EnableCheckpoints(ctx, key); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		id := fmt.Sprintf("ses_%04d", i)
		at := base.Add(time.Duration(i) * time.Minute)
		if err := s.OpenSession(ctx, event.Session{ID: id, Workload: "ci-bot", Target: "appdb", Protocol: "postgres", Started: at}); err != nil {
			t.Fatal(err)
		}
		if err := s.AppendEvents(ctx, event.Event{SessionID: id, Time: at.Add(time.Second), Kind: event.KindCommand, Text: "SELECT 1", Decision: "allow"}); err != nil {
			t.Fatal(err)
		}
		if err := s.CloseSession(ctx, id, event.End{Ended: at.Add(2 * time.Second), Outcome: event.OutcomeClosed}); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	return db, key
}

func tamper(t *testing.T, db, query string) {
	t.Helper()
	raw, err := sql.Open("sqlite3", "file:"+db)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if _, err := raw.Exec(query); err != nil {
		t.Fatal(err)
	}
}

func TestStoreCommandsAndExitCodes(t *testing.T) {
	base := time.Date(2026, 9, 1, 0, 0, 0, 0, time.UTC)
	db, key := testStore(t, 100, base)
	verify := func(db string) (int, string) {
		var code int
		var stderr string
		out := captureStdout(t, func() { code, stderr = runCLI(t, "audit", "verify", "--db", db, "--key", key) })
		return code, out + stderr
	}
	if code, out := verify(db); code != exitOK || !strings.HasPrefix(out, "OK: 300 events, 100 sessions") {
		t.Fatalf("verify: exit %d\n%s", code, out)
	}
	// Backup: flags after the argument, too.
	copyPath := filepath.Join(t.TempDir(), "copy.db")
	if code, stderr := runCLI(t, "store", "backup", copyPath, "--db", db); code != exitOK {
		t.Fatalf("backup: exit %d: %s", code, stderr)
	}
	if code, out := verify(copyPath); code != exitOK || !strings.HasPrefix(out, "OK: 300 events") {
		t.Fatalf("verify copy: exit %d\n%s", code, out)
	}
	if code, stderr := runCLI(t, "store", "backup", copyPath, "--db", db); code != exitError || !strings.Contains(stderr, "exists") {
		t.Errorf("backup over a file: exit %d: %s", code, stderr)
	}
	// Prune the first 40 sessions (ended before base+40m).
	var code int
	var stderr string
	out := captureStdout(t, func() {
		code, stderr = runCLI(t, "store", "prune", "--db", db, "--key", key, "--json", "--before", base.Add(40*time.Minute).Format(time.RFC3339))
	})
	if code != exitOK || !strings.Contains(out, `"through":120,"events":120,"sessions":40`) {
		t.Fatalf("prune: exit %d %s\n%s", code, stderr, out)
	}
	if code, out := verify(db); code != exitOK || !strings.Contains(out, "OK: 180 events, 60 sessions") || !strings.Contains(out, "pruned: from event 121 on") {
		t.Fatalf("verify after prune: exit %d\n%s", code, out)
	}
	// An edit after the new head is found: exit 3.
	tamper(t, db, `UPDATE events SET text = 'SELECT 2' WHERE seq = 130`)
	if code, out := verify(db); code != exitDenied || !strings.Contains(out, "BROKEN: event 130: edited") {
		t.Errorf("verify after an edit: exit %d\n%s", code, out)
	}
	// prune refuses over the broken chain: an error, exit 1.
	if code, stderr := runCLI(t, "store", "prune", "--db", db, "--key", key, "--before", "2027-01-01"); code != exitError || !strings.Contains(stderr, "event 130") {
		t.Errorf("prune over an edit: exit %d: %s", code, stderr)
	}
	// A missing key file is named.
	if code, stderr := runCLI(t, "store", "prune", "--db", db, "--key", "/nonexistent.key", "--before", "2027-01-01"); code != exitUsage || !strings.Contains(stderr, "--key") {
		t.Errorf("missing key: exit %d: %s", code, stderr)
	}
}

func TestListAndShowJSON(t *testing.T) {
	base := time.Date(2026, 9, 1, 0, 0, 0, 0, time.UTC)
	db, _ := testStore(t, 3, base)
	out := captureStdout(t, func() {
		if code, stderr := runCLI(t, "sessions", "list", "--db", db, "--json"); code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
	})
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], `{"id":"ses_0000","workload":"ci-bot","target":"appdb"`) {
		t.Errorf("sessions list --json:\n%s", out)
	}
	out = captureStdout(t, func() {
		if code, stderr := runCLI(t, "sessions", "show", "ses_0001", "--db", db, "--json"); code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
	})
	if strings.Count(out, "\n") != 1 || !strings.Contains(out, `"id":"ses_0001"`) || !strings.Contains(out, `"outcome":"closed"`) {
		t.Errorf("sessions show --json:\n%s", out)
	}
	if code, stderr := runCLI(t, "sessions", "show", "ses_9999", "--db", db); code != exitError || !strings.Contains(stderr, "ses_9999") {
		t.Errorf("show unknown: exit %d: %s", code, stderr)
	}
}

func TestProgressLine(t *testing.T) {
	tests := []struct {
		name        string
		done, total int64
		width       int
		want        string
	}{
		{"half", 50, 100, 60, "verify [##############..............]  50% 50/100 events 3s"},
		{"unknown total", 42, 0, 60, "verify 42 events 3s"},
		{"narrow", 1, 4, 30, "verify  25% 1/4 events 3s"},
		{"overshoot", 120, 100, 60, "verify [###########################] 100% 100/100 events 3s"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := progressLine("verify", "events", tc.done, tc.total, 3*time.Second, tc.width)
			if got != tc.want || len(got) > tc.width {
				t.Errorf("got  %q\nwant %q", got, tc.want)
			}
		})
	}
	// Not a terminal: nothing, however long it runs.
	var buf bytes.Buffer
	p := newProgress(&buf, "verify", "events")
	p.next = time.Time{}
	p.update(1, 2)
	p.done()
	if buf.Len() != 0 {
		t.Errorf("progress wrote %q to a non-terminal", buf.String())
	}
}
