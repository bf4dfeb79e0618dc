package tests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/loopgate/loopgate/tests/lgtest"
)

// TestSSHToken: a workload with token: logs in with its OIDC token as the
// SSH password (SSH_ASKPASS); a wrong token is refused and recorded.
func TestSSHToken(t *testing.T) {
	is := lgtest.StartIssuer(t)
	s := newSSHSetupEdit(t, func(cfg, cg string) string {
		cfg = strings.Replace(cfg, "workloads:\n", fmt.Sprintf(`oidc:
  - {issuer: "%s", audience: loopgate}
workloads:
  - name: signed
    cgroup: %s/signed
    token: {issuer: "%s", subject: "repo:acme"}
`, is.URL, cg, is.URL), 1)
		return strings.Replace(cfg, "  - id: reader-box\n    workloads: [reader]", "  - id: reader-box\n    workloads: [reader, signed]", 1)
	})
	askpass := func(token string) []string {
		tok := filepath.Join(s.shared, fmt.Sprintf("token-%d", len(token)))
		os.WriteFile(tok, []byte(token), 0o644)
		script := tok + ".sh"
		os.WriteFile(script, []byte("#!/bin/sh\ncat "+tok+"\n"), 0o755)
		return []string{"SSH_ASKPASS=" + script, "SSH_ASKPASS_REQUIRE=force"}
	}
	ssh := func(env []string) (string, string, int) {
		args := append([]string{"env"}, env...)
		args = append(append(args, "ssh", "-o", "BatchMode=no", "-o", "PreferredAuthentications=password",
			"-o", "NumberOfPasswordPrompts=1"), s.sshArgs()...)
		return s.run(t, "signed", nil, append(args, "-p", s.port, "deploy@127.0.0.1", "echo", "signed-in")...)
	}
	good := is.Token(t, lgtest.Claims{Subject: "repo:acme", Audience: "loopgate"})
	if out, stderr, code := ssh(askpass(good)); code != 0 || out != "signed-in\n" {
		t.Errorf("good token: code %d out %q err %q", code, out, stderr)
	}
	bad := is.Token(t, lgtest.Claims{Subject: "repo:other", Audience: "loopgate"})
	if _, stderr, code := ssh(askpass(bad)); code != 255 || !strings.Contains(stderr, "Permission denied") {
		t.Errorf("wrong subject: code %d err %q", code, stderr)
	}
	lgtest.Eventually(t, 10*time.Second, "the refusal recorded", func() bool {
		for _, ss := range lgtest.Sessions(t, s.cfg, "--workload", "signed") {
			if ss.Outcome == "denied" && strings.Contains(ss.Error, "OIDC token refused") {
				return true
			}
		}
		return false
	})
}

