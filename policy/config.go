package policy

import (
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// DefaultConfigPath is where every subcommand looks for its config.
const DefaultConfigPath = "/etc/loopgate/loopgate.yaml"

// Defaults for keys a config may leave out.
const (
	DefaultListen       = "127.0.0.1:15001"
	DefaultStore        = "/var/lib/loopgate/loopgate.db"
	DefaultBPFFSDir     = "/sys/fs/bpf/loopgate"
	DefaultDaemonCgroup = "loopgate.daemon"
	DefaultAPISocket    = "/run/loopgate/api.sock"
)

// Store sync levels (store: {sync: ...}). Under both, a record the
// daemon waits for is in the store's write-ahead log before the traffic
// it describes is forwarded, so it survives the daemon's death (kill -9).
const (
	// StoreSyncNormal fsyncs the log every few milliseconds for all
	// sessions at once, and before going on for session starts, denials
	// and approvals: a power loss or OS crash can take the last few
	// milliseconds of allowed statements' records.
	StoreSyncNormal = "normal"
	// StoreSyncFull fsyncs every write before going on: nothing recorded
	// is lost to a power loss either, at an fsync per statement.
	StoreSyncFull = "full"
)

// Protocols a target may name. Each has a session handler in l7.
const (
	ProtocolTCP      = "tcp"
	ProtocolPostgres = "postgres"
	ProtocolSSH      = "ssh"
	ProtocolHTTP     = "http"
)

// knownProtocols are the protocols a target may name. A protocol whose
// handler this build lacks is accepted here and refused per session (fail
// closed, recorded), so one config serves a fleet of mixed versions.
var knownProtocols = []string{ProtocolTCP, ProtocolPostgres, ProtocolSSH, ProtocolHTTP}

// Config is a parsed, validated loopgate.yaml. It is immutable after Load and
// safe for concurrent use.
type Config struct {
	// Path is the file the config was read from.
	Path string
	// Listen is the IPv4 loopback address redirected connections land on.
	// The daemon also listens on [::1] at the same port when IPv6 is up.
	Listen netip.AddrPort
	// Store is the SQLite database path.
	Store string
	// StoreSync is when the store's writes reach the disk (store: {sync:}):
	// StoreSyncNormal (the default) or StoreSyncFull.
	StoreSync string
	// BPFFSDir is where programs' links and maps are pinned.
	BPFFSDir string
	// DaemonCgroup is the daemon's own cgroup, relative to the cgroup2 mount.
	DaemonCgroup string
	// AuditKey is the ed25519 key that signs the store's checkpoints
	// (default: audit.key beside the store).
	AuditKey  string
	OIDC      []Issuer
	Targets   []Target
	Workloads []Workload
	Masks     []Mask
	Approvers []Approver
	// Rules are tried in order; the first that names the subject's
	// workload and target decides. No match: deny.
	Rules []Rule
	// Approvals configures the approval broker.
	Approvals ApprovalSettings
	// API configures the local HTTP API.
	API APISettings
	// Limits are the daemon's budgets (limits.go).
	Limits Limits
	// Retention is how long the store keeps sessions (retention.go).
	Retention Retention
}

// ApprovalSettings bound how commands wait for approvers.
type ApprovalSettings struct {
	// Timeout is how long a command waits before it is denied.
	Timeout time.Duration
	// MaxPending bounds waiting requests.
	MaxPending int
	// Webhook, if set, receives new and decided requests (JSON with a
	// Slack-compatible "text").
	Webhook string
	// HTTPWait is how long an HTTP request held for approval waits before
	// it is answered 403 naming the approval (which stays pending for the
	// agent's retry); default 30s.
	HTTPWait time.Duration
}

// APISettings say where the local API listens.
type APISettings struct {
	// Socket is the unix socket; approvers there are identified by uid.
	Socket string
	// Group (a name or a gid) may connect to Socket, which is mode 0660
	// and owned by root; "" leaves it to root alone.
	Group string
	// Listen is an optional loopback TCP address where approvers present
	// an OIDC bearer token for Audience.
	Listen   string
	Audience string
}

// Target is a protected destination.
type Target struct {
	Name     string
	Protocol string
	// Addresses are host:port strings; hosts may be names, resolved (A and
	// AAAA) by intercept and refreshed.
	Addresses []string
	// Credentials are what the daemon logs in upstream with.
	Credentials Credentials
	// TLS is how the daemon secures its connection to the target.
	TLS TLS
	// Placeholders name environment variables `loopgate run` sets to
	// Placeholder for the agent (http targets), so SDKs that insist on a
	// key start; the daemon injects the real credential (httpconfig.go).
	Placeholders []string
	// SSH is how an ssh target's host key is verified (sshconfig.go).
	SSH SSHTarget
	// ID is a stable 32-bit identifier derived from Name, carried through
	// the kernel's maps so a reload cannot misattribute a connection.
	ID   uint32
	Line int
}

// Workload is a named set of processes, matched by cgroup.
type Workload struct {
	Name string
	// Cgroup is the workload's cgroup path relative to the cgroup2 mount,
	// cleaned, without leading slash.
	Cgroup string
	// DefaultDeny refuses every outbound connection and datagram (TCP, UDP,
	// any other IP protocol, unix sockets where the kernel has the hooks)
	// that is neither to a target nor listed in Allow.
	DefaultDeny bool
	// Allow lists destinations a default-deny workload may reach
	// directly, as written; Allowed holds them parsed (see ParseAllow).
	Allow   []string
	Allowed []AllowEntry
	// UIDs, if set, further restrict the workload to these users.
	UIDs []uint32
	// Exes, if set, restrict it to these executables (path.Match globs).
	Exes []string
	// MaxSessions bounds the workload's sessions open at once; 0 means
	// DefaultWorkloadMaxSessions.
	MaxSessions int

	// Token, if set, is an OIDC token the workload must present.
	Token *TokenRequirement
	ID    uint32
	Line  int
}

// Target returns the target with the given id.
func (c *Config) Target(id uint32) (*Target, bool) {
	for i := range c.Targets {
		if c.Targets[i].ID == id {
			return &c.Targets[i], true
		}
	}
	return nil, false
}

// TargetByName returns the named target.
func (c *Config) TargetByName(name string) (*Target, bool) {
	for i := range c.Targets {
		if c.Targets[i].Name == name {
			return &c.Targets[i], true
		}
	}
	return nil, false
}

// Workload returns the workload with the given id.
func (c *Config) Workload(id uint32) (*Workload, bool) {
	for i := range c.Workloads {
		if c.Workloads[i].ID == id {
			return &c.Workloads[i], true
		}
	}
	return nil, false
}

// WorkloadByName returns the named workload.
func (c *Config) WorkloadByName(name string) (*Workload, bool) {
	for i := range c.Workloads {
		if c.Workloads[i].Name == name {
			return &c.Workloads[i], true
		}
	}
	return nil, false
}

// WorkloadByCgroup returns the workload whose cgroup is the deepest one
// containing cgroupPath (relative to the cgroup2 mount).
func (c *Config) WorkloadByCgroup(cgroupPath string) (*Workload, bool) {
	p := strings.Trim(path.Clean("/"+cgroupPath), "/")
	var best *Workload
	for i := range c.Workloads {
		w := &c.Workloads[i]
		if p == w.Cgroup || strings.HasPrefix(p, w.Cgroup+"/") {
			if best == nil || len(w.Cgroup) > len(best.Cgroup) {
				best = w
			}
		}
	}
	return best, best != nil
}

// ConfigError is one mistake in a config file, with its position.
type ConfigError struct {
	File string
	Line int
	Col  int
	Msg  string
}

func (e *ConfigError) Error() string {
	if e.Line == 0 {
		return fmt.Sprintf("%s: %s", e.File, e.Msg)
	}
	return fmt.Sprintf("%s:%d:%d: %s", e.File, e.Line, e.Col, e.Msg)
}

// maxConfigErrors bounds how many mistakes one Load reports.
const maxConfigErrors = 20

// maxConfigSize bounds the config file Load reads.
const maxConfigSize = 4 << 20

// Load reads and validates the config file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(path, data)
}

