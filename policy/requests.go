package policy

import (
	"fmt"
	"path"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"
)

// RequestRules refine an http rule by method and path:
//
//	requests:
//	  allow:   ["GET /repos/**"]
//	  approve: ["POST /repos/*/*/merges", "DELETE /**"]
//	  deny:    ["* /admin/**"]
//
// A request matching a pattern is decided by it before its class is
// consulted; when patterns of several lists match, deny wins over approve
// over allow. A request no pattern matches is decided by its class.
type RequestRules struct {
	Allow   []RequestPattern
	Approve []RequestPattern
	Deny    []RequestPattern
}

// RequestPattern is "METHOD /path": METHOD is a method or "*"; in the path,
// a segment "*" (or "{name}") matches exactly one segment, "**" any number
// of segments (none included), and any other segment is matched as a
// path.Match glob against one segment. Patterns are matched against
// normalised paths (no dot segments, no empty segments, percent-decoded).
type RequestPattern struct {
	Text   string
	Method string
	Segs   []string
	Line   int
}

var (
	methodPattern = regexp.MustCompile(`^([A-Z][A-Z0-9-]{0,31}|\*)$`)
	templateSeg   = regexp.MustCompile(`^\{[A-Za-z_][A-Za-z0-9_]*\}$`)
)

// ParseRequestPattern parses one "METHOD /path" pattern.
func ParseRequestPattern(s string) (RequestPattern, error) {
	method, p, ok := strings.Cut(strings.TrimSpace(s), " ")
	p = strings.TrimSpace(p)
	if !ok || !methodPattern.MatchString(method) {
		return RequestPattern{}, fmt.Errorf("%q: want \"METHOD /path\" (method upper-case, or *)", s)
	}
	if !strings.HasPrefix(p, "/") {
		return RequestPattern{}, fmt.Errorf("%q: path must start with /", s)
	}
	rp := RequestPattern{Text: method + " " + p, Method: method}
	if p == "/" {
		return rp, nil
	}
	for seg := range strings.SplitSeq(p[1:], "/") {
		switch {
		case seg == "" || seg == "." || seg == "..":
			return RequestPattern{}, fmt.Errorf("%q: empty or dot segment %q (paths are matched normalised)", s, seg)
		case strings.Contains(seg, "%"):
			return RequestPattern{}, fmt.Errorf("%q: write segments decoded, without %%", s)
		case templateSeg.MatchString(seg):
			seg = "*"
		case strings.Contains(seg, "**") && seg != "**":
			return RequestPattern{}, fmt.Errorf("%q: ** must be a whole segment", s)
		case seg != "**":
			if _, err := path.Match(seg, ""); err != nil {
				return RequestPattern{}, fmt.Errorf("%q: bad glob %q", s, seg)
			}
		}
		rp.Segs = append(rp.Segs, seg)
	}
	return rp, nil
}

// Match reports whether the pattern covers method and the normalised path.
func (p RequestPattern) Match(method, normPath string) bool {
	if p.Method != "*" && p.Method != method {
		return false
	}
	var segs []string
	if normPath != "/" && normPath != "" {
		segs = strings.Split(strings.TrimPrefix(normPath, "/"), "/")
	}
	return matchSegs(p.Segs, segs, 0)
}

// matchSegs matches pattern segments against path segments; depth bounds
// the backtracking "**" causes (patterns are short; paths are capped).
func matchSegs(pat, segs []string, depth int) bool {
	if depth > 64 {
		return false
	}
	for len(pat) > 0 {
		if pat[0] == "**" {
			rest := pat[1:]
			if len(rest) == 0 {
				return true
			}
			for i := 0; i <= len(segs); i++ {
				if matchSegs(rest, segs[i:], depth+1) {
					return true
				}
			}
			return false
		}
		if len(segs) == 0 {
			return false
		}
		if pat[0] != "*" || segs[0] == "" {
			if ok, _ := path.Match(pat[0], segs[0]); !ok {
				return false
			}
		}
		pat, segs = pat[1:], segs[1:]
	}
	return len(segs) == 0
}

// Match returns the action and pattern of the strongest pattern matching
// the request (deny, then approve, then allow).
func (r *RequestRules) Match(method, normPath string) (Action, *RequestPattern, bool) {
	if r == nil {
		return "", nil, false
	}
	for i, list := range [][]RequestPattern{r.Deny, r.Approve, r.Allow} {
		for j := range list {
			if list[j].Match(method, normPath) {
				return []Action{Deny, Approve, Allow}[i], &list[j], true
			}
		}
	}
	return "", nil, false
}

// DecideRequest refines d, the class decision for an http request, by the
// request patterns of the rule that made it: a matching pattern decides
// (deny wins). A request of class unknown that its class denies stays
// denied whatever the patterns say. normPath must be normalised.
func (c *Config) DecideRequest(d Decision, method, normPath string) Decision {
	if d.RuleID == "" || d.Class == "unknown" && d.Action == Deny {
		return d
	}
	var rule *Rule
	for i := range c.Rules {
		if c.Rules[i].ID == d.RuleID {
			rule = &c.Rules[i]
		}
	}
	if rule == nil || rule.Requests == nil {
		return d
	}
	a, p, ok := rule.Requests.Match(method, normPath)
	if !ok {
		return d
	}
	d.Action = a
	switch a {
	case Deny:
		d.Reason = fmt.Sprintf("%s %s denied by pattern %q of rule %s", method, normPath, p.Text, rule.ID)
	case Approve:
		d.Reason = fmt.Sprintf("%s %s needs approval (pattern %q of rule %s)", method, normPath, p.Text, rule.ID)
		if d.ApprovalsRequired < 1 {
			d.ApprovalsRequired = 1
		}
	default:
		d.Reason = fmt.Sprintf("allowed by pattern %q of rule %s", p.Text, rule.ID)
	}
	return d
}

// requests reads a rule's requests: {allow, approve, deny} lists.
func (d *decoder) requests(n *yaml.Node) *RequestRules {
	rr := &RequestRules{}
	list := func(name string, dst *[]RequestPattern) func(*yaml.Node) {
		return func(v *yaml.Node) {
			var raw []string
			d.strOrList(v, "requests "+name, &raw)
			for i, s := range raw {
				at := v
				if v.Kind == yaml.SequenceNode && i < len(v.Content) {
					at = v.Content[i]
				}
				p, err := ParseRequestPattern(s)
				if err != nil {
					d.errorf(at, "requests %s: %v", name, err)
					continue
				}
				p.Line = at.Line
				*dst = append(*dst, p)
			}
		}
	}
	d.mapping(n, "requests", map[string]func(*yaml.Node){
		"allow":   list("allow", &rr.Allow),
		"approve": list("approve", &rr.Approve),
		"deny":    list("deny", &rr.Deny),
	})
	return rr
}