// TestSSHTargetHostKey: a target whose host key is not the pinned one is
// never logged in to; the agent is told, and the session records why.
func TestSSHTargetHostKey(t *testing.T) {
	s := newSSHSetupEdit(t, func(cfg, _ string) string {
		i := strings.Index(cfg, "    known_hosts: ")
		j := i + strings.Index(cfg[i:], "\n")
		kh := strings.TrimPrefix(cfg[i:j], "    known_hosts: ")
		// Another key for the same address.
		os.WriteFile(kh, []byte(strings.Split(string(must(os.ReadFile(kh))), " ")[0]+
			" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMNJrUmX2ZRx0sIKZr2fjQ4Kx1kqK2lrZ3f1u9kXvH2w\n"), 0o600)
		return cfg
	})
	_, stderr, code := s.run(t, "admin", nil, append(append([]string{"ssh", "-o", "LogLevel=INFO"}, s.sshArgs()...), "-p", s.port, "deploy@127.0.0.1", "true")...)
	if code != 255 || !strings.Contains(stderr, "loopgate: cannot reach the target") {
		t.Errorf("code %d stderr %q", code, stderr)
	}
	if strings.Contains(s.sshd.Log(), "Accepted") {
		t.Errorf("logged in to an unverified target:\n%s", s.sshd.Log())
	}
	out, err := exec.Command(lgtest.Binary(t), "sessions", "export", "--config", s.cfg, "--workload", "admin").Output()
	if err != nil || !strings.Contains(string(out), "not trusted") {
		t.Errorf("record: %v %s", err, out)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// TestSSHStaticCredentials logs in upstream with a key_file and with a
// password_file instead of a minted certificate.
func TestSSHStaticCredentials(t *testing.T) {
	dir := lgtest.SharedDir(t) // sshd reads authorized_keys as the user
	key := filepath.Join(dir, "id_ed25519")
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v %s", err, out)
	}
	pub := must(os.ReadFile(key + ".pub"))
	ak := filepath.Join(dir, "authorized_keys")
	os.WriteFile(ak, pub, 0o644)
	t.Run("key_file", func(t *testing.T) {
		s := newSSHSetupEdit(t, func(cfg, _ string) string {
			return strings.Replace(cfg, "ssh_ca: true, ttl: 2m}", "key_file: "+key+"}", 1)
		}, "AuthorizedKeysFile "+ak)
		if out, stderr, code := s.ssh(t, "agent", nil, nil, "echo", "keyed"); code != 0 || out != "keyed\n" {
			t.Errorf("code %d out %q err %q", code, out, stderr)
		}
		if !strings.Contains(s.sshd.Log(), "Accepted publickey for "+lgtest.SSHUser) {
			t.Errorf("sshd log:\n%s", s.sshd.Log())
		}
	})
	t.Run("password_file", func(t *testing.T) {
		pw := filepath.Join(dir, "password")
		secret := "pw-" + strconv.FormatInt(time.Now().UnixNano(), 36)
		os.WriteFile(pw, []byte(secret+"\n"), 0o600)
		s := newSSHSetupEdit(t, func(cfg, _ string) string {
			return strings.Replace(cfg, "ssh_ca: true, ttl: 2m}", "password_file: "+pw+"}", 1)
		}, "PasswordAuthentication yes")
		// After StartSSHD, which leaves the account without a password.
		cmd := exec.Command("chpasswd")
		cmd.Stdin = strings.NewReader(lgtest.SSHUser + ":" + secret + "\n")
		if out, err := cmd.CombinedOutput(); err != nil {
			lgtest.Unavailable(t, "chpasswd: %v %s", err, out)
		}
		t.Cleanup(func() { exec.Command("usermod", "-p", "*", lgtest.SSHUser).Run() })
		if out, stderr, code := s.ssh(t, "agent", nil, nil, "echo", "passworded"); code != 0 || out != "passworded\n" {
			t.Errorf("code %d out %q err %q", code, out, stderr)
		}
		if !strings.Contains(s.sshd.Log(), "Accepted password for "+lgtest.SSHUser) {
			t.Errorf("sshd log:\n%s", s.sshd.Log())
		}
	})
}

// TestSSHTargetHostCA verifies the target by a host certificate from the
// CA in host_ca: instead of a pinned key.
func TestSSHTargetHostCA(t *testing.T) {
	dir := lgtest.SharedDir(t)
	ca, hostKey := filepath.Join(dir, "target_ca"), filepath.Join(dir, "host_ed25519")
	for _, k := range []string{ca, hostKey} {
		if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", k).CombinedOutput(); err != nil {
			t.Fatalf("ssh-keygen: %v %s", err, out)
		}
	}
	if out, err := exec.Command("ssh-keygen", "-q", "-s", ca, "-h", "-I", "box", "-n", "127.0.0.1", "-V", "-5m:+1h", hostKey+".pub").CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen -s: %v %s", err, out)
	}
	s := newSSHSetupEdit(t, func(cfg, _ string) string {
		i := strings.Index(cfg, "    known_hosts: ")
		j := i + strings.Index(cfg[i:], "\n")
		return cfg[:i] + "    host_ca: " + ca + ".pub" + cfg[j:]
	}, "HostKey "+hostKey, "HostCertificate "+hostKey+"-cert.pub")
	if out, stderr, code := s.ssh(t, "agent", nil, nil, "echo", "certified"); code != 0 || out != "certified\n" {
		t.Errorf("code %d out %q err %q\n%s", code, out, stderr, s.sshd.Log())
	}
}
