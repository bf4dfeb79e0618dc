package tests

import (
	"bytes"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
