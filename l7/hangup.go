package l7

import (
	"errors"
	"net"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// ErrClientGone is the cause a command's wait for approval ends with when
// its client closed its connection meanwhile.
var ErrClientGone = errors.New("the client closed its connection")

// watchHangup calls gone, once, if the peer of conn goes away before stop
// is called. stop ends the watch and waits for it; it is safe to call once.
//
// Nobody reads the connection while a command waits for approval, so its
// end would go unnoticed until the approval expired. The watch polls a
// duplicate of the socket for POLLRDHUP (a FIN), POLLHUP and POLLERR (a
// reset): it consumes nothing and leaves the conn's own reads, deadlines
// and fd alone. A FIN with bytes still unread is a client that sent its
// request and shut down its side only (nc -N); it still waits for the
// answer, so then only a reset or full hangup counts. One blocked poll(2)
// holds an OS thread per waiting request, which Broker.MaxPending bounds.
//
// A conn that is not a socket (net.Pipe in tests) is not watched.
func watchHangup(conn net.Conn, gone func()) (stop func()) {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return func() {}
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return func() {}
	}
	fd := -1
	raw.Control(func(s uintptr) {
		fd, _ = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0)
	})
	if fd < 0 {
		return func() {}
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(fd)
		return func() {}
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		events := int16(unix.POLLRDHUP)
		for {
			fds := []unix.PollFd{{Fd: int32(fd), Events: events}, {Fd: int32(wake), Events: unix.POLLIN}}
			if _, err := unix.Poll(fds, -1); err != nil {
				if errors.Is(err, unix.EINTR) {
					continue
				}
				return
			}
			if fds[1].Revents != 0 {
				return
			}
			rev := fds[0].Revents
			switch {
			case rev&(unix.POLLHUP|unix.POLLERR|unix.POLLNVAL) != 0:
				gone()
				return
			case rev&unix.POLLRDHUP != 0:
				if n, err := unix.IoctlGetInt(fd, unix.SIOCINQ); err == nil && n > 0 {
					events = 0 // half-closed with a request: wait for a full hangup
					continue
				}
				gone()
				return
			}
		}
	})
	return func() {
		unix.Write(wake, []byte{1, 0, 0, 0, 0, 0, 0, 0})
		wg.Wait()
		unix.Close(wake)
		unix.Close(fd)
	}
}
