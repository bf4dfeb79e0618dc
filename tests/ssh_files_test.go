package tests

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/loopgate/loopgate/tests/lgtest"
)

// TestSSHRekey moves 1 GiB through loopgate with both legs rekeying every
// 32 MiB (sshpiper #3, warpgate #479: rekeys while piping).
func TestSSHRekey(t *testing.T) {
	s := newSSHSetup(t, "RekeyLimit 32M")
	out, stderr, code := s.run(t, "admin", nil, "sh", "-c",
		"head -c 1073741824 /dev/zero | ssh "+shellQuote(s.sshArgs("-o", "RekeyLimit=32M"))+" -p "+s.port+" deploy@127.0.0.1 'wc -c'")
	if code != 0 || strings.TrimSpace(out) != "1073741824" {
		t.Errorf("code %d out %q stderr %q", code, out, stderr)
	}
}

// TestSSHFiles copies files with scp -O (legacy: exec scp -t/-f, classes
// file-write/file-read) and rsync over ssh, allowed and denied.
func TestSSHFiles(t *testing.T) {
	s := newSSHSetup(t)
	local := filepath.Join(s.shared, "local")
	os.Mkdir(local, 0o777)
	os.Chmod(local, 0o777)
	payload := make([]byte, 3<<20)
	rand.Read(payload)
	// The agent's rule masks addresses in output; a file moved over an
	// exec's stdout must still arrive whole.
	copy(payload[1<<20:], "mail ada@example.com today\n")
	src := filepath.Join(local, "payload")
	os.WriteFile(src, payload, 0o644)
	remote := s.sshd.UserDir
	sshCmd := "ssh " + shellQuote(s.sshArgs("-p", s.port))
	scp := func(workload string, args ...string) (string, int) {
		full := append(append([]string{"scp"}, s.sshArgs()...), "-P", s.port)
		_, stderr, code := s.run(t, workload, nil, append(full, args...)...)
		return stderr, code
	}
	t.Run("scp -O upload allowed", func(t *testing.T) {
		if stderr, code := scp("agent", "-O", src, "deploy@127.0.0.1:"+remote+"/up-legacy"); code != 0 {
			t.Fatalf("code %d: %s", code, stderr)
		}
		if got, _ := os.ReadFile(remote + "/up-legacy"); !bytes.Equal(got, payload) {
			t.Errorf("uploaded %d bytes, differ", len(got))
		}
	})
	t.Run("scp -O download allowed for a reader", func(t *testing.T) {
		if stderr, code := scp("reader", "-O", "deploy@127.0.0.1:"+remote+"/up-legacy", local+"/down-legacy"); code != 0 {
			t.Fatalf("code %d: %s", code, stderr)
		}
		if got, _ := os.ReadFile(local + "/down-legacy"); !bytes.Equal(got, payload) {
			t.Errorf("downloaded %d bytes, differ", len(got))
		}
	})
	t.Run("scp -O upload denied for a reader", func(t *testing.T) {
		stderr, code := scp("reader", "-O", src, "deploy@127.0.0.1:"+remote+"/denied-legacy")
		if code == 0 || !strings.Contains(stderr, "loopgate: file-write denied by rule reader-box") {
			t.Errorf("code %d: %s", code, stderr)
		}
		if _, err := os.Stat(remote + "/denied-legacy"); err == nil {
			t.Error("the denied upload landed")
		}
	})
	t.Run("scp -O download by the agent, not masked", func(t *testing.T) {
		if stderr, code := scp("agent", "-O", "deploy@127.0.0.1:"+remote+"/up-legacy", local+"/down-agent"); code != 0 {
			t.Fatalf("code %d: %s", code, stderr)
		}
		if got, _ := os.ReadFile(local + "/down-agent"); !bytes.Equal(got, payload) {
			t.Errorf("downloaded %d bytes, differ", len(got))
		}
	})
	t.Run("scp -O recorded file by file", func(t *testing.T) {
		out, err := exec.Command(lgtest.Binary(t), "sessions", "export", "--config", s.cfg).Output()
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{`"text":"scp upload ` + remote + `/up-legacy (payload)"`, `"text":"scp download ` + remote + `/up-legacy"`} {
			if !strings.Contains(string(out), want) {
				t.Errorf("record lacks %s", want)
			}
		}
	})
	t.Run("rsync over ssh", func(t *testing.T) {
		_, stderr, code := s.run(t, "agent", nil, "rsync", "-e", sshCmd, src, "deploy@127.0.0.1:"+remote+"/up-rsync")
		if code != 0 {
			t.Fatalf("code %d: %s", code, stderr)
		}
		if got, _ := os.ReadFile(remote + "/up-rsync"); !bytes.Equal(got, payload) {
			t.Errorf("rsynced %d bytes, differ", len(got))
		}
		_, stderr, code = s.run(t, "reader", nil, "rsync", "-e", sshCmd, src, "deploy@127.0.0.1:"+remote+"/denied-rsync")
		if code == 0 || !strings.Contains(stderr, "denied by rule reader-box") {
			t.Errorf("reader rsync: code %d: %s", code, stderr)
		}
	})
}

// shellQuote joins args for sh -c.
func shellQuote(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(q, " ")
}

