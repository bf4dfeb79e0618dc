package tests

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/loopgate/loopgate/intercept"
	"github.com/loopgate/loopgate/tests/lgtest"
)

// The attack suite: each case runs the hostile program itself, as an
// unprivileged user inside a workload, and asserts the outcome the README's
// threat model promises. The table there lists these cases by name; the TTY
// and budget attacks live in attack_tty_test.go and attack_budget_test.go.

// attackSetup is a daemon with an open and a default-deny workload, TCP
// targets on IPv4 and IPv6, a PostgreSQL target, and things a deny workload
// may and may not reach by UDP and unix sockets.
type attackSetup struct {
	cfg    string
	daemon *lgtest.Daemon
	listen string
	echo4  *lgtest.Echo // target
	echo6  *lgtest.Echo // target
	other  *lgtest.Echo // not a target, not allowed: 127.0.0.3
	pg     *lgtest.Postgres
	// udpAllowed is on the deny workload's allow list (udp://).
	udpAllowed *net.UDPConn
	// Unix sockets: paths in a directory anyone may traverse, and abstract
	// names; the "allowed" ones are on the deny workload's allow list.
	unixAllowed, unixDenied, unixDgram string
	abstractAllowed, abstractDenied    string
}

func newAttackSetup(t *testing.T) *attackSetup {
	t.Helper()
	lgtest.RequireRoot(t)
	s := &attackSetup{
		echo4:  lgtest.StartEcho(t, "127.0.0.2:0"),
		echo6:  lgtest.StartEcho(t, "[::1]:0"),
		other:  lgtest.StartEcho(t, "127.0.0.3:0"),
		pg:     lgtest.StartPostgres(t),
		listen: "127.0.0.1:" + strconv.Itoa(lgtest.FreePort(t)),
	}
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 5)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { udp.Close() })
	s.udpAllowed = udp

	sockDir := lgtest.SharedDir(t) // 0755
	s.unixAllowed = filepath.Join(sockDir, "allowed.sock")
	s.unixDenied = filepath.Join(sockDir, "denied.sock")
	s.unixDgram = filepath.Join(sockDir, "denied-dgram.sock")
	tag := strconv.Itoa(os.Getpid()) + "-" + strconv.FormatInt(time.Now().UnixNano()%1e9, 10)
	s.abstractAllowed = "@loopgate-test-allowed-" + tag
	s.abstractDenied = "@loopgate-test-denied-" + tag
	for _, p := range []string{s.unixAllowed, s.unixDenied, s.abstractAllowed, s.abstractDenied} {
		unixEcho(t, p)
	}
	dg, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: s.unixDgram, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dg.Close() })
	os.Chmod(s.unixDgram, 0o777)

	dir := t.TempDir()
	pass := filepath.Join(dir, "pg.pass")
	os.WriteFile(pass, []byte(s.pg.SuperPassword+"\n"), 0o600)
	cg := lgtest.CgroupName(t)
	s.cfg = lgtest.WriteConfig(t, fmt.Sprintf(`listen: %s
store: %s
bpffs: %s
daemon_cgroup: %s-daemon
api: {socket: %s}
targets:
  - {name: echo4, protocol: tcp, address: "%s"}
  - {name: echo6, protocol: tcp, address: "%s"}
  - name: pg
    protocol: postgres
    address: %s
    credentials: {user: postgres, password_file: %s}
workloads:
  - {name: open, cgroup: %s/open}
  - name: closed
    cgroup: %s/closed
    default: deny
    allow: ["udp://%s", "unix://%s", "unix:%s"]
rules:
  - {id: echo, workloads: [open, closed], targets: [echo4, echo6], allow: [connect]}
  - {id: pg, workloads: [open, closed], targets: [pg], allow: ["*"]}
`, s.listen, filepath.Join(dir, "loopgate.db"), lgtest.PinDir(t), cg,
		filepath.Join(lgtest.SharedDir(t), "api.sock"), s.echo4.Addr(), s.echo6.Addr(), s.pg.Addr(), pass,
		cg, cg, udp.LocalAddr(), s.unixAllowed, s.abstractAllowed))
	s.daemon = lgtest.StartDaemon(t, s.cfg)
	return s
}

