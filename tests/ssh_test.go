package tests

import (
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

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
	userCA     *l7ssh.CA
	cgroup     string // the workloads' cgroup parent
}

// workloadCgroup is workload w's cgroup, relative to the cgroup2 mount.
func (s *sshSetup) workloadCgroup(w string) string { return s.cgroup + "/" + w }

// newSSHSetup starts sshd (with extra config lines) and the daemon.
func newSSHSetup(t testing.TB, sshdExtra ...string) *sshSetup {
	t.Helper()
	return newSSHSetupEdit(t, nil, sshdExtra...)
}

// newSSHSetupEdit is newSSHSetup with the daemon's config text passed
// through edit (with the workloads' cgroup parent) before it is written.
func newSSHSetupEdit(t testing.TB, edit func(cfg, cgroup string) string, sshdExtra ...string) *sshSetup {
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
	s.cgroup = cg
	text := fmt.Sprintf(`listen: 127.0.0.1:%d
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
  - {name: admin, cgroup: %s/admin}
  - {name: stranger, cgroup: %s/stranger}
  - {name: pager, cgroup: %s/pager}
masks:
  - {name: email, detect: email, mode: redact}
rules:
  - id: agent-box
    workloads: [agent]
    targets: [box]
    allow: [read, write, shell, file-read, file-write, forward]
    deny: [privilege, unknown]
    mask: [email]
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
    commands: {allow: ["mkdir -p /tmp/lg-*", "direct-tcpip 127.0.0.1:*"], deny: ["ls /root*"]}
  - id: admin-box
    workloads: [admin]
    targets: [box]
    allow: [read, write, privilege, shell, file-read, file-write, forward, unknown]
  - id: pager-box
    workloads: [pager]
    targets: [box]
    allow: [read]
    approve: [shell]
    approvers: [root]
`, lgtest.FreePort(t), filepath.Join(dir, "loopgate.db"), lgtest.PinDir(t), cg, s.socket, apiGroup,
		sshd.Addr(), lgtest.SSHUser, targetKH, cg, cg, cg, cg, cg, cg)
	if edit != nil {
		text = edit(text, cg)
	}
	s.cfg = lgtest.WriteConfig(t, text)
	s.userCA = userCA
	s.daemon = lgtest.StartDaemon(t, s.cfg)
	return s
}

