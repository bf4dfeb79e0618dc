package tests

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// The test binary doubles as an unmodified client program: with LG_CLIENT
// set, TestMain runs clientMain instead of the tests. Tests start it through
// `loopgate run`, so it is a real process in a workload cgroup making real
// syscalls.

// clientResult is what one client connection saw.
type clientResult struct {
	Local string `json:"local,omitempty"` // our socket's address
	// Remote is our socket's peer as getpeername reports it.
	Remote string `json:"remote,omitempty"`
	Peer   string `json:"peer,omitempty"` // the source address the echo target saw
	Echo   string `json:"echo,omitempty"`
	Err    string `json:"err,omitempty"`
	Errno  int    `json:"errno,omitempty"`
	PID    int    `json:"pid"`
}

func clientMain() int {
	mode, args := os.Getenv("LG_CLIENT"), os.Args[1:]
	var res any
	switch mode {
	case "dial": // dial FAMILY ADDR: FAMILY is 4, 6 or 4in6 (v4-mapped on AF_INET6)
		res = dialEcho(args[0], args[1], false)
	case "tfo": // tfo ADDR: TCP Fast Open sendto on an unconnected socket
		res = dialEcho("4", args[0], true)
	case "udp": // udp ADDR
		res = datagram("4", args[0], false)
	case "raw":
		res = rawSocket()
	case "many": // many N ADDR
		n, _ := strconv.Atoi(args[0])
		out := make([]clientResult, n)
		var wg sync.WaitGroup
		for i := range out {
			wg.Go(func() { out[i] = dialEcho("4", args[1], false) })
		}
		wg.Wait()
		res = out
	case "bench": // bench N PROXIED_ADDR DIRECT_ADDR: interleaved round trips
		res = benchRoundTrips(args)
	case "connects": // connects N ADDR: connect+close N times
		res = benchConnects(args)
	case "pgx": // pgx DSN: extended protocol, pipelines, prepared statements
		res = pgxScenario(args[0])
	case "libpq": // libpq DSN: lib/pq through database/sql
		res = libpqScenario(args[0])
	case "pgreload": // pgreload ADDR DIR: one session across a reload
		res = reloadScenario(args[0], args[1])
	case "rawpg": // rawpg ADDR: hand-driven extended protocol against masks
		res = rawScenario(args[0])
	case "pgcompat": // pgcompat DSN ADDR, or pgcompat ADDR pipeline: pgcompat_test.go
		res = compatScenario(args[0], args[1])
	case "pgchurn": // pgchurn DSN PAR ROUNDS: pgchurn_test.go
		res = churnClient(args)
	case "bigrow": // bigrow DSN: a 64 MB value in and out
		res = bigRow(args[0])
	case "udpsend", "udpconn", "unixconn", "unixsend", "bindsend", "pgcancel", "uring": // client_attack_test.go
		res = attackClient(mode, args)
	case "http-get", "http-ws", "http-first": // http_client_test.go
		res = httpClient(mode, args)
	case "flood", "probe", "bigquery", "pgcap": // client_budget_test.go
		res = budgetClient(mode, args)
	default:
		fmt.Fprintf(os.Stderr, "unknown LG_CLIENT mode %q\n", mode)
		return 2
	}
	json.NewEncoder(os.Stdout).Encode(res)
	return 0
}

func errResult(err error) clientResult {
	r := clientResult{Err: err.Error(), PID: os.Getpid()}
	var errno unix.Errno
	if errors.As(err, &errno) {
		r.Errno = int(errno)
	}
	return r
}

func sockaddr(family, addr string) (int, unix.Sockaddr, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return 0, nil, err
	}
	switch family {
	case "4":
		return unix.AF_INET, &unix.SockaddrInet4{Addr: ap.Addr().Unmap().As4(), Port: int(ap.Port())}, nil
	case "6":
		return unix.AF_INET6, &unix.SockaddrInet6{Addr: ap.Addr().As16(), Port: int(ap.Port())}, nil
	case "4in6":
		mapped := netip.AddrFrom16(ap.Addr().Unmap().As16()) // ::ffff:a.b.c.d
		return unix.AF_INET6, &unix.SockaddrInet6{Addr: mapped.As16(), Port: int(ap.Port())}, nil
	}
	return 0, nil, fmt.Errorf("bad family %q", family)
}

// dialEcho connects with raw syscalls (so the socket family is exactly what
// the test asks for), sends a line and reads the echo target's two lines.
func dialEcho(family, addr string, fastOpen bool) clientResult {
	af, sa, err := sockaddr(family, addr)
	if err != nil {
		return errResult(err)
	}
	fd, err := unix.Socket(af, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return errResult(err)
	}
	msg := []byte("ping\n")
	if fastOpen {
		err = unix.Sendto(fd, msg, unix.MSG_FASTOPEN, sa)
	} else {
		err = unix.Connect(fd, sa)
		if err == nil {
			_, err = unix.Write(fd, msg)
		}
	}
	if err != nil {
		unix.Close(fd)
		return errResult(err)
	}
	return readEcho(fd)
}

// readEcho takes over a connected socket that has sent its line and reads
// the echo target's two lines: the peer it saw, and the echo.
func readEcho(fd int) clientResult {
	f := os.NewFile(uintptr(fd), "client")
	c, err := net.FileConn(f)
	f.Close()
	if err != nil {
		return errResult(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	r := clientResult{Local: c.LocalAddr().String(), Remote: c.RemoteAddr().String(), PID: os.Getpid()}
	br := bufio.NewReader(c)
	peer, err := br.ReadString('\n')
	if err != nil {
		return errResult(fmt.Errorf("read peer line: %w", err))
	}
	echo, err := br.ReadString('\n')
	if err != nil {
		return errResult(fmt.Errorf("read echo: %w", err))
	}
	r.Peer = strings.TrimPrefix(strings.TrimSpace(peer), "peer ")
	r.Echo = strings.TrimSpace(echo)
	return r
}

func rawSocket() clientResult {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_RAW, unix.IPPROTO_TCP)
	if err != nil {
		return errResult(err)
	}
	unix.Close(fd)
	return clientResult{PID: os.Getpid()}
}

// benchResult is nanoseconds per operation measured inside the workload.
type benchResult struct {
	ProxiedNS float64 `json:"proxied_ns"`
	DirectNS  float64 `json:"direct_ns"`
	Err       string  `json:"err,omitempty"`
}

func roundTrip(addr string) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	br := bufio.NewReader(c)
	if _, err := br.ReadString('\n'); err != nil {
		return err
	}
	if _, err := c.Write([]byte("ping\n")); err != nil {
		return err
	}
	_, err = br.ReadString('\n')
	return err
}

func benchRoundTrips(args []string) benchResult {
	n, _ := strconv.Atoi(args[0])
	var proxied, direct time.Duration
	for range n {
		for i, addr := range []string{args[1], args[2]} {
			start := time.Now()
			if err := roundTrip(addr); err != nil {
				return benchResult{Err: err.Error()}
			}
			if i == 0 {
				proxied += time.Since(start)
			} else {
				direct += time.Since(start)
			}
		}
	}
	return benchResult{ProxiedNS: float64(proxied) / float64(n), DirectNS: float64(direct) / float64(n)}
}

func benchConnects(args []string) benchResult {
	n, _ := strconv.Atoi(args[0])
	start := time.Now()
	for range n {
		c, err := net.Dial("tcp", args[1])
		if err != nil {
			return benchResult{Err: err.Error()}
		}
		c.Close()
	}
	return benchResult{DirectNS: float64(time.Since(start)) / float64(n)}
}
