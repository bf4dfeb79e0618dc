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
	"unsafe"

	"golang.org/x/sys/unix"

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
	db   string // the store
	api  string // the API socket
	echo *lgtest.Echo
}

func newCapsSetup(t *testing.T) *capsSetup {
	t.Helper()
	lgtest.RequireRoot(t)
	s := &capsSetup{echo: lgtest.StartEcho(t, "127.0.0.2:0"), api: filepath.Join(lgtest.SharedDir(t), "api.sock"),
		db: filepath.Join(t.TempDir(), "loopgate.db")}
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
`, lgtest.FreePort(t), s.db, lgtest.PinDir(t), cg,
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
	p := s.probeWrapped(t, []string{"setpriv", "--bounding-set", capSet(caps), "--inh-caps", "-all", "--"})
	if keepPins {
		return p
	}
	// The next probe attaches afresh, as on a host's first start.
	if out, err := exec.Command(lgtest.Binary(t), "teardown", "--force", "--config", s.cfg).CombinedOutput(); err != nil {
		t.Errorf("teardown: %v\n%s", err, out)
	}
	return p
}

// capSet is setpriv's --bounding-set for exactly caps.
func capSet(caps []string) string {
	set := []string{"-all"}
	for _, c := range caps {
		set = append(set, "+"+strings.ToLower(strings.TrimPrefix(c, "CAP_")))
	}
	return strings.Join(set, ",")
}

// probeWrapped starts the daemon under wrap and probes it.
func (s *capsSetup) probeWrapped(t *testing.T, wrap []string) capsProbe {
	t.Helper()
	d, ready := startService(t, lgtest.Binary(t), s.cfg, wrap...)
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

// syscallGroups parses `systemd-analyze syscall-filter`: "@group", then its
// members indented, each a name or a nested "@group".
func syscallGroups(t *testing.T) map[string][]string {
	t.Helper()
	out, err := exec.Command("systemd-analyze", "syscall-filter").Output()
	if err != nil {
		lgtest.Unavailable(t, "systemd-analyze syscall-filter: %v (scripts/deps.sh installs systemd)", err)
	}
	groups := map[string][]string{}
	var cur string
	for _, line := range strings.Split(string(out), "\n") {
		trim := strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "@"):
			cur = trim
		case trim == "" || strings.HasPrefix(trim, "#") || strings.HasPrefix(line, "#"):
			if strings.HasPrefix(line, "#") {
				cur = ""
			}
		case cur != "":
			groups[cur] = append(groups[cur], trim)
		}
	}
	return groups
}

// expandSyscalls resolves names and @groups into syscall names.
func expandSyscalls(groups map[string][]string, items []string, into map[string]bool) {
	for _, it := range items {
		if strings.HasPrefix(it, "@") {
			expandSyscalls(groups, groups[it], into)
			continue
		}
		into[it] = true
	}
}

// unitSyscalls computes the syscall allow list of the unit's
// SystemCallFilter= lines as systemd does: allow lists add up, "~" lists
// take away; execve and the like systemd always permits are in @default.
func unitSyscalls(t *testing.T, unit string) map[string]bool {
	t.Helper()
	groups := syscallGroups(t)
	allow, deny := map[string]bool{}, map[string]bool{}
	for _, line := range strings.Split(unit, "\n") {
		v, ok := strings.CutPrefix(line, "SystemCallFilter=")
		if !ok {
			continue
		}
		if rest, neg := strings.CutPrefix(v, "~"); neg {
			expandSyscalls(groups, strings.Fields(rest), deny)
		} else {
			expandSyscalls(groups, strings.Fields(v), allow)
		}
	}
	expandSyscalls(groups, []string{"@default"}, allow)
	for s := range deny {
		delete(allow, s)
	}
	return allow
}

// syscallNumbers maps x86_64 syscall names to numbers from the kernel
// headers (linux-libc-dev).
func syscallNumbers(t *testing.T) map[string]uint32 {
	t.Helper()
	b, err := os.ReadFile("/usr/include/x86_64-linux-gnu/asm/unistd_64.h")
	if err != nil {
		lgtest.Unavailable(t, "syscall numbers: %v", err)
	}
	nr := map[string]uint32{}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 3 && f[0] == "#define" && strings.HasPrefix(f[1], "__NR_") {
			if n, err := strconv.ParseUint(f[2], 10, 32); err == nil {
				nr[strings.TrimPrefix(f[1], "__NR_")] = uint32(n)
			}
		}
	}
	return nr
}

// seccompExec is the test binary run with LG_SECCOMP=n,n,...: it confines
// itself to those x86_64 syscalls (others fail with EPERM, as under
// SystemCallErrorNumber=EPERM; other ABIs are refused, as under
// SystemCallArchitectures=native), sets no_new_privs (NoNewPrivileges=yes)
// and execs its arguments.
func seccompExec() int {
	var allowed []uint32
	for _, s := range strings.Split(os.Getenv("LG_SECCOMP"), ",") {
		n, err := strconv.ParseUint(s, 10, 32)
		if err != nil {
			fmt.Fprintln(os.Stderr, "LG_SECCOMP:", err)
			return 1
		}
		allowed = append(allowed, uint32(n))
	}
	os.Unsetenv("LG_SECCOMP")
	const (
		ldAbs  = unix.BPF_LD | unix.BPF_W | unix.BPF_ABS
		jeq    = unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K
		jge    = unix.BPF_JMP | unix.BPF_JGE | unix.BPF_K
		ret    = unix.BPF_RET | unix.BPF_K
		allow  = unix.SECCOMP_RET_ALLOW
		eperm  = unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)
		x32Bit = 0x40000000
	)
	prog := []unix.SockFilter{
		{Code: ldAbs, K: 4}, // seccomp_data.arch
		{Code: jeq, Jt: 1, K: unix.AUDIT_ARCH_X86_64},
		{Code: ret, K: unix.SECCOMP_RET_KILL_PROCESS},
		{Code: ldAbs, K: 0}, // seccomp_data.nr
		{Code: jge, Jf: 1, K: x32Bit},
		{Code: ret, K: eperm},
	}
	for _, n := range allowed {
		prog = append(prog, unix.SockFilter{Code: jeq, Jf: 1, K: n}, unix.SockFilter{Code: ret, K: allow})
	}
	prog = append(prog, unix.SockFilter{Code: ret, K: eperm})
	fprog := unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		fmt.Fprintln(os.Stderr, "no_new_privs:", err)
		return 1
	}
	if _, _, errno := unix.Syscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, unix.SECCOMP_FILTER_FLAG_TSYNC, uintptr(unsafe.Pointer(&fprog))); errno != 0 {
		fmt.Fprintln(os.Stderr, "seccomp:", errno)
		return 1
	}
	err := unix.Exec(os.Args[1], os.Args[1:], os.Environ())
	fmt.Fprintln(os.Stderr, "exec:", err)
	return 1
}

// mountSandbox emulates the unit's mount options in a private mount
// namespace, then execs its arguments after the first: ProtectSystem=strict
// (every mount read-only but /dev, /proc and /sys), ReadWritePaths= (the
// first argument, space-separated), ProtectHome=yes and
// ProtectProc=invisible. (ProcSubset=pid is not in the unit: it hides
// /proc/mounts, where the daemon finds cgroup2.)
const mountSandbox = `set -e
rw=$1; shift
awk '{print $2}' /proc/self/mounts | sort -u | while read -r mp; do
	case "$mp" in /proc|/proc/*|/sys|/sys/*|/dev|/dev/*) continue ;; esac
	mount -o remount,bind,ro "$mp" 2>/dev/null || true
done
for p in $rw; do mount --bind "$p" "$p"; mount -o remount,bind,rw "$p"; done
for h in /home /root /run/user; do if [ -d "$h" ]; then mount -t tmpfs -o ro,mode=0755 tmpfs "$h"; fi; done
mount -t proc -o hidepid=invisible proc /proc
exec "$@"`

// TestServiceSandbox runs the daemon as the unit would: its mount options
// emulated in a private mount namespace (mountSandbox), the unit's
// capability bounding set, no_new_privs, and a seccomp filter built from
// the unit's SystemCallFilter= lines (with systemd's own group
// definitions); it checks that the daemon starts, says READY and
// redirects, recording the client's executable. PrivateTmp=, PrivateDevices=
// and the Protect*= options that need systemd itself are checked only by
// systemd-analyze (TestDebPackage).
func TestServiceSandbox(t *testing.T) {
	if _, err := exec.LookPath("setpriv"); err != nil {
		lgtest.Unavailable(t, "setpriv (util-linux): %v", err)
	}
	unit, err := os.ReadFile("../packaging/loopgate.service")
	if err != nil {
		t.Fatal(err)
	}
	names := unitSyscalls(t, string(unit))
	numbers := syscallNumbers(t)
	var nrs []string
	for name := range names {
		if n, ok := numbers[name]; ok {
			nrs = append(nrs, strconv.Itoa(int(n)))
		}
	}
	for _, must := range []string{"bpf", "connect", "accept4", "execve"} {
		if !names[must] {
			t.Errorf("the unit's SystemCallFilter= does not allow %s", must)
		}
	}
	for _, never := range []string{"mount", "init_module", "reboot", "kexec_load", "ptrace", "settimeofday"} {
		if names[never] {
			t.Errorf("the unit's SystemCallFilter= allows %s", never)
		}
	}
	t.Logf("%d syscalls allowed", len(nrs))

	for _, line := range []string{"ProtectSystem=strict", "ReadWritePaths=/var/lib/loopgate /run/loopgate /sys/fs/bpf /sys/fs/cgroup",
		"ProtectHome=yes", "ProtectProc=invisible", "NoNewPrivileges=yes"} {
		if !strings.Contains(string(unit), "\n"+line+"\n") {
			t.Errorf("the unit lacks %s, which this test emulates", line)
		}
	}

	s := newCapsSetup(t)
	// The unit's ReadWritePaths=, at the test's own paths: the store and the
	// API socket's directory (bpffs and cgroupfs live under /sys, which
	// ProtectSystem=strict leaves writable).
	rw := filepath.Dir(s.db) + " " + filepath.Dir(s.api)
	sandbox := func(syscalls []string) []string {
		return []string{"unshare", "--mount", "--propagation", "private", "sh", "-c", mountSandbox, "sh", rw + " ",
			"env", "LG_SECCOMP=" + strings.Join(syscalls, ","),
			"setpriv", "--bounding-set", capSet(serviceCaps), "--inh-caps", "-all", "--", clientBin}
	}
	p := s.probeWrapped(t, sandbox(nrs))
	if !p.ready || !p.redirected || p.exe != clientBin || !p.api {
		t.Fatalf("under the unit's sandbox: ready %v, redirected %v, exe %q, api %v; log:\n%s", p.ready, p.redirected, p.exe, p.api, p.log)
	}
	if strings.Contains(p.log, "operation not permitted") {
		t.Errorf("a syscall was refused:\n%s", p.log)
	}

	// The filter is in force: without bpf(2) the daemon cannot start.
	noBPF := slices.DeleteFunc(slices.Clone(nrs), func(n string) bool { return n == strconv.Itoa(int(numbers["bpf"])) })
	if p := s.probeWrapped(t, sandbox(noBPF)); p.ready {
		t.Errorf("the daemon started with bpf(2) filtered out: the seccomp filter is not applied")
	}
	// And the file system is read-only: without ReadWritePaths= for its
	// store the daemon cannot start.
	rw = filepath.Dir(s.api)
	if p := s.probeWrapped(t, sandbox(nrs)); p.ready || !strings.Contains(p.log, "read-only file system") {
		t.Errorf("the daemon started, or failed otherwise, with its store read-only (ready %v):\n%s", p.ready, p.log)
	}
}
