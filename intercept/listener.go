package intercept

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/loopgate/loopgate/bpf"
)

// ErrNoOrigin marks a connection that reached the listener without a redirect
// record: a direct connect, or one whose record went stale. It must be
// refused: the listener is not an open proxy.
var ErrNoOrigin = errors.New("no redirect record")

// maxFlowAge bounds how long a redirect record waits for its accept. Older
// records are refused: their tuple may have been reused.
const maxFlowAge = 60 * time.Second

// Origin is the kernel's account of a redirected connection.
type Origin struct {
	// OrigDst is the destination the process dialled.
	OrigDst netip.AddrPort
	// Client is the connection's source as the listener saw it.
	Client     netip.AddrPort
	TargetID   uint32
	WorkloadID uint32
	PID        int // thread-group id
	TID        int
	UID        uint32
	GID        uint32
	CgroupID   uint64
	// CgroupPath is the process's cgroup relative to the cgroup2 mount,
	// found by id below the workload cgroups; empty if not found.
	CgroupPath   string
	NetnsCookie  uint64
	SocketCookie uint64
	// Comm is the thread name at connect: informative only, never identity
	// (io_uring workers are "iou-wrk-...").
	Comm string
	// Process is the connecting process, verified by start time. Exe is
	// empty and ProcessErr set when it had gone by accept.
	Process    Process
	ProcessErr error
}

// Listener accepts redirected connections on one address.
type Listener struct {
	ln      *net.TCPListener
	diag    *sockDiag
	flows   *ebpf.Map
	netns   uint64
	mount   string
	cgroups []string // absolute workload cgroup dirs, for path lookup
	paths   cgroupPaths
}

// Listen listens on addr for connections redirected by k's programs.
// workloadDirs are the workload cgroups (relative to the mount) searched to
// name a connecting process's cgroup.
func (k *Kernel) Listen(addr netip.AddrPort, workloadDirs []string) (*Listener, error) {
	ln, err := net.ListenTCP("tcp", net.TCPAddrFromAddrPort(addr))
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	cookie, err := netnsCookie(ln)
	if err != nil {
		ln.Close()
		return nil, err
	}
	diag, err := newSockDiag()
	if err != nil {
		ln.Close()
		return nil, err
	}
	l := &Listener{ln: ln, diag: diag, flows: k.coll.Maps[bpf.RedirectMapLgFlows], netns: cookie, mount: k.mount}
	for _, d := range workloadDirs {
		l.cgroups = append(l.cgroups, filepath.Join(k.mount, filepath.Clean("/"+d)))
	}
	return l, nil
}

// Addr is the listening address.
func (l *Listener) Addr() net.Addr { return l.ln.Addr() }

// Close stops accepting. Connections already accepted are unaffected. An
// Accept running concurrently may fail its socket check and refuse.
func (l *Listener) Close() error {
	err := l.ln.Close()
	l.diag.Close()
	return err
}

// Accept waits for a connection and returns it with its Origin. A connection
// without a valid redirect record is returned with a nil Origin and an error
// wrapping ErrNoOrigin; the caller must record and close it. Any other error
// comes with a nil conn.
func (l *Listener) Accept() (*net.TCPConn, *Origin, error) {
	c, err := l.ln.AcceptTCP()
	if err != nil {
		return nil, nil, err
	}
	o, err := l.origin(c)
	if err != nil {
		return c, nil, err
	}
	return c, o, nil
}

func (l *Listener) origin(c *net.TCPConn) (*Origin, error) {
	client := c.RemoteAddr().(*net.TCPAddr).AddrPort()
	local := c.LocalAddr().(*net.TCPAddr).AddrPort()
	key := bpf.RedirectFlowKey{
		ClientAddr:  as16(client.Addr()),
		ListenAddr:  as16(local.Addr()),
		ClientPort:  client.Port(),
		ListenPort:  local.Port(),
		NetnsCookie: l.netns,
	}
	var rec bpf.RedirectRecord
	if err := l.flows.LookupAndDelete(&key, &rec); err != nil {
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			return nil, fmt.Errorf("connection from %s: %w", client, ErrNoOrigin)
		}
		return nil, fmt.Errorf("look up flow of %s: %w", client, err)
	}
	if age := time.Duration(monotonicNS() - rec.Ktime); age > maxFlowAge {
		return nil, fmt.Errorf("connection from %s: %w (record %s old)", client, ErrNoOrigin, age.Round(time.Second))
	}
	// The record names a socket; only that socket may present it.
	if err := l.diag.check(client, local, rec.SocketCookie); err != nil {
		return nil, fmt.Errorf("connection from %s: %w (%v)", client, ErrNoOrigin, err)
	}
	orig, _ := netip.AddrFromSlice(rec.OrigAddr[:])
	o := &Origin{
		OrigDst:      netip.AddrPortFrom(orig.Unmap(), rec.OrigPort),
		Client:       client,
		TargetID:     rec.TargetId,
		WorkloadID:   rec.WorkloadId,
		PID:          int(rec.Tgid),
		TID:          int(rec.Tid),
		UID:          rec.Uid,
		GID:          rec.Gid,
		CgroupID:     rec.CgroupId,
		NetnsCookie:  rec.NetnsCookie,
		SocketCookie: rec.SocketCookie,
		Comm:         commString(rec.Comm),
	}
	o.Process, o.ProcessErr = ReadProcess(o.PID, rec.StartBoottime)
	if o.ProcessErr != nil {
		o.Process.Start = bootToWall(rec.StartBoottime)
	}
	o.CgroupPath = l.paths.lookup(l.mount, rec.CgroupId, l.cgroups)
	return o, nil
}

// cgroupPaths caches the paths of cgroup ids: walking the workload trees
// on every accept was an eighth of the daemon's CPU with a connection per
// transaction. A cached path is checked (one stat) before it is used: a
// cgroup renamed or removed since is looked up again.
type cgroupPaths struct {
	mu sync.Mutex
	m  map[uint64]string // id -> path relative to the mount
}

// maxCachedCgroups bounds the cache; it is emptied when full.
const maxCachedCgroups = 4096

func (c *cgroupPaths) lookup(mount string, id uint64, roots []string) string {
	c.mu.Lock()
	rel, ok := c.m[id]
	c.mu.Unlock()
	if ok {
		if cid, err := CgroupID(filepath.Join(mount, rel)); err == nil && cid == id {
			return rel
		}
	}
	rel, ok = CgroupPathOf(mount, id, roots...)
	if !ok {
		return ""
	}
	c.mu.Lock()
	if c.m == nil || len(c.m) >= maxCachedCgroups {
		c.m = map[uint64]string{}
	}
	c.m[id] = rel
	c.mu.Unlock()
	return rel
}

func commString(c [16]int8) string {
	b := make([]byte, 0, len(c))
	for _, ch := range c {
		if ch == 0 {
			break
		}
		b = append(b, byte(ch))
	}
	return string(b)
}

// netnsCookie returns the network namespace cookie of a socket
// (SO_NETNS_COOKIE, Linux 5.14+), the value bpf_get_netns_cookie gives.
func netnsCookie(ln *net.TCPListener) (uint64, error) {
	rc, err := ln.SyscallConn()
	if err != nil {
		return 0, err
	}
	var cookie uint64
	var serr error
	err = rc.Control(func(fd uintptr) {
		cookie, serr = unix.GetsockoptUint64(int(fd), unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
	})
	if err == nil {
		err = serr
	}
	if err != nil {
		return 0, fmt.Errorf("get netns cookie: %w", err)
	}
	return cookie, nil
}