// Parse validates config text; name is used in error messages. It returns a
// config or an error (possibly several ConfigErrors joined), never both.
func Parse(name string, data []byte) (*Config, error) {
	if len(data) > maxConfigSize {
		return nil, &ConfigError{File: name, Msg: fmt.Sprintf("file larger than %d bytes", maxConfigSize)}
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, yamlError(name, err)
	}
	d := &decoder{file: name}
	cfg := &Config{Path: name}
	if len(doc.Content) == 0 {
		return nil, &ConfigError{File: name, Line: 1, Col: 1, Msg: "empty config"}
	}
	d.config(doc.Content[0], cfg)
	if len(d.errs) > 0 {
		return nil, errors.Join(d.errs...)
	}
	return cfg, nil
}

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

func yamlError(name string, err error) error {
	if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
		line, _ := strconv.Atoi(m[1])
		return &ConfigError{File: name, Line: line, Col: 1, Msg: m[2]}
	}
	return &ConfigError{File: name, Msg: strings.TrimPrefix(err.Error(), "yaml: ")}
}

// decoder walks a YAML node tree into a Config, collecting positioned errors.
type decoder struct {
	file string
	errs []error
}

func (d *decoder) errorf(n *yaml.Node, format string, args ...any) {
	if len(d.errs) >= maxConfigErrors {
		return
	}
	d.errs = append(d.errs, &ConfigError{File: d.file, Line: n.Line, Col: n.Column, Msg: fmt.Sprintf(format, args...)})
}