// unixEcho serves a unix stream socket at path ("@name" is abstract) that
// anyone may connect to, answering each connection's first line.
func unixEcho(t *testing.T, path string) {
	t.Helper()
	name := path
	if n, ok := strings.CutPrefix(path, "@"); ok {
		name = "\x00" + n
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: name, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(path, "@") {
		os.Chmod(path, 0o777)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				line, _ := bufio.NewReader(c).ReadString('\n')
				c.Write([]byte(line))
			}()
		}
	}()
}

// run runs a client mode as nobody in a workload.
func (s *attackSetup) run(t *testing.T, workload, mode string, args ...string) clientResult {
	t.Helper()
	var r clientResult
	client(t, s.cfg, workload, "nobody", &r, mode, args...)
	return r
}

func wantErrno(t *testing.T, what string, r clientResult, errno syscall.Errno) {
	t.Helper()
	if r.Errno != int(errno) {
		t.Errorf("%s: %+v, want %v", what, r, errno)
	}
}

func wantOK(t *testing.T, what string, r clientResult) {
	t.Helper()
	if r.Err != "" {
		t.Errorf("%s: %+v, want success", what, r)
	}
}

func TestAttack(t *testing.T) {
	s := newAttackSetup(t)
	echo4 := s.echo4.Addr().String()
	before := len(s.echo4.Peers())

	t.Run("udp to a target", func(t *testing.T) {
		wantErrno(t, "sendto", s.run(t, "open", "udpsend", "4", echo4), syscall.EPERM)
		wantErrno(t, "connect", s.run(t, "open", "udpconn", "4", echo4), syscall.EPERM)
		wantErrno(t, "sendto v4-mapped", s.run(t, "open", "udpsend", "4in6", echo4), syscall.EPERM)
		// Non-target UDP from an open workload is untouched.
		wantOK(t, "sendto non-target", s.run(t, "open", "udpsend", "4", "127.0.0.3:7300"))
	})

	t.Run("udp under deny", func(t *testing.T) {
		for _, tc := range []struct{ mode, family, addr string }{
			{"udpsend", "4", "127.0.0.4:7300"},
			{"udpsend", "4", "127.0.0.53:53"}, // DNS: tunnelling
			{"udpconn", "4", "127.0.0.53:53"},
			{"udpsend", "4in6", "127.0.0.53:53"},
			{"udpsend", "6", "[::1]:53"},
		} {
			wantErrno(t, tc.mode+" "+tc.family+" "+tc.addr, s.run(t, "closed", tc.mode, tc.family, tc.addr), syscall.EPERM)
		}
		// udp:// on the allow list: the datagram arrives.
		wantOK(t, "allowed sendto", s.run(t, "closed", "udpsend", "4", s.udpAllowed.LocalAddr().String()))
		s.udpAllowed.SetReadDeadline(time.Now().Add(10 * time.Second))
		buf := make([]byte, 16)
		if n, _, err := s.udpAllowed.ReadFrom(buf); err != nil || string(buf[:n]) != "x" {
			t.Errorf("allowed datagram: %q, %v", buf[:max(n, 0)], err)
		}
		// A TCP allow list says nothing for UDP, and the reverse.
		wantErrno(t, "tcp to a udp:// entry", s.run(t, "closed", "dial", "4", s.udpAllowed.LocalAddr().String()), syscall.EPERM)
	})

	t.Run("other families under deny", func(t *testing.T) {
		other := s.other.Addr().String()
		wantErrno(t, "tcp", s.run(t, "closed", "dial", "4", other), syscall.EPERM)
		wantErrno(t, "tcp v4-mapped", s.run(t, "closed", "dial", "4in6", other), syscall.EPERM)
		wantErrno(t, "tcp fast open", s.run(t, "closed", "tfo", other), syscall.EPERM)
	})

	t.Run("unix sockets under deny", func(t *testing.T) {
		if err := intercept.UnixHooks(); err != nil {
			t.Skipf("kernel lacks the unix socket hooks: %v", err)
		}
		for _, tc := range []struct{ mode, kind, path string }{
			{"unixconn", "stream", s.unixDenied},
			{"unixconn", "stream", s.abstractDenied},
			{"unixconn", "dgram", s.unixDgram},
			{"unixsend", "", s.unixDgram},
			// Another spelling of an allowed path: it is compared as dialled.
			{"unixconn", "stream", strings.Replace(s.unixAllowed, "/allowed.sock", "//allowed.sock", 1)},
		} {
			args := []string{tc.kind, tc.path}
			if tc.kind == "" {
				args = args[1:]
			}
			wantErrno(t, tc.mode+" "+tc.path, s.run(t, "closed", tc.mode, args...), syscall.EPERM)
		}
		for _, p := range []string{s.unixAllowed, s.abstractAllowed} {
			if r := s.run(t, "closed", "unixconn", "stream", p); r.Err != "" || r.Echo != "ping" {
				t.Errorf("allowed %s: %+v", p, r)
			}
		}
		// An open workload is not limited.
		if r := s.run(t, "open", "unixconn", "stream", s.unixDenied); r.Echo != "ping" {
			t.Errorf("open workload: %+v", r)
		}
	})

	t.Run("postgres unix socket under deny", func(t *testing.T) {
		if err := intercept.UnixHooks(); err != nil {
			t.Skipf("kernel lacks the unix socket hooks: %v", err)
		}
		// Let nobody reach the socket directory, as /run/postgresql is.
		os.Chmod(s.pg.Dir, 0o711)
		port := strconv.Itoa(s.pg.Port)
		_, stderr, code := lgtest.Run(t, s.cfg, "closed", []string{"PGCONNECT_TIMEOUT=5"}, []string{"--user", "nobody"},
			"psql", "-X", "-w", "-h", s.pg.Dir, "-p", port, "-U", "postgres", "-c", "SELECT 1")
		if code == 0 || !strings.Contains(stderr, "Operation not permitted") {
			t.Errorf("psql -h %s: exit %d, stderr %q; want Operation not permitted", s.pg.Dir, code, stderr)
		}
	})

	t.Run("raw socket", func(t *testing.T) {
		for _, user := range []string{"nobody", ""} { // root too: refused by the program, not by capabilities
			var r clientResult
			client(t, s.cfg, "open", user, &r, "raw")
			wantErrno(t, "raw socket as "+user, r, syscall.EPERM)
		}
	})

	t.Run("leave cgroup", func(t *testing.T) {
		mount := lgtest.Cgroup2Mount(t)
		cfg, _ := os.ReadFile(s.cfg)
		_, open, _ := strings.Cut(string(cfg), "{name: open, cgroup: ")
		open, _, _ = strings.Cut(open, "}")
		for _, target := range []string{mount, filepath.Dir(filepath.Join(mount, open))} {
			_, stderr, code := lgtest.Run(t, s.cfg, "open", nil, []string{"--user", "nobody"},
				"sh", "-c", "echo $$ > "+filepath.Join(target, "cgroup.procs"))
			if code == 0 || !strings.Contains(stderr, "Permission denied") {
				t.Errorf("nobody moved itself into %s: exit %d, %q", target, code, stderr)
			}
		}
	})

	t.Run("direct to listener", func(t *testing.T) {
		port := strings.Split(s.listen, ":")[1]
		out, _, _ := lgtest.Run(t, s.cfg, "open", nil, []string{"--user", "nobody"}, "bash", "-c",
			`exec 3<>/dev/tcp/127.0.0.1/`+port+` && echo hi >&3 && cat <&3; echo done`)
		if !strings.HasSuffix(strings.TrimSpace(out), "done") {
			t.Fatalf("out = %q", out)
		}
		waitRefused(t, s.cfg, "no redirect record", 1)
	})

	t.Run("unshare net", func(t *testing.T) {
		script := fmt.Sprintf(`unshare -Urn bash -c 'ip link set lo up 2>/dev/null; exec 3<>/dev/tcp/127.0.0.2/%d && echo CONNECTED'`, s.echo4.Addr().Port)
		out, _, code := lgtest.Run(t, s.cfg, "open", nil, []string{"--user", "nobody"}, "bash", "-c", script)
		if code == 0 || strings.Contains(out, "CONNECTED") {
			t.Errorf("connected from a new netns: code %d out %q", code, out)
		}
	})

	if got := len(s.echo4.Peers()); got != before {
		t.Errorf("target got %d connections during escape attempts", got-before)
	}

	t.Run("io_uring connect", func(t *testing.T) {
		for _, how := range []string{"inline", "async"} {
			r := s.run(t, "open", "uring", how, echo4)
			assertRedirected(t, r)
			x := s.findSession(t, r.PID)
			if x.Workload != "open" || x.UID != 65534 {
				t.Errorf("%s: session = %+v", how, x)
			}
			wantErrno(t, how+" under deny", s.run(t, "closed", "uring", how, s.other.Addr().String()), syscall.EPERM)
		}
	})

	t.Run("getpeername names the target", func(t *testing.T) {
		for _, tc := range []struct{ family, addr, want string }{
			{"4", echo4, echo4},
			{"4in6", echo4, echo4}, // Go prints ::ffff:127.0.0.2 as 127.0.0.2
			{"6", s.echo6.Addr().String(), s.echo6.Addr().String()},
		} {
			r := s.run(t, "open", "dial", tc.family, tc.addr)
			assertRedirected(t, r)
			if r.Remote != tc.want {
				t.Errorf("%s: getpeername = %s, want %s", tc.family, r.Remote, tc.want)
			}
		}
	})

	t.Run("pgx cancel through getpeername", func(t *testing.T) {
		dsn := "postgres://postgres@" + s.pg.Addr() + "/postgres?sslmode=disable&connect_timeout=10"
		r := s.run(t, "open", "pgcancel", dsn)
		if r.Remote != s.pg.Addr() {
			t.Errorf("RemoteAddr = %s, want %s", r.Remote, s.pg.Addr())
		}
		if r.Err != "57014" {
			t.Errorf("pg_sleep ended with %q after %s, want 57014 (cancelled by the server)", r.Err, r.Echo)
		}
	})

	t.Run("stale record after restart", func(t *testing.T) {
		s.staleRecord(t)
	})
}

