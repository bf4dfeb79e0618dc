package policy

import (
	"fmt"
	"log/slog"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Classes are the command classes each protocol sorts commands into; rules
// allow, hold or deny by class. "unknown" exists for every protocol whose
// classifier can fail and is denied unless a rule names it.
var Classes = map[string][]string{
	ProtocolTCP: {"connect"},
	ProtocolPostgres: {"read", "write", "unbounded-write", "ddl", "drop", "copy", "copy-program",
		"server-file", "privilege", "set-role", "procedural", "transaction", "session", "unknown"},
	// SSH classes are policy/shellclass's: exec lines are read, write,
	// privilege or unknown; shell is a pty shell; file-read/file-write are
	// SFTP operations and legacy scp; forward is direct-tcpip.
	ProtocolSSH:  {"read", "write", "privilege", "shell", "file-read", "file-write", "forward", "unknown"},
	ProtocolHTTP: {"read", "write", "delete", "connect", "unknown"},
}

// Issuer is a trusted OIDC issuer.
type Issuer struct {
	URL      string
	Audience string
	// Claims every token of this issuer must carry with these values.
	Claims map[string]string
	Line   int
}

// TokenRequirement is what a workload's OIDC token must say.
type TokenRequirement struct {
	Issuer string
	// Subject must equal the token's sub ("" = any).
	Subject string
	// Claims must each equal the token's claim (or be among its values).
	Claims map[string]string
}

// Credentials locate the secret the daemon logs in upstream with. The
// secret itself is never held in the config.
type Credentials struct {
	User         string
	PasswordFile string
	PasswordEnv  string
	// Dynamic, when set, makes User an administrator that creates a
	// short-lived login role per session instead of logging in itself.
	Dynamic *DynamicRole
	// HTTP says how an http target's secret is sent (httpconfig.go).
	HTTP HTTPCredentials
	// SSH holds an ssh target's key_file, ssh_ca and ttl (sshconfig.go).
	SSH SSHCredentials
}

// DynamicRole is a per-session database role: created at session start
// with LOGIN, a random password and VALID UNTIL now+TTL, member of Role;
// dropped at session end; its session is ended when the TTL passes.
type DynamicRole struct {
	// Role is the group role whose privileges the session role gets.
	Role string
	// TTL is how long the session role is valid.
	TTL time.Duration
}

// LogValue keeps credentials out of logs: only where they come from shows.
func (c Credentials) LogValue() slog.Value {
	return slog.GroupValue(slog.String("user", c.User), slog.String("password", "[redacted]"))
}

// TLS modes for the daemon's connection to a target. There is no "prefer":
// a target configured for TLS never silently gets plaintext.
const (
	TLSDisable    = "disable"
	TLSRequire    = "require"     // encrypted, certificate not verified
	TLSVerifyFull = "verify-full" // encrypted, chain and name verified
)

// TLS configures the daemon's connection to a target.
type TLS struct {
	Mode string
	// CAFile holds PEM roots to verify with (default: the system's).
	CAFile string
	// ServerName is the name to verify (default: the target's host).
	ServerName string
	// Agent answers an agent's SSLRequest with TLS, with a certificate
	// for the target's hosts from the daemon's local CA (agent: true).
	// Otherwise the agent is told 'N' (plaintext on loopback).
	Agent bool
	// Passthrough splices an http target's TLS unopened (tls:
	// passthrough): SNI-level allow/deny only (httpconfig.go).
	Passthrough bool
}

func (d *decoder) tls(n *yaml.Node, t *TLS) {
	if n.Kind == yaml.ScalarNode && d.tlsScalar(n, t) {
		return
	}
	d.mapping(n, "tls", map[string]func(*yaml.Node){
		"mode":        func(v *yaml.Node) { d.str(v, "tls mode", &t.Mode) },
		"ca_file":     func(v *yaml.Node) { d.str(v, "ca_file", &t.CAFile) },
		"server_name": func(v *yaml.Node) { d.str(v, "server_name", &t.ServerName) },
		"agent": func(v *yaml.Node) {
			var b string
			d.str(v, "agent", &b)
			switch b {
			case "true":
				t.Agent = true
			case "false":
			default:
				d.errorf(v, "tls: agent must be true or false")
			}
		},
	})
	if t.Mode != "" && !slices.Contains([]string{TLSDisable, TLSRequire, TLSVerifyFull}, t.Mode) {
		d.errorf(n, "tls: mode must be disable, require or verify-full, got %q", t.Mode)
	}
	if t.CAFile != "" && !path.IsAbs(t.CAFile) {
		d.errorf(n, "tls: ca_file %q must be an absolute path", t.CAFile)
	}
}

// allLoopback reports whether every address is a loopback IP or localhost.
func allLoopback(addrs []string) bool {
	for _, a := range addrs {
		host := a
		if i := strings.LastIndexByte(a, ':'); i >= 0 {
			host = strings.Trim(a[:i], "[]")
		}
		if !isLoopbackHost(host) {
			return false
		}
	}
	return len(addrs) > 0
}

// Mask is a named masking rule.
type Mask struct {
	Name string
	// Detect is a value detector (email, card, ssn, phone, iban, aws-key,
	// jwt, private-key).
	Detect string
	// Columns are column patterns ("*.ssn", "users.email").
	Columns []string
	// Paths are JSON paths masked in HTTP bodies ("$.items[*].email").
	Paths []string
	// Mode is redact, partial (keep the last 4) or hash (keyed HMAC).
	Mode string
}

// Detectors and modes a mask may name.
var (
	Detectors  = []string{"email", "card", "ssn", "phone", "iban", "aws-key", "jwt", "private-key"}
	MaskModes  = []string{"redact", "partial", "hash"}
	ruleAction = []string{"allow", "approve", "deny"}
)

// Approver is someone who may decide approval requests.
type Approver struct {
	Name string
	// UID identifies a local approver on the API's unix socket (-1: none).
	UID         int64
	OIDCSubject string
	OIDCGroup   string
}

// Rule says what workloads may do on targets.
type Rule struct {
	ID        string
	Workloads []string // names, or "*"
	Targets   []string // names, or "*"
	Allow     []string
	Approve   []string
	Deny      []string
	Mask      []string
	Approvers []string
	// ApprovalsRequired is how many distinct approvers must approve.
	ApprovalsRequired int
	// Commands are glob patterns over shell command lines, checked
	// before classes (ssh targets; see DecideCommand).
	Commands *CommandPatterns
	// AsyncRecord lets allowed commands under this rule be forwarded before
	// their record is durable (record: async). Denials, approvals and
	// session starts are always durable first. Default: sync, "no record,
	// no forward".
	AsyncRecord bool
	// Requests refine an http rule by method and path (requests.go).
	Requests *RequestRules
	Line     int
}

// Issuer returns the issuer with the given URL.
func (c *Config) Issuer(u string) (*Issuer, bool) {
	for i := range c.OIDC {
		if c.OIDC[i].URL == u {
			return &c.OIDC[i], true
		}
	}
	return nil, false
}

func (c *Config) mask(name string) bool {
	return slices.ContainsFunc(c.Masks, func(m Mask) bool { return m.Name == name })
}

func (c *Config) approver(name string) bool {
	return slices.ContainsFunc(c.Approvers, func(a Approver) bool { return a.Name == name })
}

func (d *decoder) strOrList(n *yaml.Node, what string, dst *[]string) {
	if n.Kind == yaml.ScalarNode {
		var s string
		d.str(n, what, &s)
		*dst = append(*dst, s)
		return
	}
	d.strList(n, what, dst)
}

func (d *decoder) uids(n *yaml.Node, dst *[]uint32) {
	var raw []string
	d.strOrList(n, "uid", &raw)
	for _, r := range raw {
		u, err := strconv.ParseUint(r, 10, 32)
		if err != nil {
			d.errorf(n, "uid: %q is not a number", r)
			continue
		}
		*dst = append(*dst, uint32(u))
	}
}

func (d *decoder) strMap(n *yaml.Node, what string) map[string]string {
	if n.Kind != yaml.MappingNode {
		d.errorf(n, "%s must be a mapping", what)
		return nil
	}
	m := map[string]string{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], resolveAlias(n.Content[i+1])
		if _, dup := m[k.Value]; dup {
			d.errorf(k, "%s: duplicate key %q", what, k.Value)
		}
		var s string
		d.str(v, what+"."+k.Value, &s)
		m[k.Value] = s
	}
	return m
}