// sshArgs are the agent's ssh options: strict host key checking against
// the @cert-authority line only, no keys, no prompts.
func (s *sshSetup) sshArgs(extra ...string) []string {
	args := []string{"-F", "none", "-o", "UserKnownHostsFile=" + s.knownHosts, "-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "LogLevel=" + cmp.Or(os.Getenv("LG_SSH_LOGLEVEL"), "ERROR"), "-o", "ConnectTimeout=20"}
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

func TestSSHExec(t *testing.T) {
	s := newSSHSetup(t)
	tests := []struct {
		name     string
		workload string
		stdin    string
		opts     []string
		command  []string
		stdout   string
		stderr   string // contained
		code     int
	}{
		{name: "exit 0 with output", workload: "agent", command: []string{"echo", "hello"}, stdout: "hello\n"},
		{name: "exit 7", workload: "agent", command: []string{"exit 7"}, code: 7},
		{name: "stdout and stderr apart", workload: "agent", command: []string{"echo out; echo err >&2"}, stdout: "out\n", stderr: "err"},
		{name: "stdin piped before exec", workload: "agent", stdin: "piped data\n", command: []string{"cat"}, stdout: "piped data\n"},
		{name: "stdin EOF before the command ends", workload: "agent", stdin: "a\nb\n", command: []string{"cat; echo done"}, stdout: "a\nb\ndone\n"},
		{name: "read allowed for a reader", workload: "reader", command: []string{"ls", "/"}, stdout: "etc\n"},
		{name: "write denied for a reader", workload: "reader", command: []string{"touch", "/tmp/lg-denied"},
			stderr: "loopgate: write denied by rule reader-box", code: 126},
		{name: "privilege denied", workload: "agent", command: []string{"sudo", "id"},
			stderr: "loopgate: privilege denied by rule agent-box", code: 126},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
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
	t.Run("output masked as a stream", func(t *testing.T) {
		// Each address is written in two pieces, which ssh may carry in
		// two packets.
		stdout, stderr, code := s.ssh(t, "agent", nil, nil,
			`for i in 1 2 3; do printf 'user%d@exa' $i; printf 'mple.com\n'; printf 'err%d@exa' $i >&2; printf 'mple.org\n' >&2; done`)
		if code != 0 || strings.Contains(stdout, "example.com") || strings.Contains(stderr, "example.org") || strings.Count(stdout, "\n") != 3 {
			t.Errorf("code %d stdout %q stderr %q", code, stdout, stderr)
		}
	})
	t.Run("loopgate ssh known-hosts and user-ca", func(t *testing.T) {
		kh, _ := os.ReadFile(s.knownHosts)
		out, err := exec.Command(lgtest.Binary(t), "ssh", "known-hosts", "--config", s.cfg).Output()
		if err != nil || string(out) != string(kh) {
			t.Errorf("known-hosts: %v %q, want %q", err, out, kh)
		}
		out, err = exec.Command(lgtest.Binary(t), "ssh", "user-ca", "--config", s.cfg).Output()
		if err != nil || strings.TrimSpace(string(out)) != s.userCA.AuthorizedKey() {
			t.Errorf("user-ca: %v %q", err, out)
		}
	})
	t.Run("recorded: argv, parse, decision, exit status, bytes", func(t *testing.T) {
		out, err := exec.Command(lgtest.Binary(t), "sessions", "export", "--config", s.cfg, "--workload", "agent").Output()
		if err != nil {
			t.Fatal(err)
		}
		var decided, result, login bool
		for _, line := range strings.Split(string(out), "\n") {
			var e struct{ Kind, Text, Params, Decision, Tag, Error string }
			json.Unmarshal([]byte(line), &e)
			switch {
			case e.Kind == "command" && e.Text == "exit 7" && e.Decision == "allow" && strings.Contains(e.Params, `"argv":["exit","7"]`):
				decided = true
			case e.Kind == "result" && e.Text == "exit 7" && e.Tag == "exit 7":
				result = true
			case e.Kind == "note" && e.Text == "ssh login" && strings.Contains(e.Params, `"user":"deploy"`) &&
				strings.Contains(e.Params, `"cert_key_id":"loopgate:`) && strings.Contains(e.Params, `"target_host_key":"SHA256:`):
				// The certificate is short-lived: ttl 2m in the config.
				var l struct {
					Until string `json:"cert_valid_before"`
				}
				json.Unmarshal([]byte(e.Params), &l)
				until, err := time.Parse(time.RFC3339, l.Until)
				if err != nil || until.Before(time.Now().Add(-time.Minute)) || until.After(time.Now().Add(2*time.Minute+5*time.Second)) {
					t.Errorf("certificate valid before %q (%v)", l.Until, err)
				}
				login = true
			}
		}
		if !decided || !result || !login {
			t.Errorf("decision %v, result %v, login %v in:\n%s", decided, result, login, out)
		}
	})
	t.Run("certificate in sshd's log", func(t *testing.T) {
		if !strings.Contains(s.sshd.Log(), `Accepted certificate ID "loopgate:`) || !strings.Contains(s.sshd.Log(), ":agent\" (serial") {
			t.Errorf("sshd log lacks the certificate:\n%s", s.sshd.Log())
		}
	})
}

// directArgs are ssh options for reaching sshd directly, bypassing
// loopgate (a run outside any workload): a key with a certificate from the
// user CA, and the target's own host key. For comparisons and benchmarks.
func (s *sshSetup) directArgs(t testing.TB) []string {
	t.Helper()
	key := filepath.Join(s.shared, "direct_ed25519")
	if _, err := os.Stat(key); err != nil {
		if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key).CombinedOutput(); err != nil {
			t.Fatalf("ssh-keygen: %v %s", err, out)
		}
		if out, err := exec.Command("ssh-keygen", "-q", "-s", s.userCA.File, "-I", "direct", "-n", lgtest.SSHUser, "-V", "-5m:+2h", key+".pub").CombinedOutput(); err != nil {
			t.Fatalf("ssh-keygen -s: %v %s", err, out)
		}
		for _, f := range []string{key, key + ".pub", key + "-cert.pub"} {
			os.Chown(f, 65534, 65534)
		}
		os.WriteFile(filepath.Join(s.shared, "direct_known_hosts"), []byte(fmt.Sprintf("[127.0.0.1]:%s %s\n", s.port, s.sshd.HostKeyPub)), 0o644)
	}
	return []string{"-F", "none", "-i", key, "-o", "UserKnownHostsFile=" + filepath.Join(s.shared, "direct_known_hosts"),
		"-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
		"-o", "IdentitiesOnly=yes"}
}

// direct runs args as nobody outside every workload (not redirected).
func (s *sshSetup) direct(t testing.TB, stdin []byte, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
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
		t.Fatalf("%s: %v", args[0], err)
	}
	return stdout.String(), stderr.String(), code
}

// TestSSHPolicy checks decisions: rm -rf / and its evasions under a rule
// that allows only read, and an exec held for approval.
func TestSSHPolicy(t *testing.T) {
	s := newSSHSetup(t, "AcceptEnv LD_*")
	for _, cmd := range []string{"rm -rf /", "'r''m' -rf /", "\\rm -rf /", "$(echo rm) -rf /", "a=rm; $a -rf /", `bash -c "$x"`,
		"{rm,-rf,/}", "/bin/r? -rf /", "eval rm -rf /", "echo cm0gLXJmIC8K | base64 -d | sh", "ls; rm -rf /", "find / -exec rm {} +"} {
		t.Run(cmd, func(t *testing.T) {
			_, stderr, code := s.ssh(t, "reader", nil, nil, cmd)
			if code != 126 || !(strings.Contains(stderr, "loopgate: unknown denied by rule reader-box") ||
				strings.Contains(stderr, "loopgate: write denied by rule reader-box")) {
				t.Errorf("code %d stderr %q", code, stderr)
			}
		})
	}
	t.Run("a workload no rule names", func(t *testing.T) {
		// LogLevel=INFO (ssh's default) shows why a channel was refused.
		args := append(append([]string{"ssh", "-o", "LogLevel=INFO"}, s.sshArgs()...), "-p", s.port, "deploy@127.0.0.1", "true")
		_, stderr, code := s.run(t, "stranger", nil, args...)
		if code != 255 || !strings.Contains(stderr, "loopgate: no rule lets workload stranger use target box") {
			t.Errorf("code %d stderr %q", code, stderr)
		}
	})
	t.Run("env that changes what runs is refused", func(t *testing.T) {
		// sshd would accept it (AcceptEnv LD_*); loopgate does not.
		// (LD_LGTEST: a real LD_PRELOAD would load into the local ssh.)
		args := append(append([]string{"env", "LD_LGTEST=1", "ssh", "-o", "SendEnv=LD_LGTEST"}, s.sshArgs()...),
			"-p", s.port, "deploy@127.0.0.1", "echo preload=$LD_LGTEST")
		out, stderr, code := s.run(t, "agent", nil, args...)
		if code != 0 || out != "preload=\n" {
			t.Errorf("code %d out %q err %q", code, out, stderr)
		}
	})
	t.Run("shell denied", func(t *testing.T) {
		// No pty: with -tt, ssh ends at the pty-req the certificate
		// refuses (no permit-pty where shells are denied).
		_, stderr, code := s.ssh(t, "reader", []byte("id\n"), nil)
		if code != 126 || !strings.Contains(stderr, "loopgate: shell denied by rule reader-box") {
			t.Errorf("code %d stderr %q", code, stderr)
		}
	})
	t.Run("a pager on a terminal is a shell", func(t *testing.T) {
		// systemctl on a pty pages through less, whose "!sh" is a
		// shell: under a rule that allows read but holds shells, it
		// waits for an approver; without a pty it is a read.
		if _, stderr, code := s.ssh(t, "pager", nil, nil, "systemctl status --no-legend"); strings.Contains(stderr, "loopgate:") {
			t.Errorf("without a pty: code %d stderr %q", code, stderr)
		}
		type res struct {
			stderr string
			code   int
		}
		done := make(chan res, 1)
		go func() {
			_, stderr, code := s.ssh(t, "pager", nil, []string{"-tt"}, "systemctl status --no-legend")
			done <- res{stderr, code}
		}()
		var id string
		lgtest.Eventually(t, 20*time.Second, "a pending approval", func() bool {
			out, _ := s.cliAs(t, 0, "approvals", "list", "--json")
			for _, line := range strings.Split(out, "\n") {
				var a approvalJSON
				if json.Unmarshal([]byte(line), &a) == nil && a.State == "pending" && a.Rule == "pager-box" {
					if a.Class != "shell" {
						t.Errorf("request %+v", a)
					}
					id = a.ID
					return true
				}
			}
			return false
		})
		if out, code := s.cliAs(t, 0, "approvals", "deny", id, "--reason", "no pagers"); code != 0 {
			t.Fatalf("deny: %d %s", code, out)
		}
		if r := <-done; r.code != 126 || !strings.Contains(r.stderr, "no pagers") {
			t.Errorf("code %d stderr %q", r.code, r.stderr)
		}
	})
	t.Run("command patterns before classes", func(t *testing.T) {
		if _, stderr, code := s.ssh(t, "careful", nil, nil, "mkdir -p /tmp/lg-pattern"); code != 0 {
			t.Errorf("allowed by pattern: code %d stderr %q", code, stderr)
		}
		if _, stderr, code := s.ssh(t, "careful", nil, nil, "ls /root"); code != 126 || !strings.Contains(stderr, "careful-box") {
			t.Errorf("denied by pattern: code %d stderr %q", code, stderr)
		}
	})
	t.Run("approved exec", func(t *testing.T) {
		file := filepath.Join(s.sshd.UserDir, "approved")
		type res struct {
			stderr string
			code   int
		}
		done := make(chan res, 1)
		go func() {
			_, stderr, code := s.ssh(t, "careful", []byte("queued stdin\n"), nil, "cat > "+file)
			done <- res{stderr, code}
		}()
		var id string
		lgtest.Eventually(t, 20*time.Second, "a pending approval", func() bool {
			out, _ := s.cliAs(t, 0, "approvals", "list", "--json")
			for _, line := range strings.Split(out, "\n") {
				var a approvalJSON
				if json.Unmarshal([]byte(line), &a) == nil && a.State == "pending" {
					if a.Command != "cat > "+file || a.Class != "write" || a.Rule != "careful-box" {
						t.Errorf("request %+v", a)
					}
					id = a.ID
					return true
				}
			}
			return false
		})
		if _, err := os.Stat(file); err == nil {
			t.Fatal("the command ran before it was approved")
		}
		if out, code := s.cliAs(t, 0, "approvals", "approve", id); code != 0 {
			t.Fatalf("approve: %d %s", code, out)
		}
		r := <-done
		if r.code != 0 || !strings.Contains(r.stderr, "loopgate: waiting for approval "+id) {
			t.Errorf("code %d stderr %q", r.code, r.stderr)
		}
		// The stdin sent before the exec was answered waited for it.
		if got, err := os.ReadFile(file); err != nil || string(got) != "queued stdin\n" {
			t.Errorf("approved command wrote %q, %v", got, err)
		}
	})
}
