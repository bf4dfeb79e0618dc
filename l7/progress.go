package l7

import (
	"net"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// progress queues the byte counts of live sessions every s.Progress until
// stop is closed. A tick costs one getsockopt per live session and one
// queued update per session whose counts changed, written with the
// store's next commit: nothing on the per-statement path.
func (s *Server) progress(stop <-chan struct{}) {
	every := s.Progress
	if every == 0 {
		every = 5 * time.Second
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		s.mu.Lock()
		live := make([]*liveSession, 0, len(s.live))
		for _, l := range s.live {
			live = append(live, l)
		}
		s.mu.Unlock()
		for _, l := range live {
			if !l.sess.written.Load() || l.sess.conn == nil {
				continue // no row to update yet
			}
			up, down, ok := socketBytes(l.sess.conn)
			if !ok || up == l.up && down == l.down {
				continue
			}
			l.up, l.down = up, down
			s.Recorder.SessionProgressAsync(l.sess.ID, up, down)
		}
	}
}

// socketBytes returns what the kernel counted on conn's TCP socket: bytes
// received from the peer (client to target) and bytes the peer
// acknowledged (target to client). Linux 4.1 and later (tcp_info's
// tcpi_bytes_acked, tcpi_bytes_received); ok is false for a conn that is
// not a TCP socket.
func socketBytes(conn net.Conn) (up, down int64, ok bool) {
	sc, isSC := conn.(syscall.Conn)
	if !isSC {
		return 0, 0, false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return 0, 0, false
	}
	var info *unix.TCPInfo
	cerr := raw.Control(func(fd uintptr) {
		info, err = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
	})
	if cerr != nil || err != nil {
		return 0, 0, false
	}
	return int64(info.Bytes_received), int64(info.Bytes_acked), true
}
