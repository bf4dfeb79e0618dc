package intercept

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// Socket diagnostics (NETLINK_SOCK_DIAG, linux/inet_diag.h) answer one
// question for the listener: is the client socket of an accepted connection
// the very socket the kernel wrote the redirect record for? A query names
// the client socket by its tuple and the record's socket cookie; the kernel
// finds the socket (established, or still closing) and compares cookies
// itself (sock_diag_check_cookie). So a record can only ever be used by the
// socket that connect() ran for: not by a later socket that reuses its
// address and port once it has gone.

// ErrNotThatSocket means no live socket with that tuple is the one the
// record was written for: it has gone, or another socket holds the tuple.
// The kernel answers ENOENT for both (older kernels ESTALE for the second).
var ErrNotThatSocket = errors.New("client socket is gone or not the one that connected")

const (
	sockDiagByFamily = 20 // SOCK_DIAG_BY_FAMILY
	inetDiagReqLen   = 56 // struct inet_diag_req_v2
)

// sockDiag is one NETLINK_SOCK_DIAG socket. Its methods are safe for
// concurrent use; mu serialises request and reply.
type sockDiag struct {
	mu  sync.Mutex
	fd  int
	seq uint32
	buf []byte
}

func newSockDiag() (*sockDiag, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_SOCK_DIAG)
	if err != nil {
		return nil, fmt.Errorf("open sock_diag: %w", err)
	}
	// A reply that never comes must not hang the accept loop.
	tv := unix.Timeval{Sec: 1}
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("sock_diag timeout: %w", err)
	}
	return &sockDiag{fd: fd, buf: make([]byte, 8192)}, nil
}

func (d *sockDiag) Close() error { return unix.Close(d.fd) }

// check asks whether the TCP socket whose local address is client and whose
// peer is server exists and has the given cookie. It returns nil,
// ErrNotThatSocket or an error of the query itself.
func (d *sockDiag) check(client, server netip.AddrPort, cookie uint64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.seq++
	req := make([]byte, unix.NLMSG_HDRLEN+inetDiagReqLen)
	ne := binary.NativeEndian
	ne.PutUint32(req[0:], uint32(len(req)))
	ne.PutUint16(req[4:], sockDiagByFamily)
	ne.PutUint16(req[6:], unix.NLM_F_REQUEST)
	ne.PutUint32(req[8:], d.seq)
	r := req[unix.NLMSG_HDRLEN:]
	// An IPv4 listener's peers are IPv4 sockets or dual-stack sockets that
	// dialled a v4-mapped address: both live in the IPv4 tables.
	if server.Addr().Unmap().Is4() {
		r[0] = unix.AF_INET
		a, b := client.Addr().Unmap().As4(), server.Addr().Unmap().As4()
		copy(r[12:], a[:])
		copy(r[28:], b[:])
	} else {
		r[0] = unix.AF_INET6
		a, b := client.Addr().As16(), server.Addr().As16()
		copy(r[12:], a[:])
		copy(r[28:], b[:])
	}
	r[1] = unix.IPPROTO_TCP
	ne.PutUint32(r[4:], 0xffffffff) // any state
	binary.BigEndian.PutUint16(r[8:], client.Port())
	binary.BigEndian.PutUint16(r[10:], server.Port())
	ne.PutUint32(r[48:], uint32(cookie))
	ne.PutUint32(r[52:], uint32(cookie>>32))

	if err := unix.Sendto(d.fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("sock_diag query: %w", err)
	}
	for {
		n, _, err := unix.Recvfrom(d.fd, d.buf, 0)
		if err != nil {
			return fmt.Errorf("sock_diag reply: %w", err)
		}
		msgs, err := syscall.ParseNetlinkMessage(d.buf[:n])
		if err != nil {
			return fmt.Errorf("sock_diag reply: %w", err)
		}
		for _, m := range msgs {
			if m.Header.Seq != d.seq {
				continue // a late reply to an earlier, timed-out query
			}
			switch m.Header.Type {
			case sockDiagByFamily:
				return nil
			case unix.NLMSG_ERROR:
				if len(m.Data) < 4 {
					return errors.New("sock_diag: short error reply")
				}
				switch errno := unix.Errno(-int32(ne.Uint32(m.Data))); errno {
				case unix.ENOENT, unix.ESTALE:
					return ErrNotThatSocket
				default:
					return fmt.Errorf("sock_diag: %w", errno)
				}
			}
		}
	}
}
