package shellclass

import (
	"fmt"
	"strconv"
	"strings"
)

// Explain renders the parse for people (loopgate policy explain): each
// simple command with its normalised argv, what runs once wrappers are
// peeled off, its redirections and its classes with their reasons, then
// the line's classes.
func (r Result) Explain() string {
	var b strings.Builder
	fmt.Fprintf(&b, "command: %s\n", r.Input)
	if r.Err != nil {
		fmt.Fprintf(&b, "  not classified: %v\n", r.Err)
	}
	for i, cm := range r.Commands {
		depth := 0
		for p := cm.Parent; p >= 0 && p < len(r.Commands) && depth < len(r.Commands); p = r.Commands[p].Parent {
			depth++
		}
		ind := strings.Repeat("  ", depth+1)
		fmt.Fprintf(&b, "%s%d. %s", ind, i+1, quoteArgv(cm.Argv))
		if len(cm.Argv) == 0 {
			b.WriteString(cm.Text)
		}
		if len(cm.Assigns) > 0 {
			fmt.Fprintf(&b, "  (sets %s)", strings.Join(cm.Assigns, " "))
		}
		b.WriteByte('\n')
		if len(cm.Wrappers) > 0 {
			fmt.Fprintf(&b, "%s   runs %s via %s\n", ind, quoteArgv(cm.Exec), strings.Join(cm.Wrappers, ", "))
		}
		for _, rd := range cm.Redirs {
			fmt.Fprintf(&b, "%s   redirects %s\n", ind, strings.TrimPrefix(rd, "?"))
		}
		if cm.Script && len(cm.Classes) == 0 {
			fmt.Fprintf(&b, "%s   runs the script below\n", ind)
		}
		if cm.Pager {
			fmt.Fprintf(&b, "%s   pages through less on a terminal (less can run commands)\n", ind)
		}
		for j, cl := range cm.Classes {
			fmt.Fprintf(&b, "%s   %s: %s\n", ind, cl, cm.Reasons[j])
		}
	}
	fmt.Fprintf(&b, "classes: %s\n", strings.Join(r.Classes, ", "))
	return b.String()
}

// quoteArgv joins an argv for display, quoting words that need it.
func quoteArgv(argv []string) string {
	out := make([]string, len(argv))
	for i, a := range argv {
		if a == "" || strings.ContainsAny(a, " \t\n\"'\\") {
			out[i] = strconv.Quote(a)
		} else {
			out[i] = a
		}
	}
	return strings.Join(out, " ")
}
