package ssh

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/crypto/ssh"
)

func TestCAFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "state", UserCAFile)
	ca, err := LoadOrCreateCA(path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v, %v", st.Mode(), err)
	}
	again, err := LoadOrCreateCA(path)
	if err != nil || again.AuthorizedKey() != ca.AuthorizedKey() {
		t.Fatalf("reload gave another key: %v", err)
	}
	pub, _ := os.ReadFile(path + ".pub")
	if string(pub) != ca.AuthorizedKey()+"\n" {
		t.Errorf(".pub %q, want %q", pub, ca.AuthorizedKey())
	}
	if ca.PublicKey().Type() != ssh.KeyAlgoED25519 {
		t.Errorf("CA type %s", ca.PublicKey().Type())
	}
}

func TestMintUser(t *testing.T) {
	t.Parallel()
	ca, err := LoadOrCreateCA(filepath.Join(t.TempDir(), UserCAFile))
	if err != nil {
		t.Fatal(err)
	}
	uc, err := ca.MintUser("loopgate:s1:agent", "deploy", 2*time.Minute, []string{"permit-pty"})
	if err != nil {
		t.Fatal(err)
	}
	cert := uc.Signer.PublicKey().(*ssh.Certificate)
	if cert.CertType != ssh.UserCert || cert.KeyId != "loopgate:s1:agent" || !slices.Equal(cert.ValidPrincipals, []string{"deploy"}) {
		t.Errorf("cert %+v", cert)
	}
	if diff := cmp.Diff(map[string]string{"permit-pty": ""}, cert.Extensions); diff != "" {
		t.Errorf("extensions (-want +got):\n%s", diff)
	}
	if len(cert.CriticalOptions) != 0 {
		t.Errorf("critical options %v: force-command must never be set", cert.CriticalOptions)
	}
	now := uint64(time.Now().Unix())
	if cert.ValidAfter > now || cert.ValidBefore < now+60 || cert.ValidBefore > now+180 {
		t.Errorf("validity %d..%d around %d", cert.ValidAfter, cert.ValidBefore, now)
	}
	checker := ssh.CertChecker{IsUserAuthority: func(k ssh.PublicKey) bool { return string(k.Marshal()) == string(ca.PublicKey().Marshal()) }}
	if _, err := checker.Authenticate(connMeta("deploy"), cert); err != nil {
		t.Errorf("sshd-like check: %v", err)
	}
	if _, err := checker.Authenticate(connMeta("root"), cert); err == nil {
		t.Error("cert accepted for another login")
	}
	other, _ := ca.MintUser("loopgate:s2:agent", "deploy", time.Minute, nil)
	if other.Serial == uc.Serial {
		t.Error("serials repeat")
	}
}

type connMeta string

func (c connMeta) User() string        { return string(c) }
func (connMeta) SessionID() []byte     { return nil }
func (connMeta) ClientVersion() []byte { return nil }
func (connMeta) ServerVersion() []byte { return nil }
func (connMeta) RemoteAddr() net.Addr  { return nil }
func (connMeta) LocalAddr() net.Addr   { return nil }

func TestHostCert(t *testing.T) {
	t.Parallel()
	ca, err := LoadOrCreateCA(filepath.Join(t.TempDir(), HostCAFile))
	if err != nil {
		t.Fatal(err)
	}
	hk, err := newHostKeys(ca)
	if err != nil {
		t.Fatal(err)
	}
	principals := HostPrincipals([]string{"db1.corp:22", "10.0.0.5:2222", "[::1]:22"}, netip.MustParseAddr("::ffff:10.0.0.5"))
	if diff := cmp.Diff([]string{"10.0.0.5", "::1", "db1.corp"}, principals); diff != "" {
		t.Errorf("principals (-want +got):\n%s", diff)
	}
	s, err := hk.signer(principals)
	if err != nil {
		t.Fatal(err)
	}
	cert := s.PublicKey().(*ssh.Certificate)
	checker := ssh.CertChecker{IsHostAuthority: func(k ssh.PublicKey, _ string) bool { return string(k.Marshal()) == string(ca.PublicKey().Marshal()) }}
	for _, host := range []string{"db1.corp:22", "10.0.0.5:2222"} {
		if err := checker.CheckHostKey(host, nil, cert); err != nil {
			t.Errorf("%s: %v", host, err)
		}
	}
	if err := checker.CheckHostKey("other.corp:22", nil, cert); err == nil {
		t.Error("cert good for a host it does not name")
	}
	if s2, _ := hk.signer(principals); s2 != s {
		t.Error("host cert not reused")
	}
}

func TestKnownHosts(t *testing.T) {
	t.Parallel()
	got := KnownHostsPatterns([]string{"db1.corp:22", "127.0.0.1:2222", "[::1]:2022"})
	if diff := cmp.Diff([]string{"db1.corp", "[127.0.0.1]:2222", "[::1]:2022"}, got); diff != "" {
		t.Errorf("patterns (-want +got):\n%s", diff)
	}
	dir := t.TempDir()
	ca, _ := LoadOrCreateCA(filepath.Join(dir, HostCAFile))
	line := ca.KnownHostsLine(got)
	marker, hosts, key, _, _, err := ssh.ParseKnownHosts([]byte(line))
	if err != nil || marker != "cert-authority" || !slices.Equal(hosts, got) || string(key.Marshal()) != string(ca.PublicKey().Marshal()) {
		t.Errorf("line %q: %q %v %v", line, marker, hosts, err)
	}
	kh := filepath.Join(dir, "known_hosts")
	os.WriteFile(kh, []byte("[127.0.0.1]:2222 "+ca.AuthorizedKey()+"\n"), 0o600)
	if algos := knownAlgorithms(kh); !slices.Equal(algos, []string{ssh.KeyAlgoED25519}) {
		t.Errorf("algorithms %v", algos)
	}
}
