package tests

import (
	"bufio"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// epollRelayMain runs when this binary is started with LG_EPOLL_RELAY set
// to an upstream address: the least a Go proxy built like loopgate's
// event loop can do. One locked thread, raw epoll, read then write; no
// protocol, no policy, no record. BenchmarkPgbench runs it in its own
// process and session, as PgBouncer and the daemon run, as the floor Go
// sets on this machine. It prints its port, then relays until killed.
func epollRelayMain() int {
	runtime.LockOSThread()
	up, err := netip.ParseAddrPort(os.Getenv("LG_EPOLL_RELAY"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	upAddr := &unix.SockaddrInet4{Addr: up.Addr().As4(), Port: int(up.Port())}
	lfd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK, 0)
	if err == nil {
		err = unix.Bind(lfd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}})
	}
	if err == nil {
		err = unix.Listen(lfd, 128)
	}
	sa, err2 := unix.Getsockname(lfd)
	if err != nil || err2 != nil {
		fmt.Fprintln(os.Stderr, err, err2)
		return 1
	}
	fmt.Printf("port %d\n", sa.(*unix.SockaddrInet4).Port)
	ep, err := unix.EpollCreate1(0)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	watch := func(fd int) {
		unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)})
	}
	watch(lfd)
	peer := map[int]int{}
	buf := make([]byte, 64<<10)
	events := make([]unix.EpollEvent, 64)
	for {
		n, err := unix.EpollWait(ep, events, -1)
		if err != nil {
			continue
		}
		for _, ev := range events[:n] {
			fd := int(ev.Fd)
			if fd == lfd {
				cfd, _, err := unix.Accept4(lfd, unix.SOCK_NONBLOCK)
				if err != nil {
					continue
				}
				ufd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
				if err == nil {
					err = unix.Connect(ufd, upAddr) // blocking: fine for a reference
				}
				if err != nil {
					unix.Close(cfd)
					unix.Close(ufd)
					continue
				}
				unix.SetNonblock(ufd, true)
				for _, s := range []int{cfd, ufd} {
					unix.SetsockoptInt(s, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
					watch(s)
				}
				peer[cfd], peer[ufd] = ufd, cfd
				continue
			}
			to, ok := peer[fd]
			if !ok {
				continue
			}
			r, err := unix.Read(fd, buf)
			if err == unix.EAGAIN || err == unix.EINTR {
				continue
			}
			if r > 0 && writeAll(to, buf[:r]) == nil {
				continue
			}
			unix.Close(fd)
			unix.Close(to)
			delete(peer, fd)
			delete(peer, to)
		}
	}
}

// writeAll writes p to a nonblocking socket, waiting when it is full.
func writeAll(fd int, p []byte) error {
	for len(p) > 0 {
		n, err := unix.Write(fd, p)
		switch {
		case err == unix.EAGAIN:
			unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLOUT}}, -1)
		case err == unix.EINTR:
		case err != nil:
			return err
		default:
			p = p[n:]
		}
	}
	return nil
}

// startEpollRelay starts epollRelayMain in front of upstream and returns
// its port.
func startEpollRelay(t testing.TB, upstream string) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), "LG_EPOLL_RELAY="+upstream)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	line, err := bufio.NewReader(out).ReadString('\n')
	port, ok := strings.CutPrefix(strings.TrimSpace(line), "port ")
	if err != nil || !ok {
		t.Fatalf("epoll relay did not start: %q %v", line, err)
	}
	return port
}
