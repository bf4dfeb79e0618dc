package ssh

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/ssh"
)

// CA file names in the daemon's state directory (beside the store).
const (
	HostCAFile = "ssh_host_ca"
	UserCAFile = "ssh_user_ca"
)

// CA is an ed25519 SSH certificate authority whose private key stays in a
// 0600 file on the daemon's host. It is safe for concurrent use.
type CA struct {
	signer ssh.Signer
	// File is the private key's path; File+".pub" holds the public key.
	File string
}

// LoadOrCreateCA loads the CA key at path, creating it (and path.pub) if
// it does not exist.
func LoadOrCreateCA(path string) (*CA, error) {
	pemBytes, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		if err := createCA(path); err != nil {
			return nil, err
		}
		pemBytes, err = os.ReadFile(path)
	}
	if err != nil {
		return nil, fmt.Errorf("read ssh CA: %w", err)
	}
	signer, err := ssh.ParsePrivateKey(pemBytes)
	if err != nil {
		return nil, fmt.Errorf("parse ssh CA %s: %w", path, err)
	}
	return &CA{signer: signer, File: path}, nil
}

func createCA(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("create ssh CA dir: %w", err)
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return err
	}
	block, err := ssh.MarshalPrivateKey(priv, "loopgate "+filepath.Base(path))
	if err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return nil // another process made it first
	}
	if err != nil {
		return fmt.Errorf("create ssh CA: %w", err)
	}
	if err := pem.Encode(f, block); err != nil {
		f.Close()
		return fmt.Errorf("write ssh CA: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write ssh CA: %w", err)
	}
	sp, _ := ssh.NewPublicKey(pub)
	return os.WriteFile(path+".pub", ssh.MarshalAuthorizedKey(sp), 0o644)
}

// PublicKey is the CA's public key.
func (c *CA) PublicKey() ssh.PublicKey { return c.signer.PublicKey() }

// AuthorizedKey is the CA's public key as one authorized_keys line (for
// sshd's TrustedUserCAKeys), without the newline.
func (c *CA) AuthorizedKey() string {
	return strings.TrimSpace(string(ssh.MarshalAuthorizedKey(c.signer.PublicKey())))
}

func serial() uint64 {
	var b [8]byte
	rand.Read(b[:])
	return binary.BigEndian.Uint64(b[:])
}

// sign signs cert (filling Key, Serial and the signature).
func (c *CA) sign(cert *ssh.Certificate, key ssh.PublicKey) error {
	cert.Key = key
	cert.Serial = serial()
	return cert.SignCert(rand.Reader, c.signer)
}

// UserCert is what MintUser returns: a signer that logs in with a fresh
// certificate, and the certificate's facts for the record.
type UserCert struct {
	Signer      ssh.Signer
	KeyID       string
	Serial      uint64
	ValidBefore time.Time
}

// MintUser makes an ephemeral ed25519 key (in memory only) and a user
// certificate for principal, valid from a minute ago (clock skew) for ttl,
// with only the given extensions (e.g. "permit-pty"). It never sets
// force-command: that would replace the exec the policy decided.
func (c *CA) MintUser(keyID, principal string, ttl time.Duration, extensions []string) (*UserCert, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	signer, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil, err
	}
	sp, _ := ssh.NewPublicKey(pub)
	now := time.Now()
	cert := &ssh.Certificate{
		CertType:        ssh.UserCert,
		KeyId:           keyID,
		ValidPrincipals: []string{principal},
		ValidAfter:      uint64(now.Add(-time.Minute).Unix()),
		ValidBefore:     uint64(now.Add(ttl).Unix()),
		Permissions:     ssh.Permissions{Extensions: map[string]string{}},
	}
	for _, e := range extensions {
		cert.Permissions.Extensions[e] = ""
	}
	if err := c.sign(cert, sp); err != nil {
		return nil, fmt.Errorf("sign user certificate: %w", err)
	}
	cs, err := ssh.NewCertSigner(cert, signer)
	if err != nil {
		return nil, err
	}
	return &UserCert{Signer: cs, KeyID: keyID, Serial: cert.Serial, ValidBefore: time.Unix(int64(cert.ValidBefore), 0)}, nil
}

// hostCertTTL is how long a host certificate shown to agents is valid;
// one is made again when less than a quarter of it is left.
const hostCertTTL = 24 * time.Hour

// hostKeys presents, per target, a host certificate from the host CA for
// an ephemeral key made at the daemon's start. mu guards certs.
type hostKeys struct {
	ca  *CA
	key ssh.Signer

	mu    sync.Mutex
	certs map[string]hostCert // by principals joined
}

type hostCert struct {
	signer ssh.Signer
	until  time.Time
}

func newHostKeys(ca *CA) (*hostKeys, error) {
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	key, err := ssh.NewSignerFromKey(priv)
	if err != nil {
		return nil, err
	}
	return &hostKeys{ca: ca, key: key, certs: map[string]hostCert{}}, nil
}

// signer returns the host certificate signer for a target with the given
// principals (its configured host names and addresses, and the address
// dialled).
func (h *hostKeys) signer(principals []string) (ssh.Signer, error) {
	k := strings.Join(principals, ",")
	h.mu.Lock()
	defer h.mu.Unlock()
	if c, ok := h.certs[k]; ok && time.Until(c.until) > hostCertTTL/4 {
		return c.signer, nil
	}
	now := time.Now()
	cert := &ssh.Certificate{
		CertType:        ssh.HostCert,
		KeyId:           "loopgate host " + k,
		ValidPrincipals: principals,
		ValidAfter:      uint64(now.Add(-time.Minute).Unix()),
		ValidBefore:     uint64(now.Add(hostCertTTL).Unix()),
	}
	if err := h.ca.sign(cert, h.key.PublicKey()); err != nil {
		return nil, fmt.Errorf("sign host certificate: %w", err)
	}
	s, err := ssh.NewCertSigner(cert, h.key)
	if err != nil {
		return nil, err
	}
	if len(h.certs) > 1024 { // bounded: targets are few
		clear(h.certs)
	}
	h.certs[k] = hostCert{signer: s, until: time.Unix(int64(cert.ValidBefore), 0)}
	return s, nil
}

// HostPrincipals are the names an agent may dial a target by: the hosts of
// its configured addresses and the address it dialled.
func HostPrincipals(addresses []string, dialled netip.Addr) []string {
	var out []string
	for _, a := range addresses {
		host, _, err := net.SplitHostPort(a)
		if err != nil {
			host = a
		}
		out = append(out, strings.Trim(host, "[]"))
	}
	if dialled.IsValid() {
		out = append(out, dialled.Unmap().String())
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// KnownHostsPatterns are the known_hosts host patterns for a target's
// addresses: "host" for port 22, "[host]:port" otherwise (OpenSSH looks a
// host up that way when it is dialled on another port).
func KnownHostsPatterns(addresses []string) []string {
	var out []string
	for _, a := range addresses {
		host, port, err := net.SplitHostPort(a)
		if err != nil {
			out = append(out, a)
			continue
		}
		if port == "22" {
			out = append(out, host)
		} else {
			out = append(out, "["+host+"]:"+port)
		}
	}
	return out
}

// KnownHostsLine is the @cert-authority line an operator adds to
// /etc/ssh/ssh_known_hosts so agents trust the host CA for patterns.
func (c *CA) KnownHostsLine(patterns []string) string {
	return "@cert-authority " + strings.Join(patterns, ",") + " " + c.AuthorizedKey()
}
