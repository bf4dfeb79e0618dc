package tests

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"

	"github.com/loopgate/loopgate/tests/lgtest"
)

// tiocstiScript pushes a shell command into the input queue of the terminal
// on fd argv[1] with ioctl(TIOCSTI), one byte at a time, the way an agent
// would type into its operator's shell. When that is refused it tries to
// make the terminal its own first (setsid + TIOCSCTTY with force), then
// reports what happened on one line. An agent can always make a pty no
// session holds its own controlling terminal; what matters is that the
// operator's never is, and takes nothing the agent types. The injected text never spells
// INJECTED-AS-<user> itself: only a shell that runs it prints that.
const tiocstiScript = `import errno, fcntl, os, sys, termios
fd = int(sys.argv[1])
line = "echo INJECTED-AS-" + "$(id -un)\n"

def name(e):
    return errno.errorcode.get(e.errno, str(e.errno))

def sti():
    try:
        for c in line.encode():
            fcntl.ioctl(fd, termios.TIOCSTI, bytes([c]))
        return "ok"
    except OSError as e:
        return name(e)

try:
    tty = os.ttyname(fd)
except OSError:
    tty = "none"
first = sti()
second = "skipped"
if first != "ok":
    try:
        os.setsid()
    except OSError:
        pass
    try:
        fcntl.ioctl(fd, termios.TIOCSCTTY, 1)
        second = "sctty-ok-sti-" + sti()
    except OSError as e:
        second = "sctty-" + name(e)
print("ATTACK tty=%s sti=%s retry=%s" % (tty, first, second), flush=True)
`