// TestSSHSFTP runs the real sftp and scp (SFTP mode, OpenSSH 9's default):
// put, get, rename and remove allowed for the agent; for a reader, get is
// allowed and the rest answered PERMISSION_DENIED without reaching the
// target, and every operation is recorded.
func TestSSHSFTP(t *testing.T) {
	s := newSSHSetup(t)
	local := filepath.Join(s.shared, "local")
	os.Mkdir(local, 0o777)
	os.Chmod(local, 0o777)
	payload := make([]byte, 5<<20+123)
	rand.Read(payload)
	src := filepath.Join(local, "payload")
	os.WriteFile(src, payload, 0o644)
	remote := s.sshd.UserDir
	sftp := func(workload, batch string) (string, string, int) {
		full := append(append([]string{"sftp"}, s.sshArgs()...), "-P", s.port, "-b", "-", "deploy@127.0.0.1")
		return s.run(t, workload, []byte(batch), full...)
	}
	t.Run("agent: put, get, rename, remove", func(t *testing.T) {
		_, stderr, code := sftp("agent", fmt.Sprintf("put %s %s/a\nget %s/a %s/a-back\nrename %s/a %s/b\nmkdir %s/d\nrmdir %s/d\n",
			src, remote, remote, local, remote, remote, remote, remote))
		if code != 0 {
			t.Fatalf("code %d: %s", code, stderr)
		}
		if got, _ := os.ReadFile(remote + "/b"); !bytes.Equal(got, payload) {
			t.Errorf("put+rename: %d bytes, differ", len(got))
		}
		if got, _ := os.ReadFile(local + "/a-back"); !bytes.Equal(got, payload) {
			t.Errorf("get: %d bytes, differ", len(got))
		}
		if _, stderr, code := sftp("agent", "rm "+remote+"/b\n"); code != 0 {
			t.Fatalf("rm: %d %s", code, stderr)
		}
		if _, err := os.Stat(remote + "/b"); err == nil {
			t.Error("remove did not remove")
		}
	})
	os.WriteFile(remote+"/keep", payload, 0o644)
	t.Run("reader: get allowed", func(t *testing.T) {
		if _, stderr, code := sftp("reader", fmt.Sprintf("get %s/keep %s/keep-back\n", remote, local)); code != 0 {
			t.Fatalf("code %d: %s", code, stderr)
		}
		if got, _ := os.ReadFile(local + "/keep-back"); !bytes.Equal(got, payload) {
			t.Errorf("get: %d bytes, differ", len(got))
		}
	})
	for _, tc := range []struct{ name, batch string }{
		{"put", fmt.Sprintf("put %s %s/denied\n", src, remote)},
		{"rename", fmt.Sprintf("rename %s/keep %s/renamed\n", remote, remote)},
		{"remove", fmt.Sprintf("rm %s/keep\n", remote)},
		{"mkdir", fmt.Sprintf("mkdir %s/dir\n", remote)},
	} {
		t.Run("reader: "+tc.name+" denied", func(t *testing.T) {
			_, stderr, code := sftp("reader", tc.batch)
			if code == 0 || !strings.Contains(stderr, "ermission denied") {
				t.Errorf("code %d: %s", code, stderr)
			}
		})
	}
	if _, err := os.Stat(remote + "/keep"); err != nil {
		t.Errorf("a denied operation changed the target: %v", err)
	}
	for _, f := range []string{"denied", "renamed", "dir"} {
		if _, err := os.Stat(remote + "/" + f); err == nil {
			t.Errorf("denied operation made %s", f)
		}
	}
	t.Run("scp (sftp mode) up for the agent, down for a reader", func(t *testing.T) {
		scp := append(append([]string{"scp"}, s.sshArgs()...), "-P", s.port)
		if _, stderr, code := s.run(t, "agent", nil, append(scp, src, "deploy@127.0.0.1:"+remote+"/scp-up")...); code != 0 {
			t.Fatalf("scp up: %d %s", code, stderr)
		}
		if got, _ := os.ReadFile(remote + "/scp-up"); !bytes.Equal(got, payload) {
			t.Errorf("scp up: %d bytes, differ", len(got))
		}
		if _, stderr, code := s.run(t, "reader", nil, append(scp, "deploy@127.0.0.1:"+remote+"/scp-up", local+"/scp-down")...); code != 0 {
			t.Fatalf("scp down: %d %s", code, stderr)
		}
		if got, _ := os.ReadFile(local + "/scp-down"); !bytes.Equal(got, payload) {
			t.Errorf("scp down: %d bytes, differ", len(got))
		}
		if _, stderr, code := s.run(t, "reader", nil, append(scp, src, "deploy@127.0.0.1:"+remote+"/scp-denied")...); code == 0 {
			t.Errorf("scp up by a reader: %d %s", code, stderr)
		}
	})
	t.Run("recorded", func(t *testing.T) {
		out, err := exec.Command(lgtest.Binary(t), "sessions", "export", "--config", s.cfg).Output()
		if err != nil {
			t.Fatal(err)
		}
		text := string(out)
		for _, want := range []string{`"text":"sftp open ` + remote + `/a"`, remote + `/a ` + remote + `/b"`, /* rename or posix-rename@openssh.com */
			`\"bytes_written\":` + strconv.Itoa(len(payload)), `"error":"file-write denied by rule reader-box"`} {
			if !strings.Contains(text, want) {
				t.Errorf("record lacks %s", want)
			}
		}
	})
}
