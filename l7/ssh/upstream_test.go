package ssh

import (
	"crypto/ed25519"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/loopgate/loopgate/policy"
)

// signHost signs a host certificate for principals with ca.
func signHost(t *testing.T, ca *CA, principals ...string) *ssh.Certificate {
	t.Helper()
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	sp, _ := ssh.NewPublicKey(pub)
	c := &ssh.Certificate{CertType: ssh.HostCert, ValidPrincipals: principals,
		ValidAfter: uint64(time.Now().Add(-time.Minute).Unix()), ValidBefore: uint64(time.Now().Add(time.Hour).Unix())}
	if err := ca.sign(c, sp); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestHostKeyCheckHostCA(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ca, _ := LoadOrCreateCA(filepath.Join(dir, "target_ca"))
	other, _ := LoadOrCreateCA(filepath.Join(dir, "other_ca"))
	caFile := filepath.Join(dir, "host_ca.pub")
	os.WriteFile(caFile, []byte(ca.AuthorizedKey()+"\n"), 0o644)
	target := &policy.Target{Name: "box", Addresses: []string{"db1.corp:22"}, SSH: policy.SSHTarget{HostCA: caFile}}
	check, algos, err := hostKeyCheck(target, "10.0.0.5:22")
	if err != nil {
		t.Fatal(err)
	}
	if len(algos) == 0 || !strings.HasSuffix(algos[0], "-cert-v01@openssh.com") {
		t.Errorf("algorithms %v: want certificates first", algos)
	}
	tests := []struct {
		name string
		key  ssh.PublicKey
		ok   bool
	}{
		{"cert for the name", signHost(t, ca, "db1.corp"), true},
		{"cert for the address", signHost(t, ca, "10.0.0.5"), true},
		{"cert for another host", signHost(t, ca, "db2.corp"), false},
		{"cert from another CA", signHost(t, other, "db1.corp"), false},
		{"plain key", ca.PublicKey(), false},
	}
	for _, tc := range tests {
		if err := check("10.0.0.5:22", nil, tc.key); (err == nil) != tc.ok {
			t.Errorf("%s: err %v, want ok %v", tc.name, err, tc.ok)
		}
	}
}