func (d *decoder) issuer(n *yaml.Node, cfg *Config) {
	is := Issuer{Line: n.Line}
	d.mapping(n, "oidc issuer", map[string]func(*yaml.Node){
		"issuer":   func(v *yaml.Node) { d.str(v, "issuer", &is.URL) },
		"audience": func(v *yaml.Node) { d.str(v, "audience", &is.Audience) },
		"claims":   func(v *yaml.Node) { is.Claims = d.strMap(v, "claims") },
	})
	if n.Kind != yaml.MappingNode {
		return
	}
	u, err := url.Parse(is.URL)
	switch {
	case is.URL == "" || err != nil || u.Host == "":
		d.errorf(n, "oidc: issuer %q must be an absolute URL", is.URL)
	case u.Scheme != "https" && !(u.Scheme == "http" && isLoopbackHost(u.Hostname())):
		d.errorf(n, "oidc: issuer %q must use https (http only on loopback)", is.URL)
	}
	if is.Audience == "" {
		d.errorf(n, "oidc: issuer %q needs an audience", is.URL)
	}
	if _, dup := cfg.Issuer(is.URL); dup {
		d.errorf(n, "oidc: duplicate issuer %q", is.URL)
	}
	cfg.OIDC = append(cfg.OIDC, is)
}

