package tests

import (
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

	"github.com/loopgate/loopgate/tests/lgtest"
)

// TestSSHBridge checks the bridge against direct ssh to the same sshd:
// exit signals, stdin ordering, stderr apart, keepalives on both legs.
func TestSSHBridge(t *testing.T) {
	s := newSSHSetup(t, "AcceptEnv LG_OK", "ClientAliveInterval 1", "ClientAliveCountMax 2")
	direct := s.directArgs(t)
	tests := []struct {
		name    string
		stdin   string
		opts    []string
		command string
	}{
		{name: "exit-signal", command: "kill -KILL $$"},
		{name: "exit-signal TERM with output first", command: "echo before; kill -TERM $$"},
		{name: "stdout and stderr apart", command: "echo out; echo err >&2; exit 3"},
		{name: "stdin EOF before the command ends", stdin: "a\nb\n", command: "cat; echo done"},
		{name: "large stdin piped before exec", stdin: strings.Repeat("0123456789abcdef", 1<<16), command: "wc -c"},
		{name: "env accepted and rejected", opts: []string{"-o", "SendEnv=LG_OK LG_NO"}, command: "echo ok=$LG_OK no=$LG_NO"},
		{name: "keepalives on both legs", opts: []string{"-o", "ServerAliveInterval=1", "-o", "ServerAliveCountMax=2"}, command: "sleep 4; echo awake"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var stdin []byte
			if tc.stdin != "" {
				stdin = []byte(tc.stdin)
			}
			args := append(append([]string{"env", "LG_OK=1", "LG_NO=2", "ssh"}, direct...), tc.opts...)
			args = append(args, "-p", s.port, lgtest.SSHUser+"@127.0.0.1", tc.command)
			wantOut, wantErr, wantCode := s.direct(t, stdin, args...)
			pargs := append(append([]string{"env", "LG_OK=1", "LG_NO=2", "ssh"}, s.sshArgs(tc.opts...)...), "-p", s.port, "deploy@127.0.0.1", tc.command)
			gotOut, gotErr, gotCode := s.run(t, "admin", stdin, pargs...)
			if gotOut != wantOut || gotErr != wantErr || gotCode != wantCode {
				t.Errorf("through loopgate: code %d stdout %q stderr %q\ndirect: code %d stdout %q stderr %q",
					gotCode, short(gotOut), gotErr, wantCode, short(wantOut), wantErr)
			}
		})
	}
	t.Run("direct-tcpip allowed and denied", func(t *testing.T) {
		echo := lgtest.StartEcho(t, "127.0.0.1:0")
		dst := net.JoinHostPort("127.0.0.1", strconv.Itoa(echo.Addr().Port))
		out, stderr, code := s.run(t, "admin", []byte("ping\n"), append(append([]string{"ssh"}, s.sshArgs()...), "-W", dst, "-p", s.port, "deploy@127.0.0.1")...)
		if code != 0 || !strings.Contains(out, "ping\n") || !strings.HasPrefix(out, "peer ") {
			t.Errorf("allowed forward: code %d out %q err %q", code, out, stderr)
		}
		// LogLevel=INFO (the default) shows why a channel open failed.
		_, stderr, code = s.run(t, "reader", []byte("ping\n"), append(append([]string{"ssh", "-o", "LogLevel=INFO"}, s.sshArgs()...), "-W", dst, "-p", s.port, "deploy@127.0.0.1")...)
		if code == 0 || !strings.Contains(stderr, "loopgate: forward denied by rule reader-box") {
			t.Errorf("denied forward: code %d err %q", code, stderr)
		}
		// careful's rule denies the class but a command pattern allows
		// the destination.
		out, stderr, code = s.run(t, "careful", []byte("pong\n"), append(append([]string{"ssh"}, s.sshArgs()...), "-W", dst, "-p", s.port, "deploy@127.0.0.1")...)
		if code != 0 || !strings.Contains(out, "pong\n") {
			t.Errorf("forward allowed by pattern: code %d out %q err %q", code, out, stderr)
		}
		out2, err := exec.Command(lgtest.Binary(t), "sessions", "export", "--config", s.cfg).Output()
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{`"text":"direct-tcpip ` + dst + `","params":"{\"host\":\"127.0.0.1\"`, `"decision":"deny","rule_id":"reader-box"`} {
			if !strings.Contains(string(out2), want) {
				t.Errorf("record lacks %s", want)
			}
		}
	})
}

func short(s string) string {
	if len(s) > 200 {
		return fmt.Sprintf("%s...(%d bytes)", s[:200], len(s))
	}
	return s
}

