package postgres

// The event loop's sockets: taken from Go's poller and given back, output
// queued without blocking the loop, and the epoll registration kept in
// line with what each socket waits for.

import (
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// loopFD is one socket: read by one side, written by the other.
//
// mu guards pending, werr, wantIn, mask, removed and closed, and is held
// across the epoll_ctl that applies them. It is the innermost lock: a
// writer may hold the relay's clientMu, never the reverse.
type loopFD struct {
	s      *loopSession
	fd     int
	id     uint32
	reader *loopDir // reads this socket
	feeder *loopDir // writes most of what goes out on it (paused when it backs up)
	count  *atomic.Int64

	mu      sync.Mutex
	room    sync.Cond // pending shrank, or writing failed
	pending []byte
	werr    error
	wantIn  bool
	mask    uint32
	removed bool // out of epoll: a hang-up nobody could act on yet
	closed  bool // the session is off the loop
}

// socketFD takes a TCP connection's socket out of Go's poller: a duplicate
// descriptor for the loop, the original closed. It reports false for
// anything but plain TCP.
func socketFD(c net.Conn) (int, bool) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return -1, false
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return -1, false
	}
	fd := -1
	var derr error
	if err := rc.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil || derr != nil {
		return -1, false
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		return -1, false
	}
	tc.Close()
	return fd, true
}

// netConn gives a loop socket back to Go's poller (for the server pool),
// as a duplicate; fd itself is closed.
func netConn(fd int) (net.Conn, error) {
	f := os.NewFile(uintptr(fd), "postgres")
	defer f.Close()
	return net.FileConn(f)
}

// loopable reports whether both sides are plain TCP (TLS stays on the
// goroutine relay: its records need a blocking reader).
func loopable(client, up net.Conn) bool {
	_, a := client.(*net.TCPConn)
	_, b := up.(*net.TCPConn)
	return a && b
}

// setWantIn arms or disarms reading.
func (f *loopFD) setWantIn(on bool) {
	f.mu.Lock()
	f.wantIn = on
	f.apply()
	f.mu.Unlock()
}

// apply brings the epoll registration in line with what f waits for.
// Called with mu held.
func (f *loopFD) apply() {
	if f.closed {
		return
	}
	var want uint32
	if f.wantIn {
		want |= unix.EPOLLIN
	}
	if len(f.pending) > 0 && f.werr == nil {
		want |= unix.EPOLLOUT
	}
	if f.removed {
		if want == 0 {
			return
		}
		f.removed = false
		f.mask = want
		unix.EpollCtl(f.s.l.epfd, unix.EPOLL_CTL_ADD, f.fd, &unix.EpollEvent{Events: want, Fd: int32(f.fd), Pad: int32(f.id)})
		return
	}
	if want == f.mask {
		return
	}
	f.mask = want
	unix.EpollCtl(f.s.l.epfd, unix.EPOLL_CTL_MOD, f.fd, &unix.EpollEvent{Events: want, Fd: int32(f.fd), Pad: int32(f.id)})
}

// ready handles an epoll event on the loop. It reports false when this
// goroutine no longer holds the baton.
func (f *loopFD) ready(ev uint32) bool {
	if ev&(unix.EPOLLOUT|unix.EPOLLERR|unix.EPOLLHUP) != 0 {
		f.drain()
	}
	d := f.reader
	if ev&(unix.EPOLLIN|unix.EPOLLERR|unix.EPOLLHUP) != 0 && d.armed() {
		return d.serve()
	}
	if ev&(unix.EPOLLERR|unix.EPOLLHUP) != 0 {
		// Reported whatever the mask says: park the socket until its
		// reader can see the end for itself.
		f.mu.Lock()
		if !f.closed && !f.removed {
			unix.EpollCtl(f.s.l.epfd, unix.EPOLL_CTL_DEL, f.fd, nil)
			f.removed, f.mask = true, 0
		}
		f.mu.Unlock()
	}
	return true
}