func isLoopbackHost(h string) bool {
	return h == "localhost" || strings.HasPrefix(h, "127.") || h == "::1"
}

func (d *decoder) tokenRequirement(n *yaml.Node) *TokenRequirement {
	t := &TokenRequirement{}
	d.mapping(n, "token", map[string]func(*yaml.Node){
		"issuer":  func(v *yaml.Node) { d.str(v, "token issuer", &t.Issuer) },
		"subject": func(v *yaml.Node) { d.str(v, "token subject", &t.Subject) },
		"claims":  func(v *yaml.Node) { t.Claims = d.strMap(v, "token claims") },
	})
	if t.Issuer == "" {
		d.errorf(n, "token: issuer is required")
	}
	if t.Subject == "" && len(t.Claims) == 0 {
		d.errorf(n, "token: give a subject or claims to match, or any token of the issuer would do")
	}
	return t
}

func (d *decoder) credentials(n *yaml.Node, c *Credentials) {
	d.mapping(n, "credentials", map[string]func(*yaml.Node){
		"user":          func(v *yaml.Node) { d.str(v, "user", &c.User) },
		"password_file": func(v *yaml.Node) { d.str(v, "password_file", &c.PasswordFile) },
		"password_env":  func(v *yaml.Node) { d.str(v, "password_env", &c.PasswordEnv) },
		"dynamic": func(v *yaml.Node) {
			dr := &DynamicRole{TTL: 15 * time.Minute}
			var ttl string
			d.mapping(v, "dynamic", map[string]func(*yaml.Node){
				"role": func(x *yaml.Node) { d.str(x, "role", &dr.Role) },
				"ttl":  func(x *yaml.Node) { d.str(x, "ttl", &ttl) },
			})
			if ttl != "" {
				t, err := time.ParseDuration(ttl)
				if err != nil || t < 10*time.Second || t > 24*time.Hour {
					d.errorf(v, "dynamic: ttl %q must be a duration from 10s to 24h", ttl)
				}
				dr.TTL = t
			}
			if !namePattern.MatchString(dr.Role) {
				d.errorf(v, "dynamic: role %q must match %s", dr.Role, namePattern)
			}
			c.Dynamic = dr
		},
		"ssh_ca": func(v *yaml.Node) { d.sshBool(v, "ssh_ca", &c.SSH.CA) },
		"ttl":    func(v *yaml.Node) { d.sshDuration(v, "ttl", &c.SSH.TTL) },
		"password": func(v *yaml.Node) {
			d.errorf(v, "credentials: inline passwords are not accepted; use password_file or password_env")
		},
		"header":    func(v *yaml.Node) { d.str(v, "header", &c.HTTP.Header) },
		"scheme":    func(v *yaml.Node) { d.str(v, "scheme", &c.HTTP.Scheme) },
		"cert_file": func(v *yaml.Node) { d.str(v, "cert_file", &c.HTTP.CertFile) },
		"key_file":  func(v *yaml.Node) { d.str(v, "key_file", &c.HTTP.KeyFile) },
	})
	if c.PasswordFile != "" && !path.IsAbs(c.PasswordFile) {
		d.errorf(n, "credentials: password_file %q must be an absolute path", c.PasswordFile)
	}
	if c.PasswordFile != "" && c.PasswordEnv != "" {
		d.errorf(n, "credentials: give password_file or password_env, not both")
	}
}

