package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"
	"golang.org/x/term"
)

// The drain after the agent exits: its last output is read until the pty
// reports EIO (every slave fd closed; the kernel flushes pending output
// before it says so), but a grandchild that keeps the slave open must not
// hold `loopgate run` forever.
const (
	drainIdle = 250 * time.Millisecond // stop after this long without output
	drainMax  = 2 * time.Second        // and at the latest this long after exit
)

// agentPTY is the agent's own pseudo-terminal. `loopgate run` never lets an
// agent hold the operator's terminal: with the terminal as its controlling
// tty, or with CAP_SYS_ADMIN, a process can push input into it
// (ioctl TIOCSTI, still allowed where dev.tty.legacy_tiocsti=1) that the
// operator's shell runs after the agent exits, as the operator (issue #11).
// So, as `su --pty` and `systemd-run --pty` do, the agent runs in a session
// of its own with a pty slave in place of each std fd that was a terminal
// (its controlling terminal when stdin was one), and loopgate relays between the pty master and the
// operator's terminal, which it puts in raw mode meanwhile.
//
// Methods are called from the goroutine running `run`, except resize.
type agentPTY struct {
	master *os.File // pollable (non-blocking), so reads and writes take deadlines
	slave  *os.File // closed once the agent started
	in     *os.File // the operator's terminal input comes from, or nil
	out    *os.File // where the agent's terminal output goes
	winsz  *os.File // the operator's terminal the window size comes from
	saved  *term.State

	stop     *os.File // closed to stop the input relay; stopR is its read end
	stopR    *os.File
	exitedAt atomic.Pointer[time.Time]
	wg       sync.WaitGroup
}

// attachPTY gives cmd a new pty in place of each of its std fds that is a
// terminal, and returns nil when none is. The pty is the agent's controlling
// terminal when stdin was a terminal. It merges into cmd.SysProcAttr, which
// must already carry any credentials.
func attachPTY(cmd *exec.Cmd) (*agentPTY, error) {
	var winsz *os.File
	for _, f := range []*os.File{os.Stderr, os.Stdout, os.Stdin} {
		if term.IsTerminal(int(f.Fd())) {
			winsz = f
		}
	}
	if winsz == nil {
		return nil, nil
	}
	m, slave, err := pty.Open()
	if err != nil {
		return nil, fmt.Errorf("open pty: %w", err)
	}
	master, err := pollable(m)
	if err != nil {
		slave.Close()
		return nil, err
	}
	p := &agentPTY{master: master, slave: slave, winsz: winsz}
	if term.IsTerminal(int(os.Stdin.Fd())) {
		p.in = os.Stdin
		cmd.Stdin = slave
	}
	// The agent's terminal output goes to the first terminal among stdout
	// and stderr; when only stdin is one, it is written back there (a
	// terminal opened read-write, as shells do).
	p.out = p.in
	for _, f := range []*os.File{os.Stderr, os.Stdout} {
		if term.IsTerminal(int(f.Fd())) {
			p.out = f
		}
	}
	if term.IsTerminal(int(os.Stdout.Fd())) {
		cmd.Stdout = slave
	}
	if term.IsTerminal(int(os.Stderr.Fd())) {
		cmd.Stderr = slave
	}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setsid = true
	if p.in != nil {
		// The pty becomes the agent's controlling terminal (fd 0, after the
		// std fds are in place; the agent is a session leader by then), so
		// /dev/tty, job control and ^C work as on a terminal. Without input
		// from the operator it stays only a display: /dev/tty then fails
		// at once instead of prompting where no one can answer, and TIOCSTI
		// on the std fds fails with EPERM.
		cmd.SysProcAttr.Setctty = true
		cmd.SysProcAttr.Ctty = 0
	}
	p.resize()
	return p, nil
}

