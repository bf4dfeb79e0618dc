package shellclass

import (
	"strings"

	"mvdan.cc/sh/v3/syntax"
)

// call adds a simple command and classifies it.
func (c *classifier) call(ce *syntax.CallExpr, st *syntax.Stmt, redirs []string, x ctx) int {
	cm := Command{Text: text(x.src, st), Parent: x.parent, Redirs: redirs, Literal: true}
	for _, a := range ce.Assigns {
		name := ""
		if a.Name != nil {
			name = a.Name.Value
		}
		v := ""
		if a.Value != nil {
			v = evalWord(x.src, a.Value).val
		} else if a.Array != nil {
			v = source(x.src, a.Array)
		}
		cm.Assigns = append(cm.Assigns, name+"="+v)
	}
	ws := make([]word, len(ce.Args))
	for j, a := range ce.Args {
		ws[j] = evalWord(x.src, a)
		if !ws[j].lit {
			cm.Literal = false
		}
	}
	cm.Argv = normalise(ws)
	i := c.add(cm)
	c.assigns(i, cm.Assigns)
	c.children(ce, x, i)
	if i >= 0 && len(ws) > 0 {
		c.run(i, ws, x)
	}
	return i
}

// normalise returns the argv of ws with the program named by its base
// name.
func normalise(ws []word) []string {
	out := vals(ws)
	if len(ws) > 0 && ws[0].static() {
		out[0] = base(out[0])
	}
	return out
}

// run classifies the argv ws of command i, peeling wrappers off.
func (c *classifier) run(i int, ws []word, x ctx) {
	for len(ws) > 0 {
		c.res.Commands[i].Exec = normalise(ws)
		if !ws[0].static() {
			c.class(i, Unknown, "the program %s is computed at run time", ws[0].val)
			return
		}
		name := base(ws[0].val)
		if c.funcs[name] {
			c.class(i, Unknown, "calls the shell function %s", name)
			return
		}
		w, ok := wrappers[name]
		if !ok {
			c.program(i, name, ws[1:], x)
			return
		}
		inner := w(c, i, name, ws[1:], x)
		if inner == nil {
			return
		}
		c.res.Commands[i].Wrappers = append(c.res.Commands[i].Wrappers, name)
		ws = inner
	}
}

// A wrapper classifies its own part of a command and returns the wrapped
// command's words, or nil when nothing more runs (or it saw to it).
type wrapper func(c *classifier, i int, name string, args []word, x ctx) []word

var wrappers map[string]wrapper

func init() {
	wrappers = map[string]wrapper{
		"sudo":    sudo,
		"doas":    doas,
		"pkexec":  pkexec,
		"su":      su,
		"runuser": su,
		"env":     env,
		"nohup":   plain,
		"builtin": plain,
		"busybox": plain,
		"timeout": timeout,
		"nice":    nice,
		"ionice":  ionice,
		"stdbuf":  stdbuf,
		"time":    timeCmd,
		"command": command,
		"exec":    execCmd,
		"setsid":  setsid,
		"watch":   watch,
		"eval":    eval,
	}
}

// inner returns the wrapped words, or classifies a wrapper run alone.
func (c *classifier) inner(i int, ws []word, alone, reason string) []word {
	if len(ws) == 0 {
		c.class(i, alone, reason)
		return nil
	}
	return ws
}

func plain(c *classifier, i int, name string, args []word, x ctx) []word {
	a := parseArgs(args, "", nil, false)
	return c.inner(i, a.operands, Read, name+" without a command does nothing")
}

// envAssigns moves leading NAME=value words into command i's Assigns.
// env (and sudo) take every leading word with "=" for an assignment,
// whatever its name (BASH_FUNC_ls%%=() {...} exports a function).
func (c *classifier) envAssigns(i int, ws []word) []word {
	for len(ws) > 0 && ws[0].lit {
		name, _, ok := strings.Cut(ws[0].val, "=")
		if !ok || name == "" {
			break
		}
		if !syntax.ValidName(name) || !ws[0].static() {
			c.class(i, Unknown, "sets the variable %s, which can define functions", name)
		}
		c.res.Commands[i].Assigns = append(c.res.Commands[i].Assigns, ws[0].val)
		c.assigns(i, []string{ws[0].val})
		ws = ws[1:]
	}
	return ws
}