// mapping checks that n is a mapping with only the given keys, none twice,
// and calls each key's handler with its value.
func (d *decoder) mapping(n *yaml.Node, what string, fields map[string]func(*yaml.Node)) {
	n = resolveAlias(n)
	if n.Kind != yaml.MappingNode {
		d.errorf(n, "%s must be a mapping", what)
		return
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], resolveAlias(n.Content[i+1])
		if k.Kind != yaml.ScalarNode {
			d.errorf(k, "%s: keys must be plain strings", what)
			continue
		}
		if seen[k.Value] {
			d.errorf(k, "%s: duplicate key %q", what, k.Value)
			continue
		}
		seen[k.Value] = true
		f, ok := fields[k.Value]
		if !ok {
			d.errorf(k, "%s: unknown key %q (known: %s)", what, k.Value, keyList(fields))
			continue
		}
		f(v)
	}
}

func resolveAlias(n *yaml.Node) *yaml.Node {
	for depth := 0; n.Kind == yaml.AliasNode && n.Alias != nil && depth < 16; depth++ {
		n = n.Alias
	}
	return n
}

func keyList(fields map[string]func(*yaml.Node)) string {
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return strings.Join(keys, ", ")
}

func (d *decoder) str(n *yaml.Node, what string, dst *string) {
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		d.errorf(n, "%s must be a string", what)
		return
	}
	*dst = n.Value
}

func (d *decoder) strList(n *yaml.Node, what string, dst *[]string) {
	if n.Kind != yaml.SequenceNode {
		d.errorf(n, "%s must be a list of strings", what)
		return
	}
	for _, e := range n.Content {
		e = resolveAlias(e)
		var s string
		d.str(e, what+" entry", &s)
		if s != "" {
			*dst = append(*dst, s)
		}
	}
}

func (d *decoder) seq(n *yaml.Node, what string, each func(*yaml.Node)) {
	if n.Kind != yaml.SequenceNode {
		d.errorf(n, "%s must be a list", what)
		return
	}
	for _, e := range n.Content {
		each(resolveAlias(e))
	}
}