// pollable turns the master creack/pty opened (blocking, so deadlines and
// Close cannot interrupt its reads) into a non-blocking one Go's poller
// serves.
func pollable(m *os.File) (*os.File, error) {
	defer m.Close()
	fd, err := unix.FcntlInt(m.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("dup pty master: %w", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("pty master non-blocking: %w", err)
	}
	return os.NewFile(uintptr(fd), m.Name()), nil
}

// makeRaw puts the operator's input terminal in raw mode, so every key,
// ^C and ^Z included, goes to the agent's pty, whose line discipline
// applies them to the agent's foreground group. restore undoes it.
func (p *agentPTY) makeRaw() error {
	if p.in == nil || p.saved != nil {
		return nil
	}
	st, err := term.MakeRaw(int(p.in.Fd()))
	if err != nil {
		return fmt.Errorf("raw mode: %w", err)
	}
	p.saved = st
	return nil
}

// restore puts the operator's terminal back as makeRaw found it. It is
// safe to call more than once.
func (p *agentPTY) restore() {
	if p.saved != nil {
		term.Restore(int(p.in.Fd()), p.saved)
		p.saved = nil
	}
}

// resize copies the operator's window size to the agent's pty; the kernel
// sends SIGWINCH to the agent's foreground group when it changes (if the
// pty is the agent's controlling terminal; see hasCtty).
func (p *agentPTY) resize() {
	pty.InheritSize(p.winsz, p.master)
}

// hasCtty reports whether the pty is the agent's controlling terminal.
func (p *agentPTY) hasCtty() bool { return p.in != nil }

// started closes loopgate's copy of the slave (so the master reports EIO
// once the agent and its descendants have closed theirs) and starts the
// relays. The caller must call finish.
func (p *agentPTY) started() error {
	p.slave.Close()
	p.wg.Go(p.relayOut)
	if p.in == nil {
		return nil
	}
	r, w, err := os.Pipe()
	if err != nil {
		return fmt.Errorf("pty relay: %w", err)
	}
	p.stopR, p.stop = r, w
	p.wg.Go(p.relayIn)
	return nil
}

// relayOut copies the agent's terminal output to the operator until the
// pty reports EIO or, after the agent exited, the drain bound is reached.
func (p *agentPTY) relayOut() {
	buf := make([]byte, 32<<10)
	out := p.out
	for {
		n, err := p.master.Read(buf)
		if n > 0 {
			if out != nil {
				if _, werr := out.Write(buf[:n]); werr != nil {
					// Keep reading, so the agent never blocks on a full
					// pty; there is nowhere left to show its output.
					out = nil
				}
			}
			if at := p.exitedAt.Load(); at != nil {
				p.master.SetReadDeadline(minTime(time.Now().Add(drainIdle), at.Add(drainMax)))
			}
		}
		if err != nil {
			// EIO: no slave fd open any more. A deadline: the drain is over.
			return
		}
	}
}

// relayIn copies the operator's keys to the agent's pty until the operator's
// terminal ends or finish stops it. It polls rather than blocking in read so
// that it never swallows keys typed after the agent exited.
func (p *agentPTY) relayIn() {
	buf := make([]byte, 4096)
	fds := []unix.PollFd{{Fd: int32(p.in.Fd()), Events: unix.POLLIN}, {Fd: int32(p.stopR.Fd()), Events: unix.POLLIN}}
	for {
		fds[0].Revents, fds[1].Revents = 0, 0
		if _, err := unix.Poll(fds, -1); err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return
		}
		if fds[1].Revents != 0 {
			return
		}
		if fds[0].Revents&(unix.POLLIN|unix.POLLHUP|unix.POLLERR) == 0 {
			return // POLLNVAL
		}
		n, err := unix.Read(int(p.in.Fd()), buf)
		if err == unix.EINTR || err == unix.EAGAIN {
			continue
		}
		if n <= 0 || err != nil {
			return
		}
		if _, err := p.master.Write(buf[:n]); err != nil {
			return
		}
	}
}

// finish drains the agent's last output, stops the relays, closes the
// master (which hangs up the slave for any descendant still holding it)
// and restores the operator's terminal. Call it once the agent has exited.
func (p *agentPTY) finish() {
	now := time.Now()
	p.exitedAt.Store(&now)
	p.master.SetReadDeadline(now.Add(drainIdle))
	if p.stop != nil {
		p.stop.Close()
		// A write blocked on a full pty input queue returns now.
		p.master.SetWriteDeadline(now)
	}
	p.wg.Wait()
	if p.stopR != nil {
		p.stopR.Close()
	}
	p.master.Close()
	p.restore()
}

// close releases the pty when the agent never started.
func (p *agentPTY) close() {
	p.slave.Close()
	p.master.Close()
	p.restore()
}

func minTime(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
