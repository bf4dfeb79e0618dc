package shellclass

import (
	"fmt"
	"slices"
	"strings"

	"github.com/loopgate/loopgate/policy"
)

// Line returns the line as policy's command patterns see it (see
// policy.Config.DecideCommand). A command is Plain (an allow pattern may
// decide it) when every word is literal, it redirects output to no file,
// sets no variable, and is not unknown or only Opaque: so
// allow: ["python3"] lets Ansible's pipelined python3 read its module
// from stdin, but no pattern lifts $(...), PATH=... or a function.
func (r Result) Line() policy.CommandLine {
	l := policy.CommandLine{Classes: r.Classes}
	for _, cm := range r.Commands {
		l.Commands = append(l.Commands, policy.LineCommand{
			Argv:    cm.Argv,
			Exec:    cm.Exec,
			Classes: cm.Classes,
			Plain: cm.Literal && len(cm.Redirs) == 0 && len(cm.Assigns) == 0 &&
				(cm.Opaque || !slices.Contains(cm.Classes, Unknown)),
			Script: cm.Script,
		})
	}
	return l
}

// Decide classifies cmd and decides it for subject s under cfg, as the
// SSH handler does.
func Decide(cfg *policy.Config, s *policy.Subject, cmd string) (Result, policy.Decision) {
	r := Classify(cmd)
	return r, cfg.DecideCommand(s, r.Line())
}

// ExplainDecision renders the parse of r and decision d for people
// (loopgate policy explain on an ssh target).
func ExplainDecision(r Result, d policy.Decision) string {
	var b strings.Builder
	b.WriteString(r.Explain())
	rule := d.RuleID
	if rule == "" {
		rule = "(none: default deny)"
	}
	fmt.Fprintf(&b, "decision: %s\nrule:     %s\n", d.Action, rule)
	if d.Pattern != "" {
		fmt.Fprintf(&b, "pattern:  %s\n", d.Pattern)
	}
	fmt.Fprintf(&b, "reason:   %s\n", d.Reason)
	return b.String()
}