var namePattern = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9._-]{0,62}$`)

// store reads store: a path, or {path: ..., sync: normal|full}.
func (d *decoder) store(n *yaml.Node, cfg *Config) {
	if n.Kind == yaml.ScalarNode {
		d.str(n, "store", &cfg.Store)
		return
	}
	d.mapping(n, "store", map[string]func(*yaml.Node){
		"path": func(v *yaml.Node) { d.str(v, "store: path", &cfg.Store) },
		"sync": func(v *yaml.Node) {
			var sync string
			d.str(v, "store: sync", &sync)
			switch sync {
			case StoreSyncNormal, StoreSyncFull:
				cfg.StoreSync = sync
			default:
				d.errorf(v, "store: sync must be normal or full, got %q", sync)
			}
		},
	})
}

func (d *decoder) config(root *yaml.Node, cfg *Config) {
	listen := DefaultListen
	var listenNode *yaml.Node
	cfg.Store = DefaultStore
	cfg.StoreSync = StoreSyncNormal
	cfg.BPFFSDir = DefaultBPFFSDir
	cfg.DaemonCgroup = DefaultDaemonCgroup
	cfg.Approvals = ApprovalSettings{Timeout: 5 * time.Minute, MaxPending: 1000}
	cfg.API = APISettings{Socket: DefaultAPISocket, Audience: "loopgate-api"}
	cfg.Limits = Limits{MaxSessions: DefaultMaxSessions, MaxStatementBytes: DefaultMaxStatementBytes}
	var dcgNode *yaml.Node
	var ruleNodes []*yaml.Node
	d.mapping(root, "config", map[string]func(*yaml.Node){
		"audit_key":     func(n *yaml.Node) { d.str(n, "audit_key", &cfg.AuditKey) },
		"oidc":          func(n *yaml.Node) { d.seq(n, "oidc", func(e *yaml.Node) { d.issuer(e, cfg) }) },
		"masks":         func(n *yaml.Node) { d.seq(n, "masks", func(e *yaml.Node) { d.mask(e, cfg) }) },
		"approvers":     func(n *yaml.Node) { d.seq(n, "approvers", func(e *yaml.Node) { d.approver(e, cfg) }) },
		"rules":         func(n *yaml.Node) { d.seq(n, "rules", func(e *yaml.Node) { ruleNodes = append(ruleNodes, e) }) },
		"approvals":     func(n *yaml.Node) { d.approvals(n, &cfg.Approvals) },
		"api":           func(n *yaml.Node) { d.api(n, &cfg.API) },
		"limits":        func(n *yaml.Node) { d.limits(n, &cfg.Limits) },
		"retention":     func(n *yaml.Node) { d.retention(n, &cfg.Retention) },
		"listen":        func(n *yaml.Node) { listenNode = n; d.str(n, "listen", &listen) },
		"store":         func(n *yaml.Node) { d.store(n, cfg) },
		"bpffs":         func(n *yaml.Node) { d.str(n, "bpffs", &cfg.BPFFSDir) },
		"daemon_cgroup": func(n *yaml.Node) { dcgNode = n; d.str(n, "daemon_cgroup", &cfg.DaemonCgroup) },
		"targets":       func(n *yaml.Node) { d.seq(n, "targets", func(e *yaml.Node) { d.target(e, cfg) }) },
		"workloads":     func(n *yaml.Node) { d.seq(n, "workloads", func(e *yaml.Node) { d.workload(e, cfg) }) },
	})
	if root.Kind != yaml.MappingNode {
		return
	}
	// Rules and token requirements refer to other sections, which may come
	// later in the file: check them once everything is read.
	for _, w := range cfg.Workloads {
		if w.Token != nil {
			if _, ok := cfg.Issuer(w.Token.Issuer); !ok {
				d.errorf(root, "workload %q: token issuer %q is not in oidc:", w.Name, w.Token.Issuer)
			}
		}
	}
	for _, n := range ruleNodes {
		d.rule(n, cfg)
	}
	if cfg.AuditKey == "" {
		cfg.AuditKey = path.Join(path.Dir(cfg.Store), "audit.key")
	}
	ap, err := netip.ParseAddrPort(listen)
	switch {
	case err != nil:
		d.errorf(orNode(listenNode, root), "listen: want ip:port, got %q", listen)
	case !ap.Addr().Is4() || !ap.Addr().IsLoopback():
		d.errorf(orNode(listenNode, root), "listen: must be an IPv4 loopback address (127.0.0.0/8), got %s", ap.Addr())
	case ap.Port() == 0:
		d.errorf(orNode(listenNode, root), "listen: port must not be 0")
	}
	cfg.Listen = ap
	if cfg.Store == "" {
		d.errorf(root, "store: must not be empty")
	}
	if !path.IsAbs(cfg.BPFFSDir) {
		d.errorf(root, "bpffs: must be an absolute path, got %q", cfg.BPFFSDir)
	}
	if c, ok := cleanCgroup(cfg.DaemonCgroup); !ok {
		d.errorf(orNode(dcgNode, root), "daemon_cgroup: %q is not a cgroup path below the cgroup2 mount", cfg.DaemonCgroup)
	} else {
		cfg.DaemonCgroup = c
		if w, ok := cfg.WorkloadByCgroup(c); ok {
			d.errorf(orNode(dcgNode, root), "daemon_cgroup: %q lies inside workload %q: the daemon's own dials would be redirected", c, w.Name)
		}
	}
}

func orNode(n, fallback *yaml.Node) *yaml.Node {
	if n != nil {
		return n
	}
	return fallback
}

func (d *decoder) target(n *yaml.Node, cfg *Config) {
	t := Target{Line: n.Line}
	var addr string
	var protoNode *yaml.Node
	d.mapping(n, "target", map[string]func(*yaml.Node){
		"name":         func(v *yaml.Node) { d.str(v, "target name", &t.Name) },
		"protocol":     func(v *yaml.Node) { protoNode = v; d.str(v, "protocol", &t.Protocol) },
		"address":      func(v *yaml.Node) { d.str(v, "address", &addr) },
		"addresses":    func(v *yaml.Node) { d.strList(v, "addresses", &t.Addresses) },
		"credentials":  func(v *yaml.Node) { d.credentials(v, &t.Credentials) },
		"tls":          func(v *yaml.Node) { d.tls(v, &t.TLS) },
		"placeholders": func(v *yaml.Node) { d.strList(v, "placeholders", &t.Placeholders) },
		"known_hosts":  func(v *yaml.Node) { d.str(v, "known_hosts", &t.SSH.KnownHosts) },
		"host_ca":      func(v *yaml.Node) { d.str(v, "host_ca", &t.SSH.HostCA) },
	})
	if n.Kind != yaml.MappingNode {
		return
	}
	if addr != "" {
		t.Addresses = append([]string{addr}, t.Addresses...)
	}
	if !namePattern.MatchString(t.Name) {
		d.errorf(n, "target: name %q must match %s", t.Name, namePattern)
	}
	if _, dup := cfg.TargetByName(t.Name); dup && t.Name != "" {
		d.errorf(n, "target: duplicate name %q", t.Name)
	}
	switch {
	case t.Protocol == "":
		d.errorf(n, "target %q: protocol is required (one of %s)", t.Name, strings.Join(knownProtocols, ", "))
	case !slices.Contains(knownProtocols, t.Protocol):
		d.errorf(protoNode, "target %q: unknown protocol %q (one of %s)", t.Name, t.Protocol, strings.Join(knownProtocols, ", "))
	}
	if len(t.Addresses) == 0 {
		d.errorf(n, "target %q: address or addresses is required", t.Name)
	}
	for _, a := range t.Addresses {
		if err := checkHostPort(a, true); err != nil {
			d.errorf(n, "target %q: address %q: %v", t.Name, a, err)
		}
		for _, o := range cfg.Targets {
			if slices.Contains(o.Addresses, a) {
				d.errorf(n, "target %q: address %s is already target %q's", t.Name, a, o.Name)
			}
		}
	}
	if t.TLS.Mode == "" {
		// Default: verify the target's certificate, except for targets on
		// this host (loopback), where the hop never leaves the machine.
		t.TLS.Mode = TLSVerifyFull
		if allLoopback(t.Addresses) {
			t.TLS.Mode = TLSDisable
		}
	}
	d.sshTarget(n, &t) // before httpTarget: it takes key_file for ssh
	d.httpTarget(n, &t)
	t.ID = stableID("target/" + t.Name)
	for _, o := range cfg.Targets {
		if o.ID == t.ID && o.Name != t.Name {
			d.errorf(n, "target %q: name hashes like %q; rename one", t.Name, o.Name)
		}
	}
	cfg.Targets = append(cfg.Targets, t)
}

func (d *decoder) workload(n *yaml.Node, cfg *Config) {
	w := Workload{Line: n.Line}
	def := "allow"
	var defNode, cgNode *yaml.Node
	d.mapping(n, "workload", map[string]func(*yaml.Node){
		"name":    func(v *yaml.Node) { d.str(v, "workload name", &w.Name) },
		"cgroup":  func(v *yaml.Node) { cgNode = v; d.str(v, "cgroup", &w.Cgroup) },
		"default": func(v *yaml.Node) { defNode = v; d.str(v, "default", &def) },
		"allow":   func(v *yaml.Node) { d.strList(v, "allow", &w.Allow) },
		"uid":     func(v *yaml.Node) { d.uids(v, &w.UIDs) },
		"exe":     func(v *yaml.Node) { d.strOrList(v, "exe", &w.Exes) },
		"token":   func(v *yaml.Node) { w.Token = d.tokenRequirement(v) },
		"max_sessions": func(v *yaml.Node) {
			d.count(v, "workload max_sessions", 1, 1<<20, &w.MaxSessions)
		},
	})
	if n.Kind != yaml.MappingNode {
		return
	}
	if !namePattern.MatchString(w.Name) {
		d.errorf(n, "workload: name %q must match %s", w.Name, namePattern)
	}
	if _, dup := cfg.WorkloadByName(w.Name); dup && w.Name != "" {
		d.errorf(n, "workload: duplicate name %q", w.Name)
	}
	switch def {
	case "allow":
	case "deny":
		w.DefaultDeny = true
	default:
		d.errorf(orNode(defNode, n), "workload %q: default must be allow or deny, got %q", w.Name, def)
	}
	if c, ok := cleanCgroup(w.Cgroup); !ok || w.Cgroup == "" {
		d.errorf(orNode(cgNode, n), "workload %q: cgroup %q must be a path below the cgroup2 mount (like loopgate/%s)", w.Name, w.Cgroup, w.Name)
	} else {
		w.Cgroup = c
		for _, o := range cfg.Workloads {
			if o.Cgroup == c {
				d.errorf(orNode(cgNode, n), "workload %q: cgroup %q is already workload %q's", w.Name, c, o.Name)
			}
		}
	}
	for _, a := range w.Allow {
		e, err := ParseAllow(a)
		if err != nil {
			d.errorf(n, "workload %q: allow %q: %v", w.Name, a, err)
		}
		w.Allowed = append(w.Allowed, e)
	}
	w.ID = stableID("workload/" + w.Name)
	cfg.Workloads = append(cfg.Workloads, w)
}

// cleanCgroup normalises a cgroup path relative to the cgroup2 mount. It
// refuses the root and any path that climbs out with "..".
func cleanCgroup(p string) (string, bool) {
	if strings.ContainsRune(p, 0) {
		return "", false
	}
	for _, part := range strings.Split(p, "/") {
		if part == ".." {
			return "", false
		}
	}
	c := strings.Trim(path.Clean("/"+p), "/")
	return c, c != ""
}

// checkHostPort validates "host:port" (or, when portOptional, also a bare
// host or IP).
func checkHostPort(s string, needPort bool) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		if needPort {
			return errors.New("want host:port")
		}
		host, port = strings.Trim(s, "[]"), ""
	}
	if host == "" {
		return errors.New("empty host")
	}
	if _, err := netip.ParseAddr(host); err != nil && !hostnamePattern.MatchString(host) {
		return fmt.Errorf("%q is neither an IP address nor a host name", host)
	}
	if port != "" {
		n, err := strconv.ParseUint(port, 10, 16)
		if err != nil || n == 0 {
			return fmt.Errorf("bad port %q", port)
		}
	}
	return nil
}

var hostnamePattern = regexp.MustCompile(`^[a-zA-Z0-9]([a-zA-Z0-9.-]{0,251}[a-zA-Z0-9])?$`)

// stableID hashes a name to the 32-bit id the kernel maps carry. 0xffffffff
// is reserved for "no workload".
func stableID(s string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(s))
	id := h.Sum32()
	if id == 0xffffffff {
		id--
	}
	return id
}

func (d *decoder) approvals(n *yaml.Node, a *ApprovalSettings) {
	var timeout, max string
	d.mapping(n, "approvals", map[string]func(*yaml.Node){
		"timeout":     func(v *yaml.Node) { d.str(v, "timeout", &timeout) },
		"max_pending": func(v *yaml.Node) { d.str(v, "max_pending", &max) },
		"webhook":     func(v *yaml.Node) { d.str(v, "webhook", &a.Webhook) },
		"http_wait":   func(v *yaml.Node) { d.httpWait(v, a) },
	})
	if a.Webhook != "" {
		if u, err := url.Parse(a.Webhook); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			d.errorf(n, "approvals: webhook %q must be an http(s) URL", a.Webhook)
		}
	}
	if timeout != "" {
		t, err := time.ParseDuration(timeout)
		if err != nil || t < time.Second || t > 24*time.Hour {
			d.errorf(n, "approvals: timeout %q must be a duration from 1s to 24h", timeout)
		}
		a.Timeout = t
	}
	if max != "" {
		m, err := strconv.Atoi(max)
		if err != nil || m < 1 {
			d.errorf(n, "approvals: max_pending must be a positive number")
		}
		a.MaxPending = m
	}
}

func (d *decoder) api(n *yaml.Node, a *APISettings) {
	d.mapping(n, "api", map[string]func(*yaml.Node){
		"socket":   func(v *yaml.Node) { d.str(v, "socket", &a.Socket) },
		"group":    func(v *yaml.Node) { d.str(v, "group", &a.Group) },
		"listen":   func(v *yaml.Node) { d.str(v, "listen", &a.Listen) },
		"audience": func(v *yaml.Node) { d.str(v, "audience", &a.Audience) },
	})
	if !path.IsAbs(a.Socket) {
		d.errorf(n, "api: socket %q must be an absolute path", a.Socket)
	}
	if a.Listen != "" {
		ap, err := netip.ParseAddrPort(a.Listen)
		if err != nil || !ap.Addr().IsLoopback() {
			d.errorf(n, "api: listen %q must be a loopback ip:port", a.Listen)
		}
	}
}
