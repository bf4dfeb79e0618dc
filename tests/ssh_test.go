package tests

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	l7ssh "github.com/loopgate/loopgate/l7/ssh"
	"github.com/loopgate/loopgate/tests/lgtest"
)

// sshSetup is a real sshd trusting loopgate's user CA, a daemon with an
// ssh target for it, and an agent known_hosts file holding only the
// host CA's @cert-authority line (StrictHostKeyChecking=yes).
type sshSetup struct {
	sshd       *lgtest.SSHD
	cfg        string
	daemon     *lgtest.Daemon
	port       string
	socket     string
	knownHosts string // the agent's: @cert-authority
	shared     string // readable by nobody
}

// newSSHSetup starts sshd (with extra config lines) and the daemon.
func newSSHSetup(t testing.TB, sshdExtra ...string) *sshSetup {
	t.Helper()
	lgtest.RequireRoot(t)
	dir := t.TempDir()
	// The daemon keeps its CAs beside the store; make them first so sshd
	// can trust the user CA (what `loopgate ssh user-ca` prints).
	userCA, err := l7ssh.LoadOrCreateCA(filepath.Join(dir, l7ssh.UserCAFile))
	if err != nil {
		t.Fatal(err)
	}
	hostCA, err := l7ssh.LoadOrCreateCA(filepath.Join(dir, l7ssh.HostCAFile))
	if err != nil {
		t.Fatal(err)
	}
	sshd := lgtest.StartSSHD(t, userCA.AuthorizedKey(), sshdExtra...)
	s := &sshSetup{sshd: sshd, port: strconv.Itoa(sshd.Port), shared: lgtest.SharedDir(t)}
	targetKH := filepath.Join(dir, "target_known_hosts")
	os.WriteFile(targetKH, []byte(fmt.Sprintf("[127.0.0.1]:%d %s\n", sshd.Port, sshd.HostKeyPub)), 0o600)
	s.knownHosts = filepath.Join(s.shared, "known_hosts")
	os.WriteFile(s.knownHosts, []byte(hostCA.KnownHostsLine(l7ssh.KnownHostsPatterns([]string{sshd.Addr()}))+"\n"), 0o644)
	s.socket = filepath.Join(s.shared, "api.sock")
	cg := lgtest.CgroupName(t)
	s.cfg = lgtest.WriteConfig(t, fmt.Sprintf(`listen: 127.0.0.1:%d
store: %s
bpffs: %s
daemon_cgroup: %s-daemon
api: {socket: %s, group: "%d"}
approvals: {timeout: 20s}
approvers:
  - {name: root, uid: 0}
targets:
  - name: box
    protocol: ssh
    address: %s
    credentials: {user: %s, ssh_ca: true, ttl: 2m}
    known_hosts: %s
workloads:
  - {name: agent, cgroup: %s/agent}
  - {name: reader, cgroup: %s/reader}
  - {name: careful, cgroup: %s/careful}
rules:
  - id: agent-box
    workloads: [agent]
    targets: [box]
    allow: [read, write, shell, file-read, file-write, forward]
    deny: [privilege, unknown]
  - id: reader-box
    workloads: [reader]
    targets: [box]
    allow: [read, file-read]
  - id: careful-box
    workloads: [careful]
    targets: [box]
    allow: [read]
    approve: [write]
    approvers: [root]
`, lgtest.FreePort(t), filepath.Join(dir, "loopgate.db"), lgtest.PinDir(t), cg, s.socket, apiGroup,
		sshd.Addr(), lgtest.SSHUser, targetKH, cg, cg, cg))
	s.daemon = lgtest.StartDaemon(t, s.cfg)
	return s
}

// sshArgs are the agent's ssh options: strict host key checking against
// the @cert-authority line only, no keys, no prompts.
func (s *sshSetup) sshArgs(extra ...string) []string {
	args := []string{"-F", "none", "-o", "UserKnownHostsFile=" + s.knownHosts, "-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=20"}
	return append(args, extra...)
}

// ssh runs the real ssh as nobody in workload with stdin and returns
// stdout, stderr and its exit code.
func (s *sshSetup) ssh(t testing.TB, workload string, stdin []byte, opts []string, command ...string) (string, string, int) {
	t.Helper()
	args := append([]string{"ssh"}, s.sshArgs(opts...)...)
	args = append(args, "-p", s.port, "deploy@127.0.0.1")
	args = append(args, command...)
	return s.run(t, workload, stdin, args...)
}

