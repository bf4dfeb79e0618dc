package policy

import (
	"fmt"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"
)

// CommandPatterns are a rule's glob patterns over shell command lines
// (commands: {allow: [...], approve: [...], deny: [...]}, ssh targets
// only). A pattern matches a simple command's normalised argv joined by
// single spaces, whole: "*" matches any run of characters (spaces and
// slashes included), "?" any one character, and "\" makes the next
// character literal. "systemctl restart *" matches "systemctl restart
// nginx"; "ls" matches only a bare ls.
type CommandPatterns struct {
	Allow, Approve, Deny []string
	Line                 int

	allow, approve, deny []*regexp.Regexp // compiled, in the lists' order
}

// CommandLine is a parsed shell command line as command patterns see it
// (policy/shellclass's Result.Line builds one).
type CommandLine struct {
	// Classes are the line's classes, including any that belong to no
	// simple command (a parse error is unknown).
	Classes []string
	// Commands are the line's simple commands.
	Commands []LineCommand
}

// LineCommand is one simple command of a line.
type LineCommand struct {
	// Argv is the normalised argv as written: quotes removed, the program
	// named by its base name, wrappers (sudo, env, timeout) included.
	Argv []string
	// Exec is what runs once wrappers are peeled off (equal to Argv
	// without one).
	Exec []string
	// Classes are the command's own classes.
	Classes []string
	// Plain is true when an allow pattern may decide the command: every
	// word is literal, it redirects output to no file, sets no variable,
	// and is not unknown unless only because its program is opaque (an
	// interpreter reading stdin, xargs): a pattern may name such a
	// program, but never lifts a computed word or a rebinding.
	Plain bool
	// Script is true when the command only runs a literal script (sh -c,
	// eval) whose commands follow it, and has no class of its own.
	Script bool
}

// globRegexp compiles a command glob.
func globRegexp(p string) (*regexp.Regexp, error) {
	var b strings.Builder
	b.WriteString(`^`)
	for i := 0; i < len(p); i++ {
		switch c := p[i]; c {
		case '*':
			b.WriteString(`.*`)
		case '?':
			b.WriteString(`.`)
		case '\\':
			if i+1 >= len(p) {
				return nil, fmt.Errorf("pattern %q ends in a lone backslash", p)
			}
			i++
			b.WriteString(regexp.QuoteMeta(p[i : i+1]))
		default:
			b.WriteString(regexp.QuoteMeta(p[i : i+1]))
		}
	}
	b.WriteString(`$`)
	return regexp.Compile(`(?s)` + b.String())
}

func (d *decoder) commands(n *yaml.Node) *CommandPatterns {
	p := &CommandPatterns{Line: n.Line}
	nodes := map[string]*yaml.Node{}
	list := func(name string, dst *[]string) func(*yaml.Node) {
		return func(v *yaml.Node) { nodes[name] = v; d.strOrList(v, "commands "+name, dst) }
	}
	d.mapping(n, "commands", map[string]func(*yaml.Node){
		"allow":   list("allow", &p.Allow),
		"approve": list("approve", &p.Approve),
		"deny":    list("deny", &p.Deny),
	})
	seen := map[string]string{}
	for i, src := range [][]string{p.Allow, p.Approve, p.Deny} {
		action := ruleAction[i]
		at := orNode(nodes[action], n)
		for _, pat := range src {
			if prev, dup := seen[pat]; dup {
				d.errorf(at, "commands: pattern %q is both %s and %s", pat, prev, action)
			}
			seen[pat] = action
			if strings.TrimSpace(pat) != pat || pat == "" {
				d.errorf(at, "commands: pattern %q must not be empty or start or end with spaces", pat)
				continue
			}
			re, err := globRegexp(pat)
			if err != nil {
				d.errorf(at, "commands: %v", err)
				continue
			}
			switch action {
			case "allow":
				p.allow = append(p.allow, re)
			case "approve":
				p.approve = append(p.approve, re)
			default:
				p.deny = append(p.deny, re)
			}
		}
	}
	return p
}

