package policy

import (
	"path"
	"time"

	"go.yaml.in/yaml/v3"
)

// SSHTarget says how the daemon verifies an ssh target's host key. One of
// the two is required: there is no mode that trusts any key.
type SSHTarget struct {
	// KnownHosts is an OpenSSH known_hosts file (plain, hashed or
	// @cert-authority lines) the target's host key must be in.
	KnownHosts string
	// HostCA is a file of CA public keys (authorized_keys format) one of
	// which must have signed the target's host certificate.
	HostCA string
}

// SSHCredentials are an ssh target's upstream credentials besides a
// password (Credentials.PasswordFile or PasswordEnv).
type SSHCredentials struct {
	// KeyFile is an unencrypted private key (OpenSSH or PEM) to log in with.
	KeyFile string
	// CA mints, per session, an ephemeral key and a user certificate from
	// the daemon's SSH user CA for Credentials.User (ssh_ca: true).
	CA bool
	// TTL is how long a minted certificate is valid (default 5 minutes);
	// sshd checks it at login only, so the session may outlive it.
	TTL time.Duration
}

// DefaultSSHCertTTL is a minted user certificate's validity when ttl is
// not given.
const DefaultSSHCertTTL = 5 * time.Minute

func (d *decoder) sshBool(n *yaml.Node, what string, dst *bool) {
	var b string
	d.str(n, what, &b)
	switch b {
	case "true":
		*dst = true
	case "false":
	default:
		d.errorf(n, "%s must be true or false", what)
	}
}

func (d *decoder) sshDuration(n *yaml.Node, what string, dst *time.Duration) {
	var s string
	d.str(n, what, &s)
	t, err := time.ParseDuration(s)
	if err != nil || t < 10*time.Second || t > 24*time.Hour {
		d.errorf(n, "%s %q must be a duration from 10s to 24h", what, s)
		return
	}
	*dst = t
}

// sshTarget checks an ssh target's credentials and host-key settings, and
// that other protocols do not carry them.
func (d *decoder) sshTarget(n *yaml.Node, t *Target) {
	c := &t.Credentials
	if t.Protocol == ProtocolSSH {
		// key_file is read for http's client certificate too.
		c.SSH.KeyFile, c.HTTP.KeyFile = c.HTTP.KeyFile, ""
	}
	if t.Protocol != ProtocolSSH {
		if t.SSH != (SSHTarget{}) || c.SSH != (SSHCredentials{}) {
			d.errorf(n, "target %q: known_hosts, host_ca, key_file, ssh_ca and ttl are for ssh targets", t.Name)
		}
		return
	}
	if c.User == "" {
		d.errorf(n, "target %q: credentials: user is required for ssh (the login upstream)", t.Name)
	}
	n2 := 0
	for _, set := range []bool{c.SSH.CA, c.SSH.KeyFile != "", c.PasswordFile != "" || c.PasswordEnv != ""} {
		if set {
			n2++
		}
	}
	if n2 != 1 {
		d.errorf(n, "target %q: credentials: give exactly one of ssh_ca: true, key_file or password_file/password_env", t.Name)
	}
	if c.Dynamic != nil {
		d.errorf(n, "target %q: credentials: dynamic is for postgres; use ssh_ca for per-session ssh credentials", t.Name)
	}
	if c.SSH.TTL != 0 && !c.SSH.CA {
		d.errorf(n, "target %q: credentials: ttl applies to ssh_ca certificates only", t.Name)
	}
	if c.SSH.CA && c.SSH.TTL == 0 {
		c.SSH.TTL = DefaultSSHCertTTL
	}
	for what, p := range map[string]string{"key_file": c.SSH.KeyFile, "known_hosts": t.SSH.KnownHosts, "host_ca": t.SSH.HostCA} {
		if p != "" && !path.IsAbs(p) {
			d.errorf(n, "target %q: %s %q must be an absolute path", t.Name, what, p)
		}
	}
	if t.SSH.KnownHosts == "" && t.SSH.HostCA == "" {
		d.errorf(n, "target %q: give known_hosts or host_ca to verify the target's host key (there is no insecure mode)", t.Name)
	}
}
