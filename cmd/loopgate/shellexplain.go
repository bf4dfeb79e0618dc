package main

import (
	"fmt"

	"github.com/loopgate/loopgate/policy"
	"github.com/loopgate/loopgate/policy/shellclass"
)

// explainShell decides an ssh exec command as the ssh handler does
// (policy/shellclass parse, then the rule's command patterns and
// classes), prints the parse and returns the line's classes and the
// decision.
func explainShell(cfg *policy.Config, sub *policy.Subject, cmd string) ([]string, policy.Decision) {
	r, d := shellclass.Decide(cfg, sub, cmd)
	fmt.Print(r.Explain())
	if d.Pattern != "" {
		fmt.Printf("pattern:  %s\n", d.Pattern)
	}
	return r.Classes, d
}
