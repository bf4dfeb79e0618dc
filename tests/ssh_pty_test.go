package tests

import (
	"bytes"
	"encoding/json"
	"io"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/creack/pty"

	"github.com/loopgate/loopgate/tests/lgtest"
)

// lockedBuffer collects a terminal's output.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestSSHTerminal runs an interactive ssh on a pty, resizes it, and checks
// the cast: the header's size, the resize event, the output, and a replay
// that draws the same screen.
func TestSSHTerminal(t *testing.T) {
	s := newSSHSetup(t)
	args := append([]string{"run", "--config", s.cfg, "--workload", "admin", "--user", "nobody", "--", "ssh"}, s.sshArgs()...)
	args = append(args, "-tt", "-p", s.port, "deploy@127.0.0.1")
	cmd := exec.Command(lgtest.Binary(t), args...)
	cmd.Env = []string{"TERM=xterm", "PATH=/usr/bin:/bin"}
	ptmx, err := pty.StartWithSize(cmd, &pty.Winsize{Cols: 80, Rows: 24})
	if err != nil {
		t.Fatal(err)
	}
	defer ptmx.Close()
	var screen lockedBuffer
	copied := make(chan struct{})
	go func() { io.Copy(&screen, ptmx); close(copied) }()
	waitFor := func(what string) {
		t.Helper()
		lgtest.Eventually(t, 20*time.Second, what+" on the terminal", func() bool { return strings.Contains(screen.String(), what) })
	}
	// The marks are computed by the shell, so the echo of the typed line
	// never matches them.
	ptmx.WriteString("stty size; echo M$((1+1))K\r")
	waitFor("M2K")
	if err := pty.Setsize(ptmx, &pty.Winsize{Cols: 100, Rows: 30}); err != nil {
		t.Fatal(err)
	}
	lgtest.Eventually(t, 20*time.Second, "the new size upstream", func() bool {
		ptmx.WriteString("stty size; echo M$((2+2))K\r")
		time.Sleep(200 * time.Millisecond)
		return strings.Contains(screen.String(), "30 100")
	})
	ptmx.WriteString("exit\r")
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("ssh: %v\n%s", err, screen.String())
		}
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("ssh did not exit:\n%s", screen.String())
	}
	<-copied
	if !strings.Contains(screen.String(), "24 80") {
		t.Errorf("first size not seen:\n%q", screen.String())
	}

	var id string
	lgtest.Eventually(t, 20*time.Second, "the session closed", func() bool {
		list := lgtest.Sessions(t, s.cfg, "--workload", "admin")
		if len(list) == 0 || list[len(list)-1].Outcome == "open" {
			return false
		}
		id = list[len(list)-1].ID
		return true
	})
	out, err := exec.Command(lgtest.Binary(t), "sessions", "export", "--config", s.cfg, "--format", "asciicast", id).Output()
	if err != nil {
		t.Fatalf("export: %v", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	var header struct {
		Version       int
		Width, Height int
	}
	if err := json.Unmarshal([]byte(lines[0]), &header); err != nil || header.Version != 2 || header.Width != 80 || header.Height != 24 {
		t.Fatalf("header %s: %+v %v", lines[0], header, err)
	}
	var output strings.Builder
	resized := false
	var lastAt float64
	for _, l := range lines[1:] {
		var ev []any
		if err := json.Unmarshal([]byte(l), &ev); err != nil || len(ev) != 3 {
			t.Fatalf("bad event %q", l)
		}
		at := ev[0].(float64)
		if at < lastAt {
			t.Errorf("time goes back: %v after %v", at, lastAt)
		}
		lastAt = at
		switch ev[1] {
		case "o":
			output.WriteString(ev[2].(string))
		case "r":
			resized = resized || ev[2] == "100x30"
		}
	}
	if !resized || !strings.Contains(output.String(), "24 80") || !strings.Contains(output.String(), "30 100") {
		t.Errorf("cast: resized %v output %q", resized, output.String())
	}
	replay, err := exec.Command(lgtest.Binary(t), "sessions", "replay", "--config", s.cfg, "--speed", "0", id).Output()
	if err != nil {
		t.Fatalf("replay: %v", err)
	}
	i, j := strings.Index(string(replay), "24 80"), strings.Index(string(replay), "\x1b[8;30;100t")
	k := strings.Index(string(replay), "30 100")
	if i < 0 || j < i || k < j {
		t.Errorf("replay out of order (%d %d %d): %q", i, j, k, replay)
	}
	// The screen the agent saw is the screen the replay draws (from the
	// first command's output on: before it the terminal echoed typing
	// that ssh had not sent yet).
	got := regexp.MustCompile(`\x1b\[8;\d+;\d+t`).ReplaceAllString(string(replay), "")
	if i := strings.Index(got, "24 80"); i < 0 || !strings.Contains(screen.String(), got[i:]) {
		t.Errorf("replay differs from the terminal:\nreplay %q\nscreen %q", got, screen.String())
	}
}