// TestAttackTTY tries to escape `loopgate run` through the operator's
// terminal: an agent running as nobody types a command into the root shell
// that started it (TIOCSTI). It also checks that interactive use on the
// agent's own pty still works: window size, ^C, exit status, terminal mode
// restored, output relayed in full.
func TestAttackTTY(t *testing.T) {
	s := newSetup(t)
	lg := lgtest.Binary(t)
	dir := lgtest.SharedDir(t)
	script := filepath.Join(dir, "tiocsti.py")
	if err := os.WriteFile(script, []byte(tiocstiScript), 0o644); err != nil {
		t.Fatal(err)
	}
	run := fmt.Sprintf("%s run --config %s --workload open --user nobody --", lg, s.cfg)
	injected := regexp.MustCompile(`INJECTED-AS-\w+`)
	attack := regexp.MustCompile(`ATTACK tty=(\S+) sti=(\S+) retry=(\S+)`)

	// checkAttack types cmdline into an operator shell, then a second
	// command, and checks that nothing the agent injected ran in between,
	// and that its TIOCSTI failed or reached only a pty of its own. With
	// wantEPERM, the agent's first TIOCSTI must fail outright.
	checkAttack := func(t *testing.T, cmdline string, wantEPERM bool) {
		ctx := lgtest.Context(t, 60*time.Second)
		op := startOperator(t, ctx, 24, 80)
		op.send(cmdline + "; echo MARK-$?\n")
		if code := op.waitFor(ctx, `MARK-(\d+)`); code != "0" {
			t.Fatalf("loopgate run exited %s, want 0:\n%s", code, op.output())
		}
		// Anything injected into the operator's input queue is read by the
		// shell before this line.
		op.send("echo DONE-$((6*7))\n")
		op.waitFor(ctx, `(DONE-42)`)
		out := op.output()
		if m := injected.FindString(out); m != "" {
			t.Errorf("the agent's injected command ran in the operator's shell (%s):\n%s", m, out)
		}
		m := attack.FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("no ATTACK report in output:\n%s", out)
		}
		t.Logf("operator tty %s; agent: %s", op.name, m[0])
		if m[1] == op.name {
			t.Errorf("agent's fd is the operator's terminal %s", op.name)
		}
		if !strings.HasPrefix(m[1], "/dev/pts/") {
			t.Errorf("agent's fd is %s, want a pty of its own", m[1])
		}
		if wantEPERM && m[2] != "EPERM" {
			t.Errorf("TIOCSTI on the agent's fd: %s, want EPERM", m[2])
		}
	}

	t.Run("tiocsti-stdin", func(t *testing.T) {
		t.Parallel()
		checkAttack(t, run+" /usr/bin/python3 "+script+" 0", false)
	})
	t.Run("tiocsti-stderr-stdin-null", func(t *testing.T) {
		t.Parallel()
		checkAttack(t, run+" /usr/bin/python3 "+script+" 2 </dev/null", true)
	})
	t.Run("interactive", func(t *testing.T) {
		t.Parallel()
		ctx := lgtest.Context(t, 60*time.Second)
		op := startOperator(t, ctx, 37, 101)
		op.send(`S1=$(stty -g); ` + run + ` /bin/sh -c 'stty size; tty; exit 7'; echo MARK-$?; ` +
			`[ "$S1" = "$(stty -g)" ] && echo SAME-$((1+1))` + "\n")
		if code := op.waitFor(ctx, `MARK-(\d+)`); code != "7" {
			t.Errorf("exit status %s, want 7", code)
		}
		op.waitFor(ctx, `(SAME-2)`)
		out := op.output()
		if !strings.Contains(out, "37 101") {
			t.Errorf("stty size in the agent did not print the operator's 37 101:\n%s", out)
		}
		ttys := regexp.MustCompile(`/dev/pts/\d+`).FindAllString(out, -1)
		if len(ttys) == 0 {
			t.Fatalf("tty printed no /dev/pts path:\n%s", out)
		}
		for _, name := range ttys {
			if name == op.name {
				t.Errorf("agent runs on the operator's terminal %s", name)
			}
		}
	})
	t.Run("ctrl-c", func(t *testing.T) {
		t.Parallel()
		ctx := lgtest.Context(t, 60*time.Second)
		op := startOperator(t, ctx, 24, 80)
		op.send(run + ` /bin/sh -c 'echo READY-$((1+1)); exec sleep 30'; echo MARK-$?` + "\n")
		op.waitFor(ctx, `(READY-2)`)
		op.send("\x03")
		if code := op.waitFor(ctx, `MARK-(\d+)`); code != "130" {
			t.Errorf("exit status after ^C %s, want 130", code)
		}
	})
	t.Run("ctrl-z", func(t *testing.T) {
		t.Parallel()
		ctx := lgtest.Context(t, 60*time.Second)
		op := startOperator(t, ctx, 24, 80)
		op.send(run + ` /usr/bin/python3 -c 'import sys; ` +
			`print("READY-" + str(1+1), flush=True); l = sys.stdin.readline(); ` +
			`print("GOT-" + l.strip() + "-" + str(7+7), flush=True)'; echo MARK-$?` + "\n")
		op.waitFor(ctx, `(READY-2)`)
		// ^Z goes to the agent's pty, where it stops nothing (the agent is
		// an orphaned process group): the agent keeps reading its input.
		op.send("\x1a")
		op.send("hi\r")
		op.waitFor(ctx, `(GOT-hi-14)`)
		if code := op.waitFor(ctx, `MARK-(\d+)`); code != "0" {
			t.Errorf("exit status %s, want 0", code)
		}
	})
	t.Run("window-resize", func(t *testing.T) {
		t.Parallel()
		ctx := lgtest.Context(t, 60*time.Second)
		op := startOperator(t, ctx, 24, 80)
		op.send(run + ` /bin/sh -c 'echo READY-$((1+1)); while [ "$(stty size)" != "50 120" ]; do sleep 0.05; done; echo RESIZED-$((2+3))'; echo MARK-$?` + "\n")
		op.waitFor(ctx, `(READY-2)`)
		if err := pty.Setsize(op.master, &pty.Winsize{Rows: 50, Cols: 120}); err != nil {
			t.Fatal(err)
		}
		op.waitFor(ctx, `(RESIZED-5)`)
		if code := op.waitFor(ctx, `MARK-(\d+)`); code != "0" {
			t.Errorf("exit status %s, want 0", code)
		}
	})
	t.Run("output-drained", func(t *testing.T) {
		t.Parallel()
		ctx := lgtest.Context(t, 60*time.Second)
		op := startOperator(t, ctx, 24, 80)
		op.send(run + ` /usr/bin/python3 -c 'import sys; sys.stdout.write("y" * 300000 + " END-" + str(5*5) + "\n")'; echo MARK-$?` + "\n")
		op.waitFor(ctx, `MARK-(\d+)`)
		out := op.output()
		end, mark := strings.LastIndex(out, "END-25"), strings.LastIndex(out, "MARK-0")
		if end < 0 || mark < end {
			t.Errorf("the agent's last output (END-25 at %d) was not relayed before run returned (MARK-0 at %d)", end, mark)
		}
		if n := strings.Count(out, "y"); n < 300000 {
			t.Errorf("relayed %d of 300000 bytes of output", n)
		}
	})
	t.Run("grandchild-holds-pty", func(t *testing.T) {
		t.Parallel()
		ctx := lgtest.Context(t, 60*time.Second)
		op := startOperator(t, ctx, 24, 80)
		start := time.Now()
		op.send(run + ` /bin/sh -c 'trap "" HUP; sleep 30 & echo BG-$((4+4))'; echo MARK-$?` + "\n")
		op.waitFor(ctx, `(BG-8)`)
		if code := op.waitFor(ctx, `MARK-(\d+)`); code != "0" {
			t.Errorf("exit status %s, want 0", code)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Errorf("run returned after %s: a grandchild holding the pty kept it waiting", d)
		}
	})
	t.Run("no-tty-own-session", func(t *testing.T) {
		t.Parallel()
		stdout, stderr, code := lgtest.Run(t, s.cfg, "open", nil, []string{"--user", "nobody"},
			"/usr/bin/python3", "-c", "import os; print(os.getsid(0) == os.getpid(), os.isatty(0) or os.isatty(1) or os.isatty(2))")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		if got := strings.TrimSpace(stdout); got != "True False" {
			t.Errorf("session leader, any tty = %q, want True False", got)
		}
	})
}

