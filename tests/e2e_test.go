package tests

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/loopgate/loopgate/tests/lgtest"
)

// clientBin is a copy of this test binary that any user may execute.
var clientBin string

func TestMain(m *testing.M) {
	if os.Getenv("LG_CLIENT") != "" {
		os.Exit(clientMain())
	}
	if os.Getenv("LG_EPOLL_RELAY") != "" {
		os.Exit(epollRelayMain())
	}
	if os.Getenv("LG_SECCOMP") != "" {
		os.Exit(seccompExec()) // caps_test.go
	}
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "loopgate-client-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	os.Chmod(dir, 0o755)
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	clientBin = filepath.Join(dir, "lgclient")
	if err := copyFile(self, clientBin, 0o755); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// client runs the client binary in a workload and decodes its JSON answer
// into out.
func client(t testing.TB, cfg, workload, user string, out any, mode string, args ...string) {
	t.Helper()
	var extra []string
	if user != "" {
		extra = []string{"--user", user}
	}
	stdout, stderr, code := lgtest.Run(t, cfg, workload, []string{"LG_CLIENT=" + mode}, extra, append([]string{clientBin}, args...)...)
	if code != 0 {
		t.Fatalf("client %s exited %d: %s", mode, code, stderr)
	}
	// Decode into a zeroed value: callers reuse results between calls.
	switch v := out.(type) {
	case *clientResult:
		*v = clientResult{}
	case *[]clientResult:
		*v = nil
	case *benchResult:
		*v = benchResult{}
	}
	if err := json.Unmarshal([]byte(stdout), out); err != nil {
		t.Fatalf("client %s: bad output %q: %v", mode, stdout, err)
	}
}

// setup is one daemon with targets and workloads shared by a test's subtests.
type setup struct {
	cfg     string
	daemon  *lgtest.Daemon
	echo4   *lgtest.Echo // target "echo4" on 127.0.0.2
	echo6   *lgtest.Echo // target "echo6" on [::1]
	other   *lgtest.Echo // not a target: 127.0.0.3
	allowed *lgtest.Echo // not a target, in deny-workload's allow list: 127.0.0.4
	listen  string
	allowCg string
	denyCg  string
}

func newSetup(t testing.TB) *setup {
	t.Helper()
	lgtest.RequireRoot(t)
	s := &setup{
		echo4:   lgtest.StartEcho(t, "127.0.0.2:0"),
		echo6:   lgtest.StartEcho(t, "[::1]:0"),
		other:   lgtest.StartEcho(t, "127.0.0.3:0"),
		allowed: lgtest.StartEcho(t, "127.0.0.4:0"),
		listen:  "127.0.0.1:" + strconv.Itoa(lgtest.FreePort(t)),
		allowCg: lgtest.CgroupName(t) + "/open",
		denyCg:  lgtest.CgroupName(t) + "/closed",
	}
	dir := t.TempDir()
	s.cfg = lgtest.WriteConfig(t, fmt.Sprintf(`listen: %s
store: %s
bpffs: %s
daemon_cgroup: %s
api: {socket: `+filepath.Join(lgtest.SharedDir(t), "api.sock")+`}
oidc:
  - {issuer: "https://idp.invalid", audience: loopgate}
targets:
  - name: echo4
    protocol: tcp
    address: %s
  - name: echo6
    protocol: tcp
    addresses: ["%s"]
workloads:
  - name: open
    cgroup: %s
    default: allow
  - name: closed
    cgroup: %s
    default: deny
    allow: ["%s"]
  - name: unruled
    cgroup: %s/unruled
  - name: signed
    cgroup: %s/signed
    token: {issuer: "https://idp.invalid", subject: "repo:acme"}
rules:
  - id: agents-connect
    workloads: [open, closed, signed]
    targets: ["*"]
    allow: [connect]
`, s.listen, filepath.Join(dir, "loopgate.db"), lgtest.PinDir(t), lgtest.CgroupName(t)+"-daemon",
		s.echo4.Addr(), s.echo6.Addr(), s.allowCg, s.denyCg, s.allowed.Addr(), s.allowCg+"-x", s.allowCg+"-x"))
	s.daemon = lgtest.StartDaemon(t, s.cfg)
	return s
}

func (s *setup) sessions(t *testing.T, args ...string) []lgtest.Session {
	t.Helper()
	return lgtest.Sessions(t, s.cfg, args...)
}

// findSession waits until a session of pid appears with an end recorded.
func (s *setup) findSession(t *testing.T, pid int) lgtest.Session {
	t.Helper()
	var found lgtest.Session
	lgtest.Eventually(t, 10*time.Second, fmt.Sprintf("session of pid %d", pid), func() bool {
		for _, x := range s.sessions(t) {
			if x.PID == pid && x.Ended != "" {
				found = x
				return true
			}
		}
		return false
	})
	return found
}

// assertRedirected checks a client result went through the daemon: the echo
// target saw the daemon's socket, not the client's.
func assertRedirected(t *testing.T, r clientResult) {
	t.Helper()
	if r.Err != "" {
		t.Fatalf("client error: %s", r.Err)
	}
	if r.Echo != "ping" {
		t.Errorf("echo = %q, want ping", r.Echo)
	}
	if r.Peer == r.Local {
		t.Errorf("target saw the client's own socket %s: not redirected", r.Local)
	}
}

func assertDirect(t *testing.T, r clientResult) {
	t.Helper()
	if r.Err != "" {
		t.Fatalf("client error: %s", r.Err)
	}
	if r.Peer != r.Local {
		t.Errorf("target saw %s, client is %s: connection was redirected", r.Peer, r.Local)
	}
}

func TestRedirect(t *testing.T) {
	s := newSetup(t)

	t.Run("bash /dev/tcp", func(t *testing.T) {
		script := fmt.Sprintf(`echo $$; exec 3<>/dev/tcp/127.0.0.2/%d; echo hello >&3; read -r peer <&3; read -r echo <&3; echo "$echo"`, s.echo4.Addr().Port)
		out, stderr, code := lgtest.Run(t, s.cfg, "open", nil, nil, "bash", "-c", script)
		if code != 0 {
			t.Fatalf("bash exited %d: %s", code, stderr)
		}
		lines := strings.Fields(out)
		if len(lines) != 2 || lines[1] != "hello" {
			t.Fatalf("bash printed %q", out)
		}
		pid, _ := strconv.Atoi(lines[0])
		x := s.findSession(t, pid)
		bash, _ := exec.LookPath("bash")
		if x.Exe != bash || x.UID != 0 || x.OrigDst != s.echo4.Addr().String() ||
			x.Workload != "open" || x.Target != "echo4" || x.CgroupPath != s.allowCg ||
			x.Outcome != "closed" || x.BytesUp != 6 || x.ProcStart == "" {
			t.Errorf("session = %+v", x)
		}
		// The bytes count both ways: "hello\n" up; peer line + echo down.
		if x.BytesDown < 6 {
			t.Errorf("bytes down = %d", x.BytesDown)
		}
	})

	t.Run("curl", func(t *testing.T) {
		// curl speaks HTTP to a byte echo: the echo's "peer" line is not
		// HTTP, so curl fails to parse it, but only after connecting
		// through the daemon. What matters is the recorded session.
		_, _, _ = lgtest.Run(t, s.cfg, "open", nil, nil, "curl", "-sS", "-m", "5", "--http0.9",
			fmt.Sprintf("http://127.0.0.2:%d/", s.echo4.Addr().Port))
		var got bool
		lgtest.Eventually(t, 10*time.Second, "curl session", func() bool {
			for _, x := range s.sessions(t) {
				if strings.HasSuffix(x.Exe, "/curl") {
					got = true
				}
			}
			return got
		})
	})

	for _, tc := range []struct {
		name, family, target string
	}{
		{"ipv4", "4", ""},
		{"ipv6", "6", "echo6"},
		{"v4-mapped on AF_INET6", "4in6", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr := s.echo4.Addr().String()
			if tc.target == "echo6" {
				addr = s.echo6.Addr().String()
			}
			var r clientResult
			client(t, s.cfg, "open", "", &r, "dial", tc.family, addr)
			assertRedirected(t, r)
			x := s.findSession(t, r.PID)
			if x.OrigDst != addr || x.Exe != clientBin {
				t.Errorf("session = %+v, want orig %s exe %s", x, addr, clientBin)
			}
		})
	}

	t.Run("tcp fast open sendto", func(t *testing.T) {
		var r clientResult
		client(t, s.cfg, "open", "", &r, "tfo", s.echo4.Addr().String())
		assertRedirected(t, r)
		s.findSession(t, r.PID)
	})

	t.Run("grandchild", func(t *testing.T) {
		script := fmt.Sprintf(`bash -c 'echo $$; exec 3<>/dev/tcp/127.0.0.2/%d; echo hi >&3; read -r p <&3; read -r e <&3; echo $e'`, s.echo4.Addr().Port)
		out, stderr, code := lgtest.Run(t, s.cfg, "open", nil, nil, "bash", "-c", script+"; true")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		f := strings.Fields(out)
		if len(f) != 2 || f[1] != "hi" {
			t.Fatalf("got %q", out)
		}
		pid, _ := strconv.Atoi(f[0])
		x := s.findSession(t, pid)
		if x.Workload != "open" {
			t.Errorf("session = %+v", x)
		}
	})

	t.Run("200 concurrent", func(t *testing.T) {
		var rs []clientResult
		client(t, s.cfg, "open", "", &rs, "many", "200", s.echo4.Addr().String())
		if len(rs) != 200 {
			t.Fatalf("%d results", len(rs))
		}
		clients := map[string]bool{}
		for _, r := range rs {
			assertRedirected(t, r)
			clients[r.Peer] = true
		}
		pid := rs[0].PID
		lgtest.Eventually(t, 20*time.Second, "200 sessions", func() bool {
			n := 0
			for _, x := range s.sessions(t) {
				if x.PID == pid && x.Ended != "" && x.BytesUp == 5 && x.Outcome == "closed" {
					n++
				}
			}
			return n == 200
		})
	})

	t.Run("non-target untouched", func(t *testing.T) {
		var r clientResult
		client(t, s.cfg, "open", "", &r, "dial", "4", s.other.Addr().String())
		assertDirect(t, r)
		for _, x := range s.sessions(t) {
			if x.PID == r.PID {
				t.Errorf("non-target connection recorded: %+v", x)
			}
		}
	})

	t.Run("outside workload untouched", func(t *testing.T) {
		c, err := net.Dial("tcp", s.echo4.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		line := make([]byte, 128)
		n, _ := c.Read(line)
		if got := strings.TrimSpace(strings.TrimPrefix(string(line[:n]), "peer ")); got != c.LocalAddr().String() {
			t.Errorf("target saw %s, we are %s", got, c.LocalAddr())
		}
	})

	t.Run("default deny", func(t *testing.T) {
		var r clientResult
		client(t, s.cfg, "closed", "nobody", &r, "dial", "4", s.other.Addr().String())
		if r.Errno != int(syscall.EPERM) {
			t.Errorf("non-allowed destination: %+v, want EPERM", r)
		}
		client(t, s.cfg, "closed", "nobody", &r, "dial", "4", s.allowed.Addr().String())
		assertDirect(t, r)
		client(t, s.cfg, "closed", "nobody", &r, "dial", "4", s.echo4.Addr().String())
		assertRedirected(t, r)
		if x := s.findSession(t, r.PID); x.UID != 65534 || x.Workload != "closed" {
			t.Errorf("session = %+v", x)
		}
	})
}

func TestDaemonStopFailsClosed(t *testing.T) {
	s := newSetup(t)
	check := func(t *testing.T, wantUp bool) {
		t.Helper()
		var r clientResult
		peers := len(s.echo4.Peers())
		client(t, s.cfg, "open", "", &r, "dial", "4", s.echo4.Addr().String())
		if wantUp {
			assertRedirected(t, r)
			return
		}
		if r.Errno != int(syscall.ECONNREFUSED) {
			t.Errorf("daemon down: %+v, want ECONNREFUSED", r)
		}
		if got := len(s.echo4.Peers()); got != peers {
			t.Errorf("daemon down: target reached directly")
		}
	}
	check(t, true)
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGKILL} {
		t.Run(sig.String(), func(t *testing.T) {
			s.daemon.Stop(sig)
			check(t, false)
			s.daemon.Restart()
			check(t, true)
		})
	}
}