// staleRecord is the hijack of issue #11: a workload socket's record is
// published while the daemon is stopped, the daemon is killed and
// restarted, and a process outside every workload presents the same tuple
// straight to the listener. It must be refused, and recorded.
func (s *attackSetup) staleRecord(t *testing.T) {
	port := strconv.Itoa(lgtest.FreePort(t))
	peers := len(s.echo4.Peers())
	refused := countRefused(t, s.cfg, "no redirect record")
	s.daemon.Signal(syscall.SIGSTOP)
	r := s.run(t, "open", "bindsend", port, s.echo4.Addr().String())
	if r.Err != "" {
		s.daemon.Signal(syscall.SIGCONT)
		t.Fatalf("workload connect while the daemon is stopped: %+v", r)
	}
	s.daemon.Stop(syscall.SIGKILL)
	s.daemon.Restart()

	cmd := exec.Command(clientBin, port, s.listen)
	cmd.Env = append(os.Environ(), "LG_CLIENT=bindsend")
	out, err := cmd.Output()
	if err != nil || !strings.Contains(string(out), `"local"`) {
		t.Fatalf("outside connect from port %s: %v %s", port, err, out)
	}
	waitRefused(t, s.cfg, "no redirect record", refused+1)
	if got := len(s.echo4.Peers()); got != peers {
		t.Errorf("the target got %d connections: the stale record was used", got-peers)
	}
}

// findSession waits until a session of pid appears with an end recorded.
func (s *attackSetup) findSession(t *testing.T, pid int) lgtest.Session {
	t.Helper()
	return (&setup{cfg: s.cfg}).findSession(t, pid)
}

func countRefused(t *testing.T, cfg, reason string) int {
	t.Helper()
	n := 0
	for _, x := range lgtest.Sessions(t, cfg, "--outcome", "refused") {
		if strings.Contains(x.Error, reason) {
			n++
		}
	}
	return n
}

// waitRefused waits until at least n refused sessions give reason.
func waitRefused(t *testing.T, cfg, reason string, n int) {
	t.Helper()
	lgtest.Eventually(t, 10*time.Second, fmt.Sprintf("%d refused sessions with %q", n, reason), func() bool {
		return countRefused(t, cfg, reason) >= n
	})
}