func (d *decoder) mask(n *yaml.Node, cfg *Config) {
	m := Mask{}
	d.mapping(n, "mask", map[string]func(*yaml.Node){
		"name":    func(v *yaml.Node) { d.str(v, "mask name", &m.Name) },
		"detect":  func(v *yaml.Node) { d.str(v, "detect", &m.Detect) },
		"columns": func(v *yaml.Node) { d.strList(v, "columns", &m.Columns) },
		"paths":   func(v *yaml.Node) { d.strList(v, "paths", &m.Paths) },
		"mode":    func(v *yaml.Node) { d.str(v, "mode", &m.Mode) },
	})
	if n.Kind != yaml.MappingNode {
		return
	}
	if !namePattern.MatchString(m.Name) {
		d.errorf(n, "mask: name %q must match %s", m.Name, namePattern)
	} else if cfg.mask(m.Name) {
		d.errorf(n, "mask: duplicate name %q", m.Name)
	}
	if m.Detect == "" && len(m.Columns) == 0 && len(m.Paths) == 0 {
		d.errorf(n, "mask %q: give detect, columns or paths", m.Name)
	}
	for _, p := range m.Paths {
		if _, err := ParseJSONPath(p); err != nil {
			d.errorf(n, "mask %q: paths: %v", m.Name, err)
		}
	}
	if m.Detect != "" && !slices.Contains(Detectors, m.Detect) {
		d.errorf(n, "mask %q: unknown detector %q (one of %s)", m.Name, m.Detect, strings.Join(Detectors, ", "))
	}
	if m.Mode == "" {
		m.Mode = "redact"
	}
	if !slices.Contains(MaskModes, m.Mode) {
		d.errorf(n, "mask %q: unknown mode %q (one of %s)", m.Name, m.Mode, strings.Join(MaskModes, ", "))
	}
	cfg.Masks = append(cfg.Masks, m)
}

func (d *decoder) approver(n *yaml.Node, cfg *Config) {
	a := Approver{UID: -1}
	var uid string
	d.mapping(n, "approver", map[string]func(*yaml.Node){
		"name":         func(v *yaml.Node) { d.str(v, "approver name", &a.Name) },
		"uid":          func(v *yaml.Node) { d.str(v, "uid", &uid) },
		"oidc_subject": func(v *yaml.Node) { d.str(v, "oidc_subject", &a.OIDCSubject) },
		"oidc_group":   func(v *yaml.Node) { d.str(v, "oidc_group", &a.OIDCGroup) },
	})
	if n.Kind != yaml.MappingNode {
		return
	}
	if uid != "" {
		u, err := strconv.ParseUint(uid, 10, 32)
		if err != nil {
			d.errorf(n, "approver %q: uid %q is not a number", a.Name, uid)
		}
		a.UID = int64(u)
	}
	if !namePattern.MatchString(a.Name) {
		d.errorf(n, "approver: name %q must match %s", a.Name, namePattern)
	} else if cfg.approver(a.Name) {
		d.errorf(n, "approver: duplicate name %q", a.Name)
	}
	if a.UID < 0 && a.OIDCSubject == "" && a.OIDCGroup == "" {
		d.errorf(n, "approver %q: give uid, oidc_subject or oidc_group", a.Name)
	}
	cfg.Approvers = append(cfg.Approvers, a)
}

