package tests

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/loopgate/loopgate/tests/lgtest"
)

// serviceCaps is the capability bounding set of packaging/loopgate.service,
// the minimum TestCapabilities finds: with it the daemon starts and
// redirects, and without any one of them it does not (or loses a fact).
var serviceCaps = []string{"CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN", "CAP_SYS_PTRACE", "CAP_CHOWN"}

// svcDaemon is a daemon started as a service manager would: with a
// NOTIFY_SOCKET it listens on, optionally under setpriv with a reduced
// capability set.
type svcDaemon struct {
	cmd    *exec.Cmd
	notify *net.UnixConn
	mu     sync.Mutex
	log    bytes.Buffer
	exited chan struct{}
}

// startService runs `binary daemon --config cfg` prefixed by wrap (e.g.
// setpriv ...), with NOTIFY_SOCKET set to a unixgram socket of the test's
// own. It returns once the daemon sent READY=1 (ready true), or exited or
// timed out (ready false); the caller stops it with stop.
func startService(t *testing.T, binary, cfg string, wrap ...string) (*svcDaemon, bool) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "notify.sock")
	nc, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatalf("notify socket: %v", err)
	}
	t.Cleanup(func() { nc.Close() })
	args := append(slices.Clone(wrap), binary, "daemon", "--config", cfg, "--drain", "1s")
	d := &svcDaemon{cmd: exec.Command(args[0], args[1:]...), notify: nc, exited: make(chan struct{})}
	d.cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock)
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	pr, pw := io.Pipe()
	d.cmd.Stdout, d.cmd.Stderr = pw, pw
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("start %v: %v", args, err)
	}
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			d.mu.Lock()
			d.log.WriteString(sc.Text() + "\n")
			d.mu.Unlock()
		}
	}()
	go func() { d.cmd.Wait(); pw.Close(); close(d.exited) }()
	t.Cleanup(func() { d.stop(t) })

	msgs := make(chan string, 8)
	go func() {
		buf := make([]byte, 4096)
		for {
			n, err := nc.Read(buf)
			if err != nil {
				close(msgs)
				return
			}
			msgs <- string(buf[:n])
		}
	}()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case m, ok := <-msgs:
			if !ok {
				return d, false
			}
			if slices.Contains(strings.Split(m, "\n"), "READY=1") {
				return d, true
			}
		case <-d.exited:
			return d, false
		case <-timeout:
			return d, false
		}
	}
}

// Log is what the daemon printed so far.
func (d *svcDaemon) Log() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.log.String()
}

// stop sends SIGTERM and waits for the daemon to exit.
func (d *svcDaemon) stop(t *testing.T) {
	select {
	case <-d.exited:
		return
	default:
	}
	d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(20 * time.Second):
		d.cmd.Process.Kill()
		<-d.exited
		t.Errorf("daemon did not stop on SIGTERM within 20s")
	}
}

// capsSetup is a config with one target and one workload, torn down at
// the end with every capability.
type capsSetup struct {
	cfg  string
	api  string
	echo *lgtest.Echo
}

func newCapsSetup(t *testing.T) *capsSetup {
	t.Helper()
	lgtest.RequireRoot(t)
	s := &capsSetup{echo: lgtest.StartEcho(t, "127.0.0.2:0"), api: filepath.Join(lgtest.SharedDir(t), "api.sock")}
	cg := lgtest.CgroupName(t)
	s.cfg = lgtest.WriteConfig(t, fmt.Sprintf(`listen: 127.0.0.1:%d
store: %s
bpffs: %s
daemon_cgroup: %s-daemon
api: {socket: %s, group: "nogroup"}
targets:
  - {name: echo, protocol: tcp, address: "%s"}
workloads:
  - {name: w, cgroup: %s/w}
rules:
  - {id: connect, workloads: [w], targets: [echo], allow: [connect]}
`, lgtest.FreePort(t), filepath.Join(t.TempDir(), "loopgate.db"), lgtest.PinDir(t), cg,
		s.api, s.echo.Addr(), cg))
	t.Cleanup(func() {
		out, err := exec.Command(lgtest.Binary(t), "teardown", "--force", "--config", s.cfg).CombinedOutput()
		if err != nil {
			t.Errorf("teardown: %v\n%s", err, out)
		}
	})
	return s
}

// capsProbe is what a daemon limited to some capabilities could do.
type capsProbe struct {
	ready      bool   // it sent READY=1
	redirected bool   // a workload's connection reached the target through it
	exe        string // the executable it recorded for that connection
	api        bool   // its API socket is there, in group nogroup (api: group)
	log        string
}

