package ssh

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/loopgate/loopgate/policy"
)

// upstream is the daemon's SSH connection to the target, logged in with
// credentials the agent never sees.
type upstream struct {
	client *ssh.Client
	// cert is the minted user certificate (nil for static credentials).
	cert *UserCert
	// hostKey is the target's host key fingerprint (SHA256).
	hostKey string
}

// upstreamAuth builds the upstream login for target t.
func (h *Handler) upstreamAuth(t *policy.Target, keyID string, extensions []string) ([]ssh.AuthMethod, *UserCert, error) {
	c := t.Credentials
	switch {
	case c.SSH.CA:
		cert, err := h.userCA.MintUser(keyID, c.User, c.SSH.TTL, extensions)
		if err != nil {
			return nil, nil, err
		}
		return []ssh.AuthMethod{ssh.PublicKeys(cert.Signer)}, cert, nil
	case c.SSH.KeyFile != "":
		pemBytes, err := os.ReadFile(c.SSH.KeyFile)
		if err != nil {
			return nil, nil, fmt.Errorf("read key_file: %w", err)
		}
		signer, err := ssh.ParsePrivateKey(pemBytes)
		if err != nil {
			return nil, nil, fmt.Errorf("parse key_file %s: %w", c.SSH.KeyFile, err)
		}
		return []ssh.AuthMethod{ssh.PublicKeys(signer)}, nil, nil
	case c.PasswordFile != "" || c.PasswordEnv != "":
		var pw string
		if c.PasswordFile != "" {
			b, err := os.ReadFile(c.PasswordFile)
			if err != nil {
				return nil, nil, fmt.Errorf("read password_file: %w", err)
			}
			pw = strings.TrimRight(string(b), "\r\n")
		} else {
			pw = os.Getenv(c.PasswordEnv)
		}
		return []ssh.AuthMethod{ssh.Password(pw), ssh.KeyboardInteractive(func(_, _ string, qs []string, _ []bool) ([]string, error) {
			ans := make([]string, len(qs))
			for i := range ans {
				ans[i] = pw
			}
			return ans, nil
		})}, nil, nil
	}
	return nil, nil, errors.New("target has no ssh credentials")
}

// hostKeyCheck verifies the target's host key against its known_hosts file
// or host CA, under any of the target's names and the address dialled.
// There is no way to skip it. It also returns the algorithms to prefer
// (certificates, for a host CA).
func hostKeyCheck(t *policy.Target, dialled string) (ssh.HostKeyCallback, []string, error) {
	names := append([]string{dialled}, t.Addresses...)
	if t.SSH.KnownHosts != "" {
		kh, err := knownhosts.New(t.SSH.KnownHosts)
		if err != nil {
			return nil, nil, fmt.Errorf("known_hosts: %w", err)
		}
		cb := func(_ string, remote net.Addr, key ssh.PublicKey) error {
			var first error
			for _, n := range names {
				err := kh(n, remote, key)
				if err == nil {
					return nil
				}
				if first == nil {
					first = err
				}
			}
			return first
		}
		return cb, knownAlgorithms(t.SSH.KnownHosts), nil
	}
	data, err := os.ReadFile(t.SSH.HostCA)
	if err != nil {
		return nil, nil, fmt.Errorf("read host_ca: %w", err)
	}
	var cas []ssh.PublicKey
	for rest := data; len(bytes.TrimSpace(rest)) > 0; {
		k, _, _, r, err := ssh.ParseAuthorizedKey(rest)
		if err != nil {
			return nil, nil, fmt.Errorf("parse host_ca %s: %w", t.SSH.HostCA, err)
		}
		cas, rest = append(cas, k), r
	}
	var hosts []string
	for _, n := range names {
		host, _, err := net.SplitHostPort(n)
		if err != nil {
			host = n
		}
		hosts = append(hosts, strings.Trim(host, "[]"))
	}
	checker := &ssh.CertChecker{
		IsHostAuthority: func(auth ssh.PublicKey, _ string) bool {
			return slices.ContainsFunc(cas, func(k ssh.PublicKey) bool { return bytes.Equal(k.Marshal(), auth.Marshal()) })
		},
	}
	cb := func(_ string, remote net.Addr, key ssh.PublicKey) error {
		cert, ok := key.(*ssh.Certificate)
		if !ok {
			return errors.New("target presented a plain host key; host_ca wants a host certificate")
		}
		var first error
		for _, h := range hosts {
			// CheckHostKey checks the principal against the host part.
			err := checker.CheckHostKey(net.JoinHostPort(h, "22"), remote, cert)
			if err == nil {
				return nil
			}
			if first == nil {
				first = err
			}
		}
		return first
	}
	return cb, []string{ssh.CertAlgoED25519v01, ssh.CertAlgoECDSA256v01, ssh.CertAlgoECDSA384v01, ssh.CertAlgoECDSA521v01,
		ssh.CertAlgoRSASHA512v01, ssh.CertAlgoRSASHA256v01}, nil
}

// knownAlgorithms are the host key algorithms of the keys in a known_hosts
// file, so the target is asked for a key we can check (sshpiper #554: a
// target with several keys offered one that was not pinned). nil: the
// defaults.
func knownAlgorithms(file string) []string {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil
	}
	var algos []string
	for rest := data; len(rest) > 0; {
		marker, _, key, _, r, err := ssh.ParseKnownHosts(rest)
		if err != nil {
			break
		}
		rest = r
		if marker == "@revoked" {
			continue
		}
		if marker == "@cert-authority" {
			return nil // certificates of any type
		}
		switch key.Type() {
		case ssh.KeyAlgoRSA:
			algos = append(algos, ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256)
		default:
			algos = append(algos, key.Type())
		}
	}
	slices.Sort(algos)
	return slices.Compact(algos)
}

// dial connects and logs in to the target at addr.
func (h *Handler) dial(ctx context.Context, t *policy.Target, addr, keyID string, extensions []string) (*upstream, error) {
	auth, cert, err := h.upstreamAuth(t, keyID, extensions)
	if err != nil {
		return nil, err
	}
	check, algos, err := hostKeyCheck(t, addr)
	if err != nil {
		return nil, err
	}
	u := &upstream{cert: cert}
	timeout := h.DialTimeout
	if timeout == 0 {
		timeout = 15 * time.Second
	}
	cc := &ssh.ClientConfig{
		User: t.Credentials.User,
		Auth: auth,
		HostKeyCallback: func(host string, remote net.Addr, key ssh.PublicKey) error {
			if err := check(host, remote, key); err != nil {
				return fmt.Errorf("target host key %s not trusted: %w", ssh.FingerprintSHA256(key), err)
			}
			u.hostKey = ssh.FingerprintSHA256(key)
			return nil
		},
		HostKeyAlgorithms: algos,
		ClientVersion:     "SSH-2.0-loopgate",
		Timeout:           timeout,
	}
	d := net.Dialer{Timeout: timeout}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dial upstream %s: %w", addr, err)
	}
	conn.SetDeadline(time.Now().Add(timeout))
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	c, chans, reqs, err := ssh.NewClientConn(conn, addr, cc)
	stop()
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("log in upstream %s as %s: %w", addr, t.Credentials.User, err)
	}
	conn.SetDeadline(time.Time{})
	// NewClient services the target's global requests (keepalives get a
	// reply; hostkeys-00@openssh.com is dropped, never reaching an agent
	// that checked loopgate's key) and refuses channels it opens.
	u.client = ssh.NewClient(c, chans, reqs)
	return u, nil
}