// match returns the first pattern of res (named by src) matching any of
// the forms, or "".
func match(res []*regexp.Regexp, src []string, forms ...[]string) string {
	for _, f := range forms {
		if len(f) == 0 {
			continue
		}
		line := strings.Join(f, " ")
		for i, re := range res {
			if re.MatchString(line) {
				return src[i]
			}
		}
	}
	return ""
}

// DecideCommand decides a shell command line: the rule governing s
// decides each simple command, and the strictest decision wins (deny over
// approve over allow). A command matching a deny pattern (by its argv as
// written or by what runs once wrappers are peeled off, so "rm *" also
// denies "sudo rm x") is denied; else one whose argv as written matches
// an approve pattern needs approval; else a Plain command whose argv as
// written matches an allow pattern is allowed. Approve and allow patterns
// match only the argv as written, so they never lift a wrapper's classes:
// "ls" does not allow "sudo ls", the pattern must name sudo. Every other
// command, and any line class no command carries, is decided by its
// classes as Decide does.
// Scripts (sh -c 'ls') need no pattern of their own: their commands do.
func (c *Config) DecideCommand(s *Subject, l CommandLine) Decision {
	r, d := c.rule(s)
	if r == nil {
		return d
	}
	p := r.Commands
	if p == nil || len(l.Commands) == 0 {
		return c.Decide(s, l.Classes)
	}
	type verdict struct {
		action         Action
		class, pattern string
		argv           []string
	}
	var best *verdict
	consider := func(v verdict) {
		// The strictest wins; among equals, a pattern's verdict says more.
		if best == nil || strictness(v.action) > strictness(best.action) ||
			(v.action == best.action && best.pattern == "" && v.pattern != "") {
			best = &v
		}
	}
	carried := map[string]bool{}
	for _, cm := range l.Commands {
		for _, cl := range cm.Classes {
			carried[cl] = true
		}
		top := ""
		if len(cm.Classes) > 0 {
			top = cm.Classes[len(cm.Classes)-1]
		}
		if pat := match(p.deny, p.Deny, cm.Argv, cm.Exec); pat != "" {
			consider(verdict{Deny, top, pat, cm.Argv})
			continue
		}
		if pat := match(p.approve, p.Approve, cm.Argv); pat != "" {
			consider(verdict{Approve, top, pat, cm.Argv})
			continue
		}
		if cm.Script && len(cm.Classes) == 0 {
			continue
		}
		if cm.Plain {
			if pat := match(p.allow, p.Allow, cm.Argv); pat != "" {
				consider(verdict{Allow, top, pat, cm.Argv})
				continue
			}
		}
		for _, cl := range cm.Classes {
			consider(verdict{r.action(cl), cl, "", cm.Argv})
		}
	}
	for _, cl := range l.Classes {
		if !carried[cl] {
			consider(verdict{r.action(cl), cl, "", nil})
		}
	}
	if best == nil {
		return c.Decide(s, l.Classes)
	}
	d.Action, d.Class, d.Pattern = best.action, best.class, best.pattern
	cmd := strings.Join(best.argv, " ")
	switch {
	case best.pattern != "" && best.action == Deny:
		d.Reason = fmt.Sprintf("command %q matches deny pattern %q of rule %s", cmd, best.pattern, r.ID)
	case best.pattern != "" && best.action == Approve:
		d.Reason = fmt.Sprintf("command %q needs approval under rule %s (pattern %q)", cmd, r.ID, best.pattern)
	case best.action == Deny:
		d.Reason = fmt.Sprintf("%s denied by rule %s", best.class, r.ID)
	case best.action == Approve:
		d.Reason = fmt.Sprintf("%s needs approval under rule %s", best.class, r.ID)
	default:
		d.Reason = "allowed by rule " + r.ID
	}
	return d
}

// commandPatternsValid checks that a rule with command patterns governs
// ssh targets, the only ones that run command lines.
func commandPatternsValid(d *decoder, n *yaml.Node, r *Rule, protocols map[string]bool) {
	if r.Commands == nil || protocols[ProtocolSSH] {
		return
	}
	d.errorf(n, "rule %q: commands: patterns apply to ssh targets only, and the rule names %s targets", r.ID, protocolList(protocols))
}