// TestSSHRevoke: a reload that no longer allows what a live session holds
// open (a forward) cuts it off.
func TestSSHRevoke(t *testing.T) {
	s := newSSHSetup(t)
	echo := lgtest.StartEcho(t, "127.0.0.1:0")
	dst := net.JoinHostPort("127.0.0.1", strconv.Itoa(echo.Addr().Port))
	args := append(append([]string{"run", "--config", s.cfg, "--workload", "admin", "--user", "nobody", "--", "ssh"}, s.sshArgs()...),
		"-W", dst, "-p", s.port, "deploy@127.0.0.1")
	cmd := exec.Command(lgtest.Binary(t), args...)
	stdin, _ := cmd.StdinPipe()
	var out lockedBuffer
	cmd.Stdout = &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer cmd.Process.Kill()
	stdin.Write([]byte("ping\n"))
	lgtest.Eventually(t, 20*time.Second, "the echo through the forward", func() bool { return strings.Contains(out.String(), "ping") })

	cfg, _ := os.ReadFile(s.cfg)
	edited := strings.Replace(string(cfg), "allow: [read, write, privilege, shell, file-read, file-write, forward, unknown]",
		"allow: [read, write, privilege, shell, file-read, file-write, unknown]", 1)
	if edited == string(cfg) {
		t.Fatal("config edit did not apply")
	}
	os.WriteFile(s.cfg, []byte(edited), 0o600)
	s.daemon.Signal(syscall.SIGHUP)
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("the forward outlived the reload that revoked it")
	}
	lgtest.Eventually(t, 10*time.Second, "the session recorded revoked", func() bool {
		for _, ss := range lgtest.Sessions(t, s.cfg, "--workload", "admin") {
			if ss.Outcome == "revoked" {
				return true
			}
		}
		return false
	})
}

// TestSSHControlMaster: multiplexed sessions over one connection
// (ControlMaster, as Ansible uses) each get their own decision and exit
// status.
func TestSSHControlMaster(t *testing.T) {
	s := newSSHSetup(t)
	dir := filepath.Join(s.shared, "cm")
	os.Mkdir(dir, 0o777)
	os.Chmod(dir, 0o777)
	cm := []string{"-o", "ControlMaster=auto", "-o", "ControlPath=" + dir + "/%C", "-o", "ControlPersist=30"}
	for i, tc := range []struct {
		command string
		out     string
		code    int
	}{{"echo one", "one\n", 0}, {"exit 5", "", 5}, {"echo three; exit 3", "three\n", 3}} {
		out, stderr, code := s.ssh(t, "agent", nil, cm, tc.command)
		if out != tc.out || code != tc.code {
			t.Errorf("%d %q: code %d out %q err %q", i, tc.command, code, out, stderr)
		}
	}
	if _, stderr, code := s.ssh(t, "reader", nil, nil, "touch /tmp/x"); code != 126 {
		t.Errorf("reader: %d %s", code, stderr)
	}
	s.ssh(t, "agent", nil, append(cm, "-O", "exit"))
	var agent int
	for _, ss := range lgtest.Sessions(t, s.cfg, "--workload", "agent") {
		if ss.Outcome != "refused" {
			agent++
		}
	}
	if agent != 1 {
		t.Errorf("%d agent sessions, want the one master connection", agent)
	}
}

// TestSSHApprovalAbandoned: a multiplexed session whose client goes away
// while its exec waits for approval (the connection stays, held by the
// ControlMaster) abandons the request; the command never runs.
func TestSSHApprovalAbandoned(t *testing.T) {
	s := newSSHSetup(t)
	dir := filepath.Join(s.shared, "cm")
	os.Mkdir(dir, 0o777)
	os.Chmod(dir, 0o777)
	cm := []string{"-o", "ControlMaster=auto", "-o", "ControlPath=" + dir + "/%C", "-o", "ControlPersist=30"}
	if _, stderr, code := s.ssh(t, "careful", nil, cm, "true"); code != 0 {
		t.Fatalf("master: %d %s", code, stderr)
	}
	defer s.ssh(t, "careful", nil, append(cm, "-O", "exit"))
	file := filepath.Join(s.sshd.UserDir, "abandoned")
	args := append(append([]string{"run", "--config", s.cfg, "--workload", "careful", "--user", "nobody", "--", "ssh"}, s.sshArgs(cm...)...),
		"-p", s.port, "deploy@127.0.0.1", "touch "+file)
	cmd := exec.Command(lgtest.Binary(t), args...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pending := func() []string {
		out, _ := s.cliAs(t, 0, "approvals", "list", "--json")
		var ids []string
		for _, line := range strings.Split(out, "\n") {
			if strings.Contains(line, `"state":"pending"`) {
				ids = append(ids, line)
			}
		}
		return ids
	}
	lgtest.Eventually(t, 20*time.Second, "the exec waiting for approval", func() bool { return len(pending()) == 1 })
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()
	// Well before the approval timeout (20s): abandoned, not expired.
	lgtest.Eventually(t, 10*time.Second, "the request abandoned", func() bool {
		out, _ := s.cliAs(t, 0, "approvals", "list", "--json", "--state", "abandoned")
		return strings.Contains(out, `"state":"abandoned"`)
	})
	if _, err := os.Stat(file); err == nil {
		t.Error("the command ran for a client that left")
	}
}