// operator is an interactive root shell on a pty of its own, standing in for
// the operator's terminal that runs `loopgate run`.
type operator struct {
	t      *testing.T
	master *os.File
	name   string // the pty slave's path, e.g. /dev/pts/3
	mu     sync.Mutex
	out    bytes.Buffer // guarded by mu
}

func startOperator(t *testing.T, ctx context.Context, rows, cols uint16) *operator {
	t.Helper()
	m, slave, err := pty.Open()
	if err != nil {
		lgtest.Unavailable(t, "open pty: %v", err)
	}
	// creack/pty's master blocks in read, where Close cannot stop it while a
	// leftover process holds the slave; a non-blocking dup is pollable.
	fd, err := unix.FcntlInt(m.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	m.Close()
	if err == nil {
		err = unix.SetNonblock(fd, true)
	}
	if err != nil {
		t.Fatalf("pty master: %v", err)
	}
	master := os.NewFile(uintptr(fd), "/dev/ptmx")
	if err := pty.Setsize(master, &pty.Winsize{Rows: rows, Cols: cols}); err != nil {
		t.Fatal(err)
	}
	op := &operator{t: t, master: master, name: slave.Name()}
	cmd := exec.CommandContext(ctx, "/bin/bash", "--norc", "--noprofile", "-i")
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "TERM=dumb", "PS1=op$ ", "HISTFILE=/dev/null"}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start operator shell: %v", err)
	}
	slave.Close()
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 32<<10)
		for {
			n, err := master.Read(buf)
			op.mu.Lock()
			op.out.Write(buf[:n])
			op.mu.Unlock()
			if err != nil {
				return
			}
		}
	})
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		master.Close()
		wg.Wait()
	})
	return op
}

// send types s into the operator's terminal.
func (op *operator) send(s string) {
	op.t.Helper()
	if _, err := op.master.Write([]byte(s)); err != nil {
		op.t.Fatalf("type into operator terminal: %v", err)
	}
}

func (op *operator) output() string {
	op.mu.Lock()
	defer op.mu.Unlock()
	return op.out.String()
}

// waitFor polls the terminal output until re matches and returns its first
// group; it fails the test when ctx ends first.
func (op *operator) waitFor(ctx context.Context, re string) string {
	op.t.Helper()
	rx := regexp.MustCompile(re)
	for {
		if m := rx.FindStringSubmatch(op.output()); m != nil {
			return m[1]
		}
		select {
		case <-ctx.Done():
			op.t.Fatalf("waiting for %s on the operator's terminal: %v\n%s", re, ctx.Err(), op.output())
		case <-time.After(20 * time.Millisecond):
		}
	}
}