func sudo(c *classifier, i int, name string, args []word, x ctx) []word {
	a := parseArgs(args, "CDghpRrtTUu", []string{"--close-from", "--chdir", "--group", "--host", "--prompt",
		"--chroot", "--role", "--type", "--command-timeout", "--other-user", "--user"}, false)
	user := "root"
	if u, ok := a.get("-u", "--user"); ok {
		user = u.val
	}
	c.class(i, Privilege, "sudo runs it as %s", user)
	if a.dynamic {
		c.class(i, Unknown, "sudo's options are computed at run time")
		return nil
	}
	ws := c.envAssigns(i, a.operands)
	switch {
	case a.has("-e", "--edit"):
		c.class(i, Write, "sudo -e edits files as %s", user)
		c.sensitiveArgs(i, ws)
		return nil
	case a.has("-l", "--list"):
		c.class(i, Read, "sudo -l lists what may be run")
		return nil
	case len(ws) == 0 && a.has("-i", "--login", "-s", "--shell"):
		c.opaque(i, "opens a shell as %s that reads the session's input", user)
		return nil
	}
	return c.inner(i, ws, Privilege, "sudo without a command")
}

func doas(c *classifier, i int, name string, args []word, x ctx) []word {
	a := parseArgs(args, "uC", nil, false)
	c.class(i, Privilege, "doas runs it as another user")
	if a.dynamic {
		c.class(i, Unknown, "doas's options are computed at run time")
		return nil
	}
	if a.has("-s") {
		c.opaque(i, "doas -s opens a shell that reads the session's input")
		return nil
	}
	return c.inner(i, a.operands, Privilege, "doas without a command")
}

func pkexec(c *classifier, i int, name string, args []word, x ctx) []word {
	a := parseArgs(args, "", []string{"--user"}, false)
	c.class(i, Privilege, "pkexec runs it as another user")
	if a.dynamic {
		c.class(i, Unknown, "pkexec's options are computed at run time")
		return nil
	}
	if len(a.operands) == 0 {
		c.opaque(i, "pkexec without a command opens a shell")
		return nil
	}
	return a.operands
}

// su and runuser: -c runs a script as the user, runuser -u USER runs a
// command, otherwise a login shell reads the session's input.
func su(c *classifier, i int, name string, args []word, x ctx) []word {
	short := "cgGswC"
	if name == "runuser" {
		short += "u"
	}
	// su permutes: "su - root -c 'ls'".
	var rest []word
	for _, w := range args {
		if w.static() && w.val == "-" {
			continue
		}
		rest = append(rest, w)
	}
	c.class(i, Privilege, "%s runs it as another user", name)
	if name == "runuser" {
		if a := parseArgs(rest, short, nil, false); a.has("-u") && !a.dynamic {
			return c.inner(i, a.operands, Privilege, "runuser without a command")
		}
	}
	a := parseArgs(rest, short, []string{"--command", "--session-command", "--group", "--supp-group", "--shell", "--whitelist-environment"}, true)
	if a.dynamic {
		c.class(i, Unknown, "%s's options are computed at run time", name)
		return nil
	}
	script, ok := a.get("-c", "--command", "--session-command")
	if !ok {
		c.opaque(i, "%s opens a shell that reads the session's input", name)
		return nil
	}
	c.script1(i, name+" -c", script, x)
	return nil
}

// script1 classifies the script word of command i (sh -c, su -c, eval).
func (c *classifier) script1(i int, what string, script word, x ctx) {
	if !script.lit {
		c.class(i, Unknown, "%s runs a script computed at run time", what)
		return
	}
	c.res.Commands[i].Script = true
	c.script(script.val, i, x.depth+1)
}

func env(c *classifier, i int, name string, args []word, x ctx) []word {
	a := parseArgs(args, "uCS", []string{"--unset", "--chdir", "--split-string"}, false)
	if a.dynamic {
		c.class(i, Unknown, "env's options are computed at run time")
		return nil
	}
	if a.has("-S", "--split-string") {
		c.opaque(i, "env -S splits a string into a command")
		return nil
	}
	ws := c.envAssigns(i, a.operands)
	return c.inner(i, ws, Read, "env without a command prints the environment")
}