func TestBadConfig(t *testing.T) {
	lgtest.RequireRoot(t)
	cfg := lgtest.WriteConfig(t, "listen: 127.0.0.1:15001\ntargets:\n  - name: x\n    protocol: tcp\n    adress: 1.2.3.4:5\n")
	out, err := exec.Command(lgtest.Binary(t), "daemon", "--config", cfg).CombinedOutput()
	if err == nil {
		t.Fatalf("daemon started on a bad config: %s", out)
	}
	if want := cfg + `:5:5: target: unknown key "adress"`; !strings.Contains(string(out), want) {
		t.Errorf("output %q does not contain %q", out, want)
	}
}

func TestReloadAndHostNames(t *testing.T) {
	s := newSetup(t)
	// A target named by host, with an A and an AAAA record; both must be
	// protected. The name lives in /etc/hosts for the length of the test.
	host := lgtest.HostsEntry(t, "127.0.0.1", "::1")
	named4 := lgtest.StartEcho(t, "127.0.0.1:0")
	port := named4.Addr().Port
	named6 := lgtest.StartEcho(t, fmt.Sprintf("[::1]:%d", port))

	// Before the reload, 127.0.0.1:port is just another destination.
	var r clientResult
	client(t, s.cfg, "open", "", &r, "dial", "4", named4.Addr().String())
	assertDirect(t, r)

	text, err := os.ReadFile(s.cfg)
	if err != nil {
		t.Fatal(err)
	}
	added := strings.Replace(string(text), "workloads:\n", fmt.Sprintf("  - name: named\n    protocol: tcp\n    address: %s:%d\nworkloads:\n", host, port), 1)
	if err := os.WriteFile(s.cfg, []byte(added), 0o600); err != nil {
		t.Fatal(err)
	}
	s.daemon.Signal(syscall.SIGHUP)
	lgtest.Eventually(t, 10*time.Second, "reload", func() bool { return strings.Contains(s.daemon.Log(), "config reloaded") })

	client(t, s.cfg, "open", "", &r, "dial", "4", named4.Addr().String())
	assertRedirected(t, r)
	if x := s.findSession(t, r.PID); x.Target != "named" {
		t.Errorf("session = %+v", x)
	}
	client(t, s.cfg, "open", "", &r, "dial", "6", named6.Addr().String())
	assertRedirected(t, r)

	// A bad file is refused and the running config stays.
	if err := os.WriteFile(s.cfg, []byte(added+"bogus: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s.daemon.Signal(syscall.SIGHUP)
	lgtest.Eventually(t, 10*time.Second, "refused reload", func() bool {
		return strings.Contains(s.daemon.Log(), "reload refused") && strings.Contains(s.daemon.Log(), `unknown key \"bogus\"`)
	})
	// Restore the file without a reload: still redirected, so the
	// running config survived the bad one.
	if err := os.WriteFile(s.cfg, []byte(added), 0o600); err != nil {
		t.Fatal(err)
	}
	client(t, s.cfg, "open", "", &r, "dial", "4", named4.Addr().String())
	assertRedirected(t, r)
}

func TestRunRefusesUnenforcedWorkload(t *testing.T) {
	lgtest.RequireRoot(t)
	cg := lgtest.CgroupName(t)
	cfg := lgtest.WriteConfig(t, fmt.Sprintf("bpffs: %s\nworkloads:\n  - {name: w, cgroup: %s}\n", lgtest.PinDir(t), cg))
	// Even with the cgroup present, nothing may start without the redirect.
	if err := os.MkdirAll(filepath.Join(lgtest.Cgroup2Mount(t), cg), 0o755); err != nil {
		t.Fatal(err)
	}
	out, stderr, code := lgtest.Run(t, cfg, "w", nil, nil, "echo", "ran")
	if code != 3 || strings.Contains(out, "ran") || !strings.Contains(stderr, "not enforced") {
		t.Errorf("code %d out %q stderr %q", code, out, stderr)
	}
}

func TestPolicyDecisions(t *testing.T) {
	s := newSetup(t)
	for _, tc := range []struct {
		workload, want string
	}{
		{"unruled", "no rule lets workload unruled use target echo4 (default deny)"},
		{"signed", `workload "signed" must present an OIDC token`},
	} {
		t.Run(tc.workload, func(t *testing.T) {
			peers := len(s.echo4.Peers())
			script := fmt.Sprintf(`echo $$; exec 3<>/dev/tcp/127.0.0.2/%d || exit 9; echo hi >&3; cat <&3; echo eof`, s.echo4.Addr().Port)
			out, stderr, code := lgtest.Run(t, s.cfg, tc.workload, nil, nil, "bash", "-c", script)
			f := strings.Fields(out)
			if code != 0 || len(f) != 2 || f[1] != "eof" {
				t.Fatalf("code %d out %q stderr %q: want the connection closed without data", code, out, stderr)
			}
			pid, _ := strconv.Atoi(f[0])
			x := s.findSession(t, pid)
			if x.Outcome != "denied" || !strings.Contains(x.Error, tc.want) {
				t.Errorf("session = %+v, want denied: %s", x, tc.want)
			}
			if got := len(s.echo4.Peers()); got != peers {
				t.Error("denied session reached the target")
			}
		})
	}
}

func TestReloadRevokesLiveSession(t *testing.T) {
	s := newSetup(t)
	script := fmt.Sprintf(`echo $$; exec 3<>/dev/tcp/127.0.0.2/%d; read -r peer <&3; echo connected; cat <&3 >/dev/null; echo closed`, s.echo4.Addr().Port)
	cmd := exec.Command(lgtest.Binary(t), "run", "--config", s.cfg, "--workload", "open", "--", "bash", "-c", script)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()
	lines := make(chan string, 4)
	go func() {
		buf := make([]byte, 256)
		var acc string
		for {
			n, err := stdout.Read(buf)
			acc += string(buf[:n])
			for {
				i := strings.IndexByte(acc, '\n')
				if i < 0 {
					break
				}
				lines <- acc[:i]
				acc = acc[i+1:]
			}
			if err != nil {
				close(lines)
				return
			}
		}
	}()
	next := func(want string) string {
		select {
		case l := <-lines:
			if want != "" && l != want {
				t.Fatalf("client said %q, want %q", l, want)
			}
			return l
		case <-time.After(10 * time.Second):
			t.Fatalf("client did not say %q within 10s", want)
		}
		return ""
	}
	pid, _ := strconv.Atoi(next(""))
	next("connected")

	text, _ := os.ReadFile(s.cfg)
	revoked := strings.Replace(string(text), "workloads: [open, closed, signed]", "workloads: [closed, signed]", 1)
	if err := os.WriteFile(s.cfg, []byte(revoked), 0o600); err != nil {
		t.Fatal(err)
	}
	s.daemon.Signal(syscall.SIGHUP)
	next("closed")
	x := s.findSession(t, pid)
	if x.Outcome != "revoked" || !strings.Contains(x.Error, "no rule lets workload open") {
		t.Errorf("session = %+v", x)
	}
}

func TestAuditTrail(t *testing.T) {
	s := newSetup(t)
	var r clientResult
	client(t, s.cfg, "open", "", &r, "dial", "4", s.echo4.Addr().String())
	assertRedirected(t, r)
	s.findSession(t, r.PID)
	bin := lgtest.Binary(t)
	out, err := exec.Command(bin, "audit", "verify", "--config", s.cfg).CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "OK: ") {
		t.Fatalf("audit verify while running: %v\n%s", err, out)
	}
	out, err = exec.Command(bin, "sessions", "export", "--config", s.cfg, "--format", "jsonl").Output()
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		var m map[string]any
		json.Unmarshal([]byte(line), &m)
		kinds = append(kinds, fmt.Sprint(m["kind"], "/", m["decision"], "/", m["rule_id"]))
	}
	want := []string{"session_open//", "decision/allow/agents-connect", "session_close//"}
	if strings.Join(kinds, " ") != strings.Join(want, " ") {
		t.Errorf("exported events = %v, want %v", kinds, want)
	}
	// After a clean stop the tail is signed: deleting it is caught.
	s.daemon.Stop(syscall.SIGTERM)
	out, err = exec.Command(bin, "audit", "verify", "--config", s.cfg).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "1 signed checkpoints") {
		t.Fatalf("audit verify after stop: %v\n%s", err, out)
	}
}