func (d *decoder) rule(n *yaml.Node, cfg *Config) {
	r := Rule{Line: n.Line, ApprovalsRequired: -1}
	var required string
	nodes := map[string]*yaml.Node{}
	field := func(name string, dst *[]string) func(*yaml.Node) {
		return func(v *yaml.Node) { nodes[name] = v; d.strOrList(v, name, dst) }
	}
	d.mapping(n, "rule", map[string]func(*yaml.Node){
		"id":                 func(v *yaml.Node) { d.str(v, "rule id", &r.ID) },
		"workloads":          field("workloads", &r.Workloads),
		"targets":            field("targets", &r.Targets),
		"allow":              field("allow", &r.Allow),
		"approve":            field("approve", &r.Approve),
		"deny":               field("deny", &r.Deny),
		"mask":               field("mask", &r.Mask),
		"approvers":          field("approvers", &r.Approvers),
		"commands":           func(v *yaml.Node) { nodes["commands"] = v; r.Commands = d.commands(v) },
		"approvals_required": func(v *yaml.Node) { nodes["approvals_required"] = v; d.str(v, "approvals_required", &required) },
		"requests":           func(v *yaml.Node) { nodes["requests"] = v; r.Requests = d.requests(v) },
		"record": func(v *yaml.Node) {
			var mode string
			d.str(v, "record", &mode)
			switch mode {
			case "sync":
			case "async":
				r.AsyncRecord = true
			default:
				d.errorf(v, "rule: record must be sync or async, got %q", mode)
			}
		},
	})
	if n.Kind != yaml.MappingNode {
		return
	}
	at := func(name string) *yaml.Node { return orNode(nodes[name], n) }
	if !namePattern.MatchString(r.ID) {
		d.errorf(n, "rule: id %q must match %s", r.ID, namePattern)
	} else if slices.ContainsFunc(cfg.Rules, func(o Rule) bool { return o.ID == r.ID }) {
		d.errorf(n, "rule: duplicate id %q", r.ID)
	}
	if len(r.Workloads) == 0 || len(r.Targets) == 0 {
		d.errorf(n, "rule %q: workloads and targets are required (\"*\" for all)", r.ID)
	}
	for _, w := range r.Workloads {
		if _, ok := cfg.WorkloadByName(w); !ok && w != "*" {
			d.errorf(at("workloads"), "rule %q: unknown workload %q", r.ID, w)
		}
	}
	protocols := map[string]bool{}
	for _, t := range r.Targets {
		if t == "*" {
			for _, tt := range cfg.Targets {
				protocols[tt.Protocol] = true
			}
			continue
		}
		tt, ok := cfg.TargetByName(t)
		if !ok {
			d.errorf(at("targets"), "rule %q: unknown target %q", r.ID, t)
			continue
		}
		protocols[tt.Protocol] = true
	}
	if r.Requests != nil && !protocols[ProtocolHTTP] {
		d.errorf(at("requests"), "rule %q: requests: patterns need an http target", r.ID)
	}
	seen := map[string]string{}
	for i, list := range [][]string{r.Allow, r.Approve, r.Deny} {
		action := ruleAction[i]
		for _, class := range list {
			if prev, dup := seen[class]; dup {
				d.errorf(at(action), "rule %q: class %q is both %s and %s", r.ID, class, prev, action)
			}
			seen[class] = action
			ok := class == "*"
			for p := range protocols {
				ok = ok || slices.Contains(Classes[p], class)
			}
			if !ok {
				d.errorf(at(action), "rule %q: unknown command class %q for %s targets", r.ID, class, protocolList(protocols))
			}
		}
	}
	commandPatternsValid(d, at("commands"), &r, protocols)
	for _, m := range r.Mask {
		if !cfg.mask(m) {
			d.errorf(at("mask"), "rule %q: unknown mask %q", r.ID, m)
		}
	}
	for _, a := range r.Approvers {
		if !cfg.approver(a) {
			d.errorf(at("approvers"), "rule %q: unknown approver %q", r.ID, a)
		}
	}
	if required != "" {
		v, err := strconv.Atoi(required)
		if err != nil || v < 1 {
			d.errorf(at("approvals_required"), "rule %q: approvals_required must be a number ≥ 1", r.ID)
		}
		r.ApprovalsRequired = v
	}
	if len(r.Approve) > 0 || (r.Commands != nil && len(r.Commands.Approve) > 0) {
		if r.ApprovalsRequired < 0 {
			r.ApprovalsRequired = 1
		}
		if len(r.Approvers) > 0 && r.ApprovalsRequired > len(r.Approvers) && !approverGroups(cfg, r.Approvers) {
			d.errorf(at("approvals_required"), "rule %q: %d approvals required but only %d approvers named", r.ID, r.ApprovalsRequired, len(r.Approvers))
		}
	} else if r.ApprovalsRequired < 0 {
		r.ApprovalsRequired = 0
	}
	cfg.Rules = append(cfg.Rules, r)
}

// approverGroups reports whether any named approver is a group (which may
// hold several people).
func approverGroups(cfg *Config, names []string) bool {
	for _, a := range cfg.Approvers {
		if slices.Contains(names, a.Name) && a.OIDCGroup != "" {
			return true
		}
	}
	return false
}

func protocolList(ps map[string]bool) string {
	var out []string
	for p := range ps {
		out = append(out, p)
	}
	slices.Sort(out)
	if len(out) == 0 {
		return "no"
	}
	return strings.Join(out, "/")
}

// Action is what a decision says to do with a command.
type Action string

// Actions, strictest last.
const (
	Allow   Action = "allow"
	Approve Action = "approve"
	Deny    Action = "deny"
)