func timeout(c *classifier, i int, name string, args []word, x ctx) []word {
	a := parseArgs(args, "sk", []string{"--signal", "--kill-after"}, false)
	if a.dynamic {
		c.class(i, Unknown, "timeout's options are computed at run time")
		return nil
	}
	if len(a.operands) < 2 {
		c.class(i, Read, "timeout without a command does nothing")
		return nil
	}
	return a.operands[1:]
}

func nice(c *classifier, i int, name string, args []word, x ctx) []word {
	a := parseArgs(args, "n", []string{"--adjustment"}, false)
	if a.dynamic {
		c.class(i, Unknown, "nice's options are computed at run time")
		return nil
	}
	return c.inner(i, a.operands, Read, "nice without a command prints the niceness")
}

func ionice(c *classifier, i int, name string, args []word, x ctx) []word {
	a := parseArgs(args, "cnpPu", []string{"--class", "--classdata", "--pid", "--pgid", "--uid"}, false)
	if a.dynamic {
		c.class(i, Unknown, "ionice's options are computed at run time")
		return nil
	}
	if a.has("-p", "-P", "-u", "--pid", "--pgid", "--uid") {
		c.class(i, Write, "ionice -p changes the priority of running processes")
		return nil
	}
	return c.inner(i, a.operands, Read, "ionice without a command prints the priority")
}

func stdbuf(c *classifier, i int, name string, args []word, x ctx) []word {
	a := parseArgs(args, "ioe", []string{"--input", "--output", "--error"}, false)
	if a.dynamic {
		c.class(i, Unknown, "stdbuf's options are computed at run time")
		return nil
	}
	return c.inner(i, a.operands, Read, "stdbuf without a command does nothing")
}

func timeCmd(c *classifier, i int, name string, args []word, x ctx) []word {
	a := parseArgs(args, "fo", []string{"--format", "--output"}, false)
	if a.dynamic {
		c.class(i, Unknown, "time's options are computed at run time")
		return nil
	}
	if out, ok := a.get("-o", "--output"); ok {
		c.class(i, Write, "time -o writes its report to %s", out.val)
		c.sensitiveArgs(i, []word{out})
	}
	return c.inner(i, a.operands, Read, "time without a command does nothing")
}

func command(c *classifier, i int, name string, args []word, x ctx) []word {
	a := parseArgs(args, "", nil, false)
	if a.dynamic {
		c.class(i, Unknown, "command's options are computed at run time")
		return nil
	}
	if a.has("-v", "-V") {
		c.class(i, Read, "command -v only looks a program up")
		return nil
	}
	return c.inner(i, a.operands, Read, "command without a program does nothing")
}

func execCmd(c *classifier, i int, name string, args []word, x ctx) []word {
	a := parseArgs(args, "a", nil, false)
	if a.dynamic {
		c.class(i, Unknown, "exec's options are computed at run time")
		return nil
	}
	return c.inner(i, a.operands, Read, "exec without a command only applies its redirections")
}

func setsid(c *classifier, i int, name string, args []word, x ctx) []word {
	a := parseArgs(args, "", nil, false)
	if a.dynamic {
		c.class(i, Unknown, "setsid's options are computed at run time")
		return nil
	}
	return c.inner(i, a.operands, Read, "setsid without a command does nothing")
}

// watch runs its arguments joined by spaces with sh -c, or directly with
// -x.
func watch(c *classifier, i int, name string, args []word, x ctx) []word {
	a := parseArgs(args, "nq", []string{"--interval", "--equexit"}, false)
	if a.dynamic {
		c.class(i, Unknown, "watch's options are computed at run time")
		return nil
	}
	if a.has("-x", "--exec") {
		return c.inner(i, a.operands, Read, "watch without a command")
	}
	if len(a.operands) == 0 {
		c.class(i, Read, "watch without a command")
		return nil
	}
	c.script1(i, "watch", joined(a.operands), x)
	return nil
}

// eval runs its arguments joined by spaces as a script.
func eval(c *classifier, i int, name string, args []word, x ctx) []word {
	if len(args) == 0 {
		c.class(i, Read, "eval without arguments does nothing")
		return nil
	}
	c.script1(i, "eval", joined(args), x)
	return nil
}

// joined is the words joined by spaces, literal if all of them are.
func joined(ws []word) word {
	return word{val: strings.Join(vals(ws), " "), lit: allStatic(ws)}
}
