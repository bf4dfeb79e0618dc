// Package lgtest holds the fixtures loopgate's tests share: real components
// (cgroups, bpffs, echo targets, the daemon binary) started with cleanup.
//
// A helper that cannot get its real component skips the test with a reason
// locally and fails it when CI=true: CI must never go green on a skipped
// kernel feature.
package lgtest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// InCI reports whether the tests run under CI (CI=true).
func InCI() bool { return os.Getenv("CI") == "true" }

// Unavailable skips t locally and fails it in CI.
func Unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if InCI() {
		t.Fatalf("required component unavailable under CI=true: %s", msg)
	}
	t.Skip(msg)
}

// RequireRoot needs uid 0.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		Unavailable(t, "needs root")
	}
}

// Cgroup2Mount returns the cgroup2 mount point from /proc/mounts.
func Cgroup2Mount(t testing.TB) string {
	t.Helper()
	f, err := os.Open("/proc/mounts")
	if err != nil {
		Unavailable(t, "read /proc/mounts: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 3 && fields[2] == "cgroup2" {
			return fields[1]
		}
	}
	Unavailable(t, "no cgroup2 mount")
	return ""
}

// CgroupName returns a cgroup path (relative to the mount) unique to t,
// below "loopgate-test/"; when t ends it removes that cgroup and its
// siblings named with a suffix ("<name>-daemon", "<name>-b"), which tests
// derive from it.
func CgroupName(t testing.TB) string {
	t.Helper()
	mount := Cgroup2Mount(t)
	name := fmt.Sprintf("loopgate-test/%s-%d", sanitize(t.Name()), time.Now().UnixNano()%1e9)
	t.Cleanup(func() {
		dir := filepath.Join(mount, name)
		siblings, _ := filepath.Glob(dir + "-*")
		for _, d := range append(siblings, dir) {
			removeCgroupTree(d)
		}
	})
	return name
}

func sanitize(s string) string {
	s = strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-':
			return r
		}
		return '-'
	}, s)
	if len(s) > 40 {
		s = s[len(s)-40:]
	}
	return s
}

// removeCgroupTree kills what is left in a test cgroup and removes it.
func removeCgroupTree(dir string) {
	if _, err := os.Stat(dir); err != nil {
		return
	}
	os.WriteFile(filepath.Join(dir, "cgroup.kill"), []byte("1"), 0)
	deadline := time.Now().Add(5 * time.Second)
	for {
		var dirs []string
		filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			syscall.Rmdir(dirs[i])
		}
		if _, err := os.Stat(dir); err != nil || time.Now().After(deadline) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// PinDir returns a bpffs pin directory unique to t, removed (unpinning
// everything in it) when t ends.
func PinDir(t testing.TB) string {
	t.Helper()
	dir := fmt.Sprintf("/sys/fs/bpf/loopgate-test/%s-%d", sanitize(t.Name()), time.Now().UnixNano()%1e9)
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// FreePort returns a TCP port free on 127.0.0.1 just now.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// Echo is a TCP target: for each connection it writes one line "peer <addr>"
// (the source address it sees), then echoes everything back.
type Echo struct {
	ln    net.Listener
	wg    sync.WaitGroup
	mu    sync.Mutex
	peers []string
	conns []net.Conn
}

// StartEcho starts an Echo on addr (e.g. "127.0.0.2:0", "[::1]:0").
func StartEcho(t testing.TB, addr string) *Echo {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		Unavailable(t, "listen %s: %v", addr, err)
	}
	e := &Echo{ln: ln}
	e.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			e.mu.Lock()
			e.peers = append(e.peers, c.RemoteAddr().String())
			e.conns = append(e.conns, c)
			e.mu.Unlock()
			e.wg.Go(func() {
				defer c.Close()
				fmt.Fprintf(c, "peer %s\n", c.RemoteAddr())
				io.Copy(c, c)
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		e.mu.Lock()
		for _, c := range e.conns {
			c.Close()
		}
		e.mu.Unlock()
		e.wg.Wait()
	})
	return e
}

// Addr is the echo server's address.
func (e *Echo) Addr() *net.TCPAddr { return e.ln.Addr().(*net.TCPAddr) }

// Peers returns the source addresses of connections so far.
func (e *Echo) Peers() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.peers...)
}

// Eventually polls cond every 20ms until it holds or timeout passes.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Context returns a context cancelled after d or when t ends.
func Context(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// HostsEntry adds a host name unique to t to /etc/hosts with the given
// addresses and returns it; the file is restored when t ends.
func HostsEntry(t testing.TB, addrs ...string) string {
	t.Helper()
	const path = "/etc/hosts"
	orig, err := os.ReadFile(path)
	if err != nil {
		Unavailable(t, "read %s: %v", path, err)
	}
	name := fmt.Sprintf("lgtest-%d.test", time.Now().UnixNano()%1e9)
	var b strings.Builder
	b.Write(orig)
	if len(orig) > 0 && orig[len(orig)-1] != '\n' {
		b.WriteByte('\n')
	}
	for _, a := range addrs {
		fmt.Fprintf(&b, "%s %s\n", a, name)
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		Unavailable(t, "write %s: %v", path, err)
	}
	t.Cleanup(func() { os.WriteFile(path, orig, 0o644) })
	return name
}

// SharedDir returns a directory that every local user may traverse (for
// sockets unprivileged test clients connect to), removed when t ends.
func SharedDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "lgtest-shared-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}