func strictness(a Action) int { return slices.Index([]Action{Allow, Approve, Deny}, a) }

// Decision is the outcome of policy for one command (or connection).
type Decision struct {
	Action Action
	// RuleID is the rule that decided; empty for the default deny.
	RuleID string
	// Class is the command class that determined the action.
	Class string
	// Pattern is the command pattern that decided (DecideCommand), empty
	// when classes did.
	Pattern string
	// Reason says why, in words fit for the client and the record.
	Reason            string
	Masks             []string
	Approvers         []string
	ApprovalsRequired int
	// AsyncRecord: an allowed command may be forwarded before its record
	// is durable.
	AsyncRecord bool
}

// Decide returns the decision for a command of the given classes by subject.
// The first rule naming the subject's workload and target decides; within
// it, each class is allowed, held for approval or denied, and the strictest
// wins. A class the rule does not list is denied, and so is everything when
// no rule matches, when the command has no class, or when the workload needs
// an OIDC token the subject has not presented.
func (c *Config) Decide(s *Subject, classes []string) Decision {
	r, d := c.rule(s)
	if r == nil {
		return d
	}
	if len(classes) == 0 {
		d.Action, d.Reason = Deny, fmt.Sprintf("command has no class; rule %s denies it", r.ID)
		return d
	}
	for _, class := range classes {
		a := r.action(class)
		if strictness(a) > strictness(d.Action) || d.Class == "" {
			d.Action, d.Class = a, class
		}
	}
	switch d.Action {
	case Deny:
		d.Reason = fmt.Sprintf("%s denied by rule %s", d.Class, r.ID)
	case Approve:
		d.Reason = fmt.Sprintf("%s needs approval under rule %s", d.Class, r.ID)
	default:
		d.Reason = "allowed by rule " + r.ID // every statement passes here: no Sprintf
	}
	return d
}

// rule finds the rule that governs subject. With none (or a subject that
// may not use any rule) it returns nil and the deny decision saying why;
// otherwise an allow decision carrying the rule's settings.
func (c *Config) rule(s *Subject) (*Rule, Decision) {
	if s == nil || s.Target == nil || s.Workload == "" {
		return nil, Decision{Action: Deny, Reason: "unidentified subject"}
	}
	if w, ok := c.WorkloadByName(s.Workload); !ok {
		return nil, Decision{Action: Deny, Reason: fmt.Sprintf("workload %q is no longer configured", s.Workload)}
	} else if w.Token != nil && s.Claims == nil {
		return nil, Decision{Action: Deny, Reason: fmt.Sprintf("workload %q must present an OIDC token from %s", w.Name, w.Token.Issuer)}
	}
	if _, ok := c.TargetByName(s.Target.Name); !ok {
		return nil, Decision{Action: Deny, Reason: fmt.Sprintf("target %q is no longer configured", s.Target.Name)}
	}
	for i := range c.Rules {
		r := &c.Rules[i]
		if matchName(r.Workloads, s.Workload) && matchName(r.Targets, s.Target.Name) {
			return r, Decision{Action: Allow, RuleID: r.ID, Masks: r.Mask, Approvers: r.Approvers,
				ApprovalsRequired: r.ApprovalsRequired, AsyncRecord: r.AsyncRecord}
		}
	}
	return nil, Decision{Action: Deny, Reason: fmt.Sprintf("no rule lets workload %s use target %s (default deny)", s.Workload, s.Target.Name)}
}

// Admit decides whether subject may open a session on its target at all:
// a rule must name the workload and the target, and a workload that needs
// an OIDC token must have presented one. Commands are decided later, one by
// one, with Decide.
func (c *Config) Admit(s *Subject) Decision {
	r, d := c.rule(s)
	if r != nil {
		d.Reason = fmt.Sprintf("rule %s covers workload %s on target %s", r.ID, s.Workload, s.Target.Name)
	}
	return d
}

func (r *Rule) action(class string) Action {
	switch {
	case slices.Contains(r.Deny, class):
		return Deny
	case slices.Contains(r.Approve, class):
		return Approve
	case slices.Contains(r.Allow, class):
		return Allow
	case slices.Contains(r.Deny, "*"):
		return Deny
	case slices.Contains(r.Approve, "*"):
		return Approve
	case slices.Contains(r.Allow, "*") && class != "unknown":
		return Allow
	}
	return Deny
}

func matchName(list []string, name string) bool {
	return slices.Contains(list, "*") || slices.Contains(list, name)
}