// run runs args as nobody in workload.
func (s *sshSetup) run(t testing.TB, workload string, stdin []byte, args ...string) (string, string, int) {
	t.Helper()
	full := append([]string{"run", "--config", s.cfg, "--workload", workload, "--user", "nobody", "--"}, args...)
	cmd := exec.Command(lgtest.Binary(t), full...)
	cmd.Dir = "/"
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("loopgate run: %v", err)
	}
	return stdout.String(), stderr.String(), code
}

// cliAs runs `loopgate ARGS --socket S` as uid.
func (s *sshSetup) cliAs(t *testing.T, uid int, args ...string) (string, int) {
	t.Helper()
	full := append(append(append([]string{}, args[:2]...), "--socket", s.socket), args[2:]...)
	cmd := exec.Command(lgtest.Binary(t), full...)
	if uid != 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid), Groups: []uint32{apiGroup}}}
	}
	out, err := cmd.CombinedOutput()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return string(out), code
}

// shellclassLanded: the exec classifier parses shell (policy/shellclass).
const shellclassLanded = false

func TestSSHExec(t *testing.T) {
	s := newSSHSetup(t, "AcceptEnv LG_OK")
	tests := []struct {
		name     string
		workload string
		stdin    string
		opts     []string
		command  []string
		stdout   string
		stderr   string // contained
		code     int
		// shellclass: needs the real shell classifier.
		shellclass bool
	}{
		{name: "exit 0 with output", workload: "agent", command: []string{"echo", "hello"}, stdout: "hello\n"},
		{name: "exit 7", workload: "agent", command: []string{"exit 7"}, code: 7},
		{name: "stdout and stderr apart", workload: "agent", command: []string{"echo out; echo err >&2"}, stdout: "out\n", stderr: "err", shellclass: true},
		{name: "stdin piped before exec", workload: "agent", stdin: "piped data\n", command: []string{"cat"}, stdout: "piped data\n"},
		{name: "stdin EOF before the command ends", workload: "agent", stdin: "a\nb\n", command: []string{"cat; echo done"}, stdout: "a\nb\ndone\n", shellclass: true},
		{name: "env accepted and rejected", workload: "agent", opts: []string{"-o", "SendEnv=LG_OK LG_NO"},
			command: []string{"echo ok=$LG_OK no=$LG_NO"}, stdout: "ok=1 no=\n", shellclass: true},
		{name: "read allowed for a reader", workload: "reader", command: []string{"ls", "/"}, stdout: "etc\n"},
		{name: "write denied for a reader", workload: "reader", command: []string{"touch", "/tmp/lg-denied"},
			stderr: "loopgate: write denied by rule reader-box", code: 126},
		{name: "privilege denied", workload: "agent", command: []string{"sudo", "id"},
			stderr: "loopgate: privilege denied by rule agent-box", code: 126},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.shellclass && !shellclassLanded {
				t.Skip("needs policy/shellclass (the placeholder classifier calls any shell syntax unknown)")
			}
			var stdin []byte
			if tc.stdin != "" {
				stdin = []byte(tc.stdin)
			}
			stdout, stderr, code := s.ssh(t, tc.workload, stdin, tc.opts, tc.command...)
			if code != tc.code || !strings.Contains(stderr, tc.stderr) {
				t.Errorf("code %d stderr %q; want %d and %q", code, stderr, tc.code, tc.stderr)
			}
			if tc.name == "read allowed for a reader" {
				if !strings.Contains(stdout, tc.stdout) {
					t.Errorf("stdout %q", stdout)
				}
			} else if stdout != tc.stdout {
				t.Errorf("stdout %q, want %q", stdout, tc.stdout)
			}
		})
	}
	t.Run("certificate in sshd's log", func(t *testing.T) {
		if !strings.Contains(s.sshd.Log(), `Accepted certificate ID "loopgate:`) || !strings.Contains(s.sshd.Log(), ":agent\" (serial") {
			t.Errorf("sshd log lacks the certificate:\n%s", s.sshd.Log())
		}
	})
}
