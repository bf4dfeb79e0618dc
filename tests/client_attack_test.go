package tests

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"golang.org/x/sys/unix"
)

// attackClient runs the client modes of the attack suite (attack_test.go).
// Each makes the raw syscalls a hostile agent would and reports the errno.
func attackClient(mode string, args []string) any {
	switch mode {
	case "udpsend": // udpsend FAMILY ADDR: an unconnected datagram
		return datagram(args[0], args[1], false)
	case "udpconn": // udpconn FAMILY ADDR: connect, then send
		return datagram(args[0], args[1], true)
	case "unixconn": // unixconn stream|dgram PATH: connect ("@name" is abstract), send, read a line (stream)
		return unixConnect(args[0], args[1])
	case "unixsend": // unixsend PATH: an unconnected unix datagram
		return unixSendto(args[0])
	case "bindsend": // bindsend LOCALPORT ADDR: bind, connect, send, close without waiting
		return bindSend(args[0], args[1])
	case "pgcancel": // pgcancel DSN: cancel a running pg_sleep through pgx's CancelRequest
		return pgCancel(args[0])
	case "uring": // uring inline|async ADDR: connect through io_uring
		return uringConnect(args[1], args[0] == "async")
	}
	return errResult(fmt.Errorf("unknown attack mode %q", mode))
}

func datagram(family, addr string, connect bool) clientResult {
	af, sa, err := sockaddr(family, addr)
	if err != nil {
		return errResult(err)
	}
	fd, err := unix.Socket(af, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return errResult(err)
	}
	defer unix.Close(fd)
	if connect {
		if err := unix.Connect(fd, sa); err != nil {
			return errResult(fmt.Errorf("connect: %w", err))
		}
		_, err = unix.Write(fd, []byte("x"))
	} else {
		err = unix.Sendto(fd, []byte("x"), 0, sa)
	}
	if err != nil {
		return errResult(err)
	}
	return clientResult{PID: os.Getpid()}
}

func unixAddr(path string) *unix.SockaddrUnix {
	if name, ok := strings.CutPrefix(path, "@"); ok {
		return &unix.SockaddrUnix{Name: "\x00" + name}
	}
	return &unix.SockaddrUnix{Name: path}
}

func unixConnect(kind, path string) clientResult {
	typ := unix.SOCK_STREAM
	if kind == "dgram" {
		typ = unix.SOCK_DGRAM
	}
	fd, err := unix.Socket(unix.AF_UNIX, typ|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return errResult(err)
	}
	defer unix.Close(fd)
	if err := unix.Connect(fd, unixAddr(path)); err != nil {
		return errResult(err)
	}
	if _, err := unix.Write(fd, []byte("ping\n")); err != nil {
		return errResult(err)
	}
	r := clientResult{PID: os.Getpid()}
	if typ == unix.SOCK_STREAM {
		buf := make([]byte, 64)
		unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &unix.Timeval{Sec: 10})
		n, err := unix.Read(fd, buf)
		if err != nil {
			return errResult(err)
		}
		r.Echo = strings.TrimSpace(string(buf[:max(n, 0)]))
	}
	return r
}

func unixSendto(path string) clientResult {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return errResult(err)
	}
	defer unix.Close(fd)
	if err := unix.Sendto(fd, []byte("ping"), 0, unixAddr(path)); err != nil {
		return errResult(err)
	}
	return clientResult{PID: os.Getpid()}
}

// bindSend connects from a chosen local port (as the stale-record attack
// needs), sends a line and closes at once: the daemon may be stopped.
func bindSend(port, addr string) clientResult {
	p, err := strconv.Atoi(port)
	if err != nil {
		return errResult(err)
	}
	af, sa, err := sockaddr("4", addr)
	if err != nil {
		return errResult(err)
	}
	fd, err := unix.Socket(af, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return errResult(err)
	}
	defer unix.Close(fd)
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}, Port: p}); err != nil {
		return errResult(fmt.Errorf("bind: %w", err))
	}
	if err := unix.Connect(fd, sa); err != nil {
		return errResult(fmt.Errorf("connect: %w", err))
	}
	if _, err := unix.Write(fd, []byte("ping\n")); err != nil {
		return errResult(err)
	}
	return clientResult{Local: fmt.Sprintf("127.0.0.1:%d", p), PID: os.Getpid()}
}

// pgCancel runs pg_sleep(30) on one connection, waits (over a second one)
// until the server runs it, and cancels it with pgconn's CancelRequest,
// which dials conn.RemoteAddr() (getpeername) with the session's
// BackendKeyData. Err holds how the query ended: 57014 means the server
// cancelled it.
func pgCancel(dsn string) clientResult {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return errResult(fmt.Errorf("connect: %w", err))
	}
	defer conn.Close(context.Background())
	watch, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return errResult(fmt.Errorf("connect: %w", err))
	}
	defer watch.Close(context.Background())
	r := clientResult{PID: os.Getpid(), Remote: conn.PgConn().Conn().RemoteAddr().String()}
	done := make(chan error, 1)
	go func() {
		_, err := conn.Exec(ctx, "SELECT pg_sleep(30)")
		done <- err
	}()
	for {
		var n int
		err := watch.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' AND state = 'active'").Scan(&n)
		if err != nil {
			return errResult(fmt.Errorf("watch: %w", err))
		}
		if n > 0 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	start := time.Now()
	if err := conn.PgConn().CancelRequest(ctx); err != nil {
		return errResult(fmt.Errorf("cancel request: %w", err))
	}
	err = <-done
	r.Echo = time.Since(start).Round(time.Millisecond).String()
	r.Err = sqlstate(err) // 57014, or "ok" after 30 s if the cancel went nowhere
	return r
}