// Write queues p for the socket, writing what it takes now. Safe from any
// goroutine. The side feeding f waits while f is backed up if it runs off
// the loop; on the loop it is paused instead (serve).
func (f *loopFD) Write(p []byte) (int, error) { return f.write(p, f.feeder.offLoop.Load()) }

// noWait writes to a socket without ever waiting: for the side that is not
// its feeder (the agent side's own errors to the agent), which may be on
// the loop while the feeder is off it.
type noWait struct{ f *loopFD }

func (w noWait) Write(p []byte) (int, error) { return w.f.write(p, false) }

func (f *loopFD) write(p []byte, wait bool) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if wait {
		for len(f.pending) > outHigh && f.werr == nil && !f.closed && !f.s.ending.Load() {
			f.room.Wait()
		}
	}
	if f.werr != nil {
		return 0, f.werr
	}
	n := len(p)
	if len(f.pending) == 0 {
		w, err := sendNow(f.fd, p)
		f.count.Add(int64(w))
		p = p[w:]
		if err != nil {
			f.werr = err
			f.room.Broadcast()
			return n - len(p), err
		}
	}
	if len(p) > 0 {
		f.pending = append(f.pending, p...)
		f.apply()
	}
	return n, nil
}

// sendNow writes what the socket takes without waiting; a full socket is
// not an error.
func sendNow(fd int, p []byte) (int, error) {
	done := 0
	for done < len(p) {
		n, err := unix.SendmsgN(fd, p[done:], nil, nil, unix.MSG_NOSIGNAL|unix.MSG_DONTWAIT)
		if n > 0 {
			done += n
		}
		switch {
		case err == unix.EINTR:
		case err == unix.EAGAIN:
			return done, nil
		case err != nil:
			return done, err
		}
	}
	return done, nil
}

// drain writes queued output (loop), and lets the side feeding it go on
// once it has shrunk.
func (f *loopFD) drain() {
	f.mu.Lock()
	if len(f.pending) > 0 && f.werr == nil {
		n, err := sendNow(f.fd, f.pending)
		f.count.Add(int64(n))
		f.pending = f.pending[n:]
		if len(f.pending) == 0 {
			f.pending = nil
		}
		if err != nil {
			f.werr = err
		}
	}
	low := len(f.pending) < outLow
	werr := f.werr
	f.room.Broadcast()
	f.apply()
	f.mu.Unlock()
	if werr != nil {
		f.s.fail(f.feeder, werr)
		return
	}
	if low && f.feeder.paused {
		f.feeder.paused = false
		f.feeder.rearm()
	}
}

// flushBlocking writes what is still queued once the session is off the
// loop, waiting for the socket at most finalFlush.
func (f *loopFD) flushBlocking() {
	f.mu.Lock()
	defer f.mu.Unlock()
	deadline := time.Now().Add(finalFlush)
	for len(f.pending) > 0 && f.werr == nil && time.Now().Before(deadline) {
		n, err := sendNow(f.fd, f.pending)
		f.count.Add(int64(n))
		f.pending = f.pending[n:]
		if err != nil {
			f.werr = err
			break
		}
		if len(f.pending) > 0 {
			unix.Poll([]unix.PollFd{{Fd: int32(f.fd), Events: unix.POLLOUT}}, 100)
		}
	}
	f.pending = nil
}

func (f *loopFD) pendingLen() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.pending)
}

// closedConn stands for a server socket that could not be given back.
type closedConn struct{ net.Conn }

func (closedConn) Read([]byte) (int, error) { return 0, net.ErrClosed }

func (closedConn) Write([]byte) (int, error) { return 0, net.ErrClosed }

func (closedConn) Close() error { return nil }

func (closedConn) SetDeadline(time.Time) error { return net.ErrClosed }

func (closedConn) SetReadDeadline(time.Time) error { return net.ErrClosed }

func (closedConn) SetWriteDeadline(time.Time) error { return net.ErrClosed }