// probe starts the daemon with only caps (bounding and inheritable sets;
// it runs as root, so its permitted set becomes the bounding set, as under
// systemd's CapabilityBoundingSet=), dials the target from the workload as
// nobody, and stops it.
func (s *capsSetup) probe(t *testing.T, caps []string, keepPins bool) capsProbe {
	t.Helper()
	var set []string
	for _, c := range caps {
		set = append(set, "+"+strings.ToLower(strings.TrimPrefix(c, "CAP_")))
	}
	bounding := strings.Join(append([]string{"-all"}, set...), ",")
	d, ready := startService(t, lgtest.Binary(t), s.cfg, "setpriv", "--bounding-set", bounding, "--inh-caps", "-all", "--")
	defer d.stop(t)
	p := capsProbe{ready: ready}
	if fi, err := os.Stat(s.api); err == nil {
		g, err := user.LookupGroup("nogroup")
		p.api = err == nil && strconv.Itoa(int(fi.Sys().(*syscall.Stat_t).Gid)) == g.Gid
	}
	if ready {
		stdout, _, code := lgtest.Run(t, s.cfg, "w", []string{"LG_CLIENT=dial"}, []string{"--user", "nobody"}, clientBin, "4", s.echo.Addr().String())
		var r clientResult
		if code == 0 && json.Unmarshal([]byte(stdout), &r) == nil && r.Err == "" && r.Echo == "ping" && r.Peer != r.Local {
			p.redirected = true
			lgtest.Eventually(t, 10*time.Second, "the session's record", func() bool {
				for _, x := range lgtest.Sessions(t, s.cfg) {
					if x.PID == r.PID && x.Ended != "" {
						p.exe = x.Exe
						return true
					}
				}
				return false
			})
		}
	}
	d.stop(t)
	p.log = d.Log()
	// The next probe attaches afresh, as on a host's first start.
	if keepPins {
		return p
	}
	if out, err := exec.Command(lgtest.Binary(t), "teardown", "--force", "--config", s.cfg).CombinedOutput(); err != nil {
		t.Errorf("teardown: %v\n%s", err, out)
	}
	return p
}

// TestCapabilities runs the real daemon with the unit's capability
// bounding set and checks that it starts, says READY and redirects a
// workload's connection (recording the client's executable); then drops
// each capability in turn and checks that something breaks, so the set is
// the minimum. The verbose log prints the table the README shows.
func TestCapabilities(t *testing.T) {
	if _, err := exec.LookPath("setpriv"); err != nil {
		lgtest.Unavailable(t, "setpriv (util-linux): %v", err)
	}
	s := newCapsSetup(t)
	unit, err := os.ReadFile("../packaging/loopgate.service")
	if err != nil {
		t.Fatal(err)
	}
	if want := "CapabilityBoundingSet=" + strings.Join(serviceCaps, " ") + "\n"; !bytes.Contains(unit, []byte(want)) {
		t.Errorf("packaging/loopgate.service lacks %q", want)
	}

	full := s.probe(t, serviceCaps, true)
	t.Logf("| %-22s | %-5s | %-10s | %-12s | %s |", "capabilities", "ready", "redirected", "exe recorded", "api group")
	t.Logf("| %-22s | %-5v | %-10v | %-12v | %v |", "the unit's set", full.ready, full.redirected, full.exe != "", full.api)
	if !full.ready || !full.redirected || full.exe != clientBin || !full.api {
		t.Fatalf("with %v: ready %v, redirected %v, exe %q (want %s); log:\n%s", serviceCaps, full.ready, full.redirected, full.exe, clientBin, full.log)
	}
	// A restart finds the links pinned by the first start and swaps their
	// programs (link update), with the same capabilities.
	again := s.probe(t, serviceCaps, false)
	t.Logf("| %-22s | %-5v | %-10v | %-12v | %v |", "the same, pins kept", again.ready, again.redirected, again.exe != "", again.api)
	if !again.ready || !again.redirected || again.exe != clientBin {
		t.Fatalf("restart with %v over pinned links: ready %v, redirected %v, exe %q; log:\n%s", serviceCaps, again.ready, again.redirected, again.exe, again.log)
	}
	for _, drop := range serviceCaps {
		rest := slices.DeleteFunc(slices.Clone(serviceCaps), func(c string) bool { return c == drop })
		p := s.probe(t, rest, false)
		t.Logf("| %-22s | %-5v | %-10v | %-12v | %v |", "without "+drop, p.ready, p.redirected, p.exe != "", p.api)
		if p.ready && p.redirected && p.exe == clientBin && p.api {
			t.Errorf("without %s the daemon still starts, redirects and records the exe: not needed", drop)
		}
		if p.ready {
			continue
		}
		// Say why, from the daemon's own words.
		for _, l := range strings.Split(p.log, "\n") {
			if strings.HasPrefix(l, "loopgate:") || strings.Contains(l, "cannot use helper") {
				t.Logf("    %.160s", strings.TrimSpace(l))
			}
		}
	}
}
