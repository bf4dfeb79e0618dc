package policy

import (
	"net/http"
	"path"
	"regexp"
	"slices"
	"time"

	"go.yaml.in/yaml/v3"
)

// Placeholder is the value `loopgate run` gives the variables a target
// names in placeholders:, and the only credential an agent may send to an
// http target: the daemon strips it and sends the real one.
const Placeholder = "loopgate-placeholder"

// Ways an http target's secret is sent (credentials: {scheme: ...}).
const (
	SchemeBearer = "bearer" // Header: Bearer <secret>
	SchemeBasic  = "basic"  // Header: Basic base64(user:secret) (git over HTTPS)
	SchemeRaw    = "raw"    // Header: <secret> (x-api-key)
)

// HTTPCredentials say how the daemon authenticates to an http target: the
// secret (Credentials.PasswordFile or PasswordEnv) goes in Header per
// Scheme, and/or the daemon presents a client certificate (mTLS).
type HTTPCredentials struct {
	// Header carries the secret; default Authorization.
	Header string
	// Scheme is SchemeBearer (default), SchemeBasic or SchemeRaw.
	Scheme string
	// CertFile and KeyFile are a PEM client certificate and key.
	CertFile string
	KeyFile  string
}

// Secret reports whether the credentials name a secret to inject.
func (c Credentials) Secret() bool { return c.PasswordFile != "" || c.PasswordEnv != "" }

// tlsScalar reads the scalar form of an http target's tls: passthrough
// (splice TLS unopened) or terminate (the default: loopgate's CA toward
// the agent, verified TLS upstream). It reports whether n was one.
func (d *decoder) tlsScalar(n *yaml.Node, t *TLS) bool {
	switch n.Value {
	case "passthrough":
		t.Passthrough = true
	case "terminate":
	default:
		d.errorf(n, "tls: want a mapping, passthrough or terminate, got %q", n.Value)
	}
	return true
}

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,127}$`)

// httpTarget checks the fields only http targets may have.
func (d *decoder) httpTarget(n *yaml.Node, t *Target) {
	c := &t.Credentials.HTTP
	if t.Protocol != ProtocolHTTP {
		if t.TLS.Passthrough {
			d.errorf(n, "target %q: tls: passthrough is for http targets", t.Name)
		}
		if len(t.Placeholders) > 0 {
			d.errorf(n, "target %q: placeholders are for http targets", t.Name)
		}
		if *c != (HTTPCredentials{}) {
			d.errorf(n, "target %q: credentials header, scheme, cert_file and key_file are for http targets", t.Name)
		}
		return
	}
	if t.TLS.Mode == TLSRequire {
		d.errorf(n, "target %q: http targets always verify the target's certificate (mode require is not offered)", t.Name)
	}
	// Upstream TLS follows the agent: https is verified (system roots or
	// ca_file), plain http stays plain.
	t.TLS.Mode = TLSVerifyFull
	if t.TLS.Agent {
		d.errorf(n, "target %q: tls: agent is for postgres targets; http targets terminate TLS unless tls: passthrough", t.Name)
	}
	for _, p := range t.Placeholders {
		if !envName.MatchString(p) {
			d.errorf(n, "target %q: placeholder %q is not an environment variable name", t.Name, p)
		}
	}
	if t.Credentials.Dynamic != nil {
		d.errorf(n, "target %q: dynamic credentials are for postgres targets", t.Name)
	}
	if c.Scheme == "" {
		c.Scheme = SchemeBearer
	}
	if !slices.Contains([]string{SchemeBearer, SchemeBasic, SchemeRaw}, c.Scheme) {
		d.errorf(n, "target %q: credentials scheme must be bearer, basic or raw, got %q", t.Name, c.Scheme)
	}
	if c.Header == "" {
		if c.Scheme == SchemeRaw && t.Credentials.Secret() {
			d.errorf(n, "target %q: credentials scheme raw needs a header (like x-api-key)", t.Name)
		}
		c.Header = "Authorization"
	}
	c.Header = http.CanonicalHeaderKey(c.Header)
	if c.Scheme == SchemeBasic && t.Credentials.User == "" {
		t.Credentials.User = "x-access-token"
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		d.errorf(n, "target %q: credentials cert_file and key_file go together", t.Name)
	}
	for _, f := range []string{c.CertFile, c.KeyFile} {
		if f != "" && !path.IsAbs(f) {
			d.errorf(n, "target %q: credentials file %q must be an absolute path", t.Name, f)
		}
	}
	if t.TLS.Passthrough && (t.Credentials.Secret() || c.CertFile != "") {
		d.errorf(n, "target %q: tls: passthrough cannot inject credentials (nothing is opened)", t.Name)
	}
}

// httpWait reads approvals: {http_wait: 30s}.
func (d *decoder) httpWait(n *yaml.Node, a *ApprovalSettings) {
	var v string
	d.str(n, "http_wait", &v)
	t, err := time.ParseDuration(v)
	if err != nil || t < 100*time.Millisecond || t > 10*time.Minute {
		d.errorf(n, "approvals: http_wait %q must be a duration from 100ms to 10m", v)
		return
	}
	a.HTTPWait = t
}
