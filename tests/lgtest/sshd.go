package lgtest

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// SSHUser is the local account test sshd servers log agents in as (never
// root: a policy test that went wrong must not be able to hurt the host).
const SSHUser = "lgtest-ssh"

// SSHD is a real OpenSSH server started for a test on 127.0.0.1.
type SSHD struct {
	Port int
	Dir  string
	// HostKeyPub is the server's ed25519 host public key (authorized_keys
	// format), for a known_hosts file.
	HostKeyPub string
	// UserDir is a directory owned by SSHUser for files the test moves.
	UserDir string
	cmd     *exec.Cmd
	mu      sync.Mutex
	log     bytes.Buffer
}

// Addr is host:port.
func (s *SSHD) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.Port) }

// Log is what sshd has logged (-e) so far.
func (s *SSHD) Log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.log.String()
}

// Write collects sshd's log.
func (s *SSHD) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.log.Write(p)
}

// EnsureSSHUser creates SSHUser (a system account with /bin/sh and no
// home) if it is missing, and returns its uid and gid.
func EnsureSSHUser(t testing.TB) (int, int) {
	t.Helper()
	u, err := user.Lookup(SSHUser)
	if err != nil {
		out, err := exec.Command("useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent", "--shell", "/bin/sh", SSHUser).CombinedOutput()
		if err != nil {
			Unavailable(t, "useradd %s: %v %s", SSHUser, err, out)
		}
		if u, err = user.Lookup(SSHUser); err != nil {
			Unavailable(t, "lookup %s: %v", SSHUser, err)
		}
	}
	// useradd locks the account ("!"), which sshd refuses without PAM;
	// "*" has no password and is not locked.
	if out, err := exec.Command("usermod", "-p", "*", SSHUser).CombinedOutput(); err != nil {
		Unavailable(t, "usermod %s: %v %s", SSHUser, err, out)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return uid, gid
}

// StartSSHD starts Debian's sshd on a free loopback port with its own host
// key, trusting the user CA public key userCA (TrustedUserCAKeys), with
// extra config lines (which override the defaults), and stops it when t
// ends.
func StartSSHD(t testing.TB, userCA string, extra ...string) *SSHD {
	t.Helper()
	RequireRoot(t)
	const bin = "/usr/sbin/sshd"
	if _, err := os.Stat(bin); err != nil {
		Unavailable(t, "sshd not installed: apt-get install openssh-server")
	}
	if _, err := exec.LookPath("ssh-keygen"); err != nil {
		Unavailable(t, "ssh-keygen not installed: apt-get install openssh-client")
	}
	uid, gid := EnsureSSHUser(t)
	os.MkdirAll("/run/sshd", 0o755) // privilege separation
	dir, err := os.MkdirTemp("", "lgtest-sshd-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	t.Cleanup(func() { os.RemoveAll(dir) })
	s := &SSHD{Dir: dir, Port: FreePort(t), UserDir: filepath.Join(dir, "home")}
	os.Mkdir(s.UserDir, 0o755)
	os.Chown(s.UserDir, uid, gid)
	hostKey := filepath.Join(dir, "host_ed25519")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", hostKey).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v %s", err, out)
	}
	pub, _ := os.ReadFile(hostKey + ".pub")
	s.HostKeyPub = strings.TrimSpace(string(pub))
	caFile := filepath.Join(dir, "user_ca.pub")
	os.WriteFile(caFile, []byte(userCA+"\n"), 0o644)
	// extra comes first: sshd keeps the first value of a keyword, so
	// callers override the defaults below.
	cfg := fmt.Sprintf(`%s
ListenAddress 127.0.0.1:%d
HostKey %s
PidFile %s/sshd.pid
StrictModes no
UsePAM no
PermitRootLogin no
AuthorizedKeysFile none
TrustedUserCAKeys %s
PasswordAuthentication no
KbdInteractiveAuthentication no
Subsystem sftp internal-sftp
LogLevel VERBOSE
MaxStartups 200
MaxSessions 200
`, strings.Join(extra, "\n"), s.Port, hostKey, dir, caFile)
	cfgFile := filepath.Join(dir, "sshd_config")
	os.WriteFile(cfgFile, []byte(cfg), 0o600)
	if out, err := exec.Command(bin, "-t", "-f", cfgFile).CombinedOutput(); err != nil {
		t.Fatalf("sshd -t: %v %s", err, out)
	}
	cmd := exec.Command(bin, "-D", "-e", "-f", cfgFile)
	cmd.Stdout, cmd.Stderr = s, s
	if err := cmd.Start(); err != nil {
		t.Fatalf("start sshd: %v", err)
	}
	s.cmd = cmd
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	Eventually(t, 10*time.Second, "sshd listening", func() bool { return strings.Contains(s.Log(), "Server listening") })
	return s
}
