package shellclass

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"mvdan.cc/sh/v3/syntax"
)

// Classes an SSH request falls into. Classify returns Read, Write,
// Privilege and Unknown (and FileRead/FileWrite for the server side of
// legacy scp and rsync); the SSH handler uses Shell, FileRead, FileWrite
// and Forward for requests that are not command lines.
const (
	// Read is a program from a reviewed list, in a form that only reads.
	Read = "read"
	// Write is any other program, or output redirected to a file.
	Write = "write"
	// Privilege is a change of user (sudo, su, doas, pkexec) or a write
	// to sudoers, authorized_keys or the account databases.
	Privilege = "privilege"
	// Unknown is anything the parse cannot see through: commands computed
	// at run time, eval of computed text, interpreters fed a script from
	// stdin or a computed string, xargs, find -exec, functions, parse
	// errors and input over the limits.
	Unknown = "unknown"
	// Shell is an interactive shell on a pty (no command).
	Shell = "shell"
	// FileRead is a file downloaded: SFTP reads, scp -f, rsync --sender.
	FileRead = "file-read"
	// FileWrite is a file uploaded or changed: SFTP writes, scp -t, rsync.
	FileWrite = "file-write"
	// Forward is a direct-tcpip channel to a host:port.
	Forward = "forward"
)

// Order lists every class from least to most strict. Policy decides by the
// strictest action over all of a command's classes, so the order only
// sorts Result.Classes for people; privilege and unknown are both strict.
var Order = []string{Read, FileRead, FileWrite, Write, Forward, Shell, Privilege, Unknown}

// Limits on what Classify parses. Input over them is Unknown.
const (
	// MaxInput is the longest command line parsed, in bytes.
	MaxInput = 64 << 10
	// MaxScriptDepth is how deep sh -c, eval and su -c scripts nest.
	MaxScriptDepth = 3
	// MaxNesting is how deep statements may nest in the syntax tree.
	MaxNesting = 100
	// MaxCommands is how many simple commands one line may hold.
	MaxCommands = 1000
)

// Errors Result.Err wraps besides the parser's.
var (
	ErrTooLarge  = errors.New("command longer than 64 KiB")
	ErrTooDeep   = errors.New("command nested too deeply")
	ErrTooMany   = errors.New("command holds too many simple commands")
	ErrTooNested = errors.New("scripts nested more than 3 deep (sh -c, eval, su -c)")
)

// Command is one simple command of a line, as parsed.
type Command struct {
	// Text is the command's source text (of the script it came from).
	Text string
	// Argv is the normalised argv as written: quotes removed, the program
	// named by its base name (/bin/rm is rm). A word the shell computes at
	// run time is kept in its source form ($x, $(echo rm)) and makes
	// Literal false. Empty for an assignment or a bare redirection.
	Argv []string
	// Literal is true when every word of Argv is literal text.
	Literal bool
	// Exec is the argv that finally runs once wrappers (sudo, env,
	// timeout, nohup, ...) are peeled off; equal to Argv without one.
	Exec []string
	// Wrappers are the programs peeled off, outermost first.
	Wrappers []string
	// Assigns are the NAME=value prefixes and env arguments.
	Assigns []string
	// Redirs are the output redirections to files ("> /etc/passwd").
	Redirs []string
	// Parent is the index of the command this one runs inside (the sh -c
	// or eval whose script it is, the command whose argument substitutes
	// it, or find -exec's find); -1 at the top level.
	Parent int
	// Script is true when the command only runs a literal script whose
	// commands follow it in the list (sh -c 'ls', eval 'ls'), so it has
	// no class of its own.
	Script bool
	// Classes holds the command's own classes, in Order; Reasons says
	// why, one sentence per class, in the same order.
	Classes []string
	Reasons []string
	// Opaque is true when the command is unknown only because its
	// program does what the parse cannot see (an interpreter reading its
	// program from stdin, xargs, find -exec, awk system()), not because
	// of a computed word, an assignment or a rebinding: an allow pattern
	// that names it may lift it (see Result.Line).
	Opaque bool

	// Pager is true for a program that pages its output through less
	// when run on a terminal (systemctl, journalctl and the other systemd
	// tools without --no-pager): on a pty, less can run a shell (!sh), so
	// an exec with a pty should not be taken for read.
	Pager bool

	hard bool // unknown for a reason no pattern lifts
}

// Result is the parse and classification of a command line.
type Result struct {
	// Input is the command line.
	Input string
	// Commands are every simple command, in source order (a script's
	// commands follow the command that runs it).
	Commands []Command
	// Classes is the union of the commands' classes, in Order. Unknown
	// when Err is set.
	Classes []string
	// Err is the parse error or limit that made the line Unknown.
	Err error
}

// Pager reports whether any command pages its output on a terminal (see
// Command.Pager).
func (r Result) Pager() bool {
	for _, cm := range r.Commands {
		if cm.Pager {
			return true
		}
	}
	return false
}

// Has reports whether the line has class c.
func (r Result) Has(c string) bool { return slices.Contains(r.Classes, c) }

// Strictest returns the last of the line's classes in Order.
func (r Result) Strictest() string {
	if len(r.Classes) == 0 {
		return ""
	}
	return r.Classes[len(r.Classes)-1]
}

// Classify parses cmd as bash and classifies every simple command in it.
// It never fails: what it cannot parse or see through is Unknown, with
// Result.Err saying why when the whole line is opaque. An empty line does
// nothing and is Read. Safe for concurrent use.
func Classify(cmd string) Result {
	r := Result{Input: cmd}
	c := &classifier{res: &r, funcs: map[string]bool{}}
	if len(cmd) > MaxInput {
		r.Err = ErrTooLarge
	} else {
		c.script(cmd, -1, 0)
		r.Err = c.err
	}
	set := map[string]bool{}
	for i := range r.Commands {
		cm := &r.Commands[i]
		cm.Opaque = cm.Opaque && !cm.hard
		for _, cl := range cm.Classes {
			set[cl] = true
		}
	}
	if r.Err != nil {
		set[Unknown] = true
	}
	if len(set) == 0 {
		set[Read] = true
	}
	for _, cl := range Order {
		if set[cl] {
			r.Classes = append(r.Classes, cl)
		}
	}
	return r
}

type classifier struct {
	res        *Result
	funcs      map[string]bool // names of functions the line defines
	err        error           // first limit hit or parse error
	opaqueNext bool            // the next Unknown is an opaque program's
}

// opaque adds Unknown to command i for a program that does what the
// parse cannot see.
func (c *classifier) opaque(i int, reason string, args ...any) {
	c.opaqueNext = true
	c.class(i, Unknown, reason, args...)
	c.opaqueNext = false
}

// ctx is where a statement runs.
type ctx struct {
	src    string // text of the script being walked
	parent int    // index of the enclosing command, -1 at top
	depth  int    // script depth (sh -c nesting)
	nest   int    // statement nesting
	fed    string // what feeds stdin ("a pipe", "a here-document"), "" for the session
}

func (c *classifier) fail(err error) {
	if c.err == nil {
		c.err = err
	}
}

// script parses and walks src, a script run by command parent.
func (c *classifier) script(src string, parent, depth int) {
	if depth > MaxScriptDepth {
		c.fail(ErrTooNested)
		return
	}
	f, err := syntax.NewParser(syntax.Variant(syntax.LangBash)).Parse(strings.NewReader(src), "")
	if err != nil {
		if depth == 0 {
			c.fail(fmt.Errorf("parse: %w", err))
		} else {
			c.fail(fmt.Errorf("parse script of command %d: %w", parent+1, err))
		}
		return
	}
	// Functions first: a call before the definition in the text may run
	// after it (a loop, a later line).
	syntax.Walk(f, func(n syntax.Node) bool {
		if fd, ok := n.(*syntax.FuncDecl); ok && fd.Name != nil {
			c.funcs[fd.Name.Value] = true
		}
		return true
	})
	x := ctx{src: src, parent: parent, depth: depth}
	for _, st := range f.Stmts {
		c.stmt(st, x)
	}
}

// add appends a command and returns its index, or -1 past MaxCommands.
func (c *classifier) add(cm Command) int {
	if len(c.res.Commands) >= MaxCommands {
		c.fail(ErrTooMany)
		return -1
	}
	c.res.Commands = append(c.res.Commands, cm)
	return len(c.res.Commands) - 1
}

// class adds class cl with its reason to command i.
func (c *classifier) class(i int, cl, reason string, args ...any) {
	if i < 0 {
		return
	}
	cm := &c.res.Commands[i]
	if cl == Unknown {
		if c.opaqueNext {
			cm.Opaque = true
		} else {
			cm.hard = true
		}
	}
	if len(args) > 0 {
		reason = fmt.Sprintf(reason, args...)
	}
	j := slices.Index(cm.Classes, cl)
	if j >= 0 {
		return // the first reason stays
	}
	cm.Classes = append(cm.Classes, cl)
	cm.Reasons = append(cm.Reasons, reason)
	// Keep Classes in Order, Reasons alongside.
	for k := len(cm.Classes) - 1; k > 0 && slices.Index(Order, cm.Classes[k]) < slices.Index(Order, cm.Classes[k-1]); k-- {
		cm.Classes[k], cm.Classes[k-1] = cm.Classes[k-1], cm.Classes[k]
		cm.Reasons[k], cm.Reasons[k-1] = cm.Reasons[k-1], cm.Reasons[k]
	}
}

func (c *classifier) stmt(st *syntax.Stmt, x ctx) {
	if c.err != nil {
		return
	}
	x.nest++
	if x.nest > MaxNesting {
		c.fail(ErrTooDeep)
		return
	}
	redirs, fed := c.redirs(st, x)
	if fed != "" {
		x.fed = fed
	}
	own := -1 // the command this statement adds, if any
	switch cmd := st.Cmd.(type) {
	case nil:
		own = c.add(Command{Text: text(x.src, st), Parent: x.parent, Literal: true, Redirs: redirs})
	case *syntax.CallExpr:
		own = c.call(cmd, st, redirs, x)
	case *syntax.BinaryCmd:
		if len(redirs) > 0 {
			own = c.redirOnly(st, redirs, x)
		}
		c.stmt(cmd.X, x)
		y := x
		if cmd.Op == syntax.Pipe || cmd.Op == syntax.PipeAll {
			y.fed = "a pipe"
		}
		c.stmt(cmd.Y, y)
	case *syntax.FuncDecl:
		own = c.add(Command{Text: text(x.src, st), Parent: x.parent, Literal: true, Redirs: redirs})
		c.class(own, Unknown, "defines a shell function, which can shadow any program")
		c.children(cmd.Body, x, own)
	case *syntax.DeclClause:
		own = c.decl(cmd, st, redirs, x)
	case *syntax.TestDecl, *syntax.CoprocClause:
		own = c.add(Command{Text: text(x.src, st), Parent: x.parent, Literal: true, Redirs: redirs})
		c.class(own, Unknown, "runs a construct this classifier does not review")
		c.children(st.Cmd, x, own)
	default:
		// Compound commands ([[ ]], (( )), let, if, loops, case, blocks,
		// subshells, time): their own words only test or compute; the
		// statements inside are classified on their own.
		if len(redirs) > 0 {
			own = c.redirOnly(st, redirs, x)
		}
		c.children(st.Cmd, x, own)
	}
	for _, r := range st.Redirs {
		c.children(r, x, own)
	}
	if own >= 0 {
		c.classRedirs(own)
		if cm := c.res.Commands[own]; len(cm.Classes) == 0 && !cm.Script {
			c.class(own, Read, "only sets variables or opens files to read")
		}
	}
}

// children classifies the statements under n: nested statements and
// command and process substitutions, which run as commands of their own.
func (c *classifier) children(n syntax.Node, x ctx, parent int) {
	if n == nil {
		return
	}
	syntax.Walk(n, func(m syntax.Node) bool {
		switch m := m.(type) {
		case *syntax.Stmt:
			c.stmt(m, x)
			return false
		case *syntax.CmdSubst:
			y := x
			y.fed, y.parent = "", parent
			for _, s := range m.Stmts {
				c.stmt(s, y)
			}
			return false
		case *syntax.ProcSubst:
			y := x
			y.fed, y.parent = "", parent
			for _, s := range m.Stmts {
				c.stmt(s, y)
			}
			return false
		}
		return true
	})
}

// redirOnly adds the command for redirections of a compound statement.
func (c *classifier) redirOnly(st *syntax.Stmt, redirs []string, x ctx) int {
	return c.add(Command{Text: text(x.src, st), Parent: x.parent, Literal: true, Redirs: redirs})
}

// decl handles declare/export/local/readonly/typeset.
func (c *classifier) decl(d *syntax.DeclClause, st *syntax.Stmt, redirs []string, x ctx) int {
	cm := Command{Text: text(x.src, st), Parent: x.parent, Literal: true, Redirs: redirs}
	for _, a := range d.Args {
		if a.Name != nil {
			v := ""
			if a.Value != nil {
				v = evalWord(x.src, a.Value).val
			}
			cm.Assigns = append(cm.Assigns, a.Name.Value+"="+v)
		} else if a.Value != nil {
			w := evalWord(x.src, a.Value)
			cm.Assigns = append(cm.Assigns, w.val)
			if !w.lit {
				cm.Literal = false
			}
		}
	}
	i := c.add(cm)
	if !cm.Literal {
		c.class(i, Unknown, "%s of a computed name can set any variable", d.Variant.Value)
	}
	c.assigns(i, cm.Assigns)
	c.children(d, x, i)
	return i
}

// assigns classifies variable assignments: the ones that change what
// later commands run are Unknown.
func (c *classifier) assigns(i int, as []string) {
	for _, a := range as {
		name, _, _ := strings.Cut(a, "=")
		name = strings.TrimSuffix(name, "+")
		if slices.Contains(dangerousVars, name) || strings.HasPrefix(name, "BASH_FUNC_") {
			c.class(i, Unknown, "sets %s, which changes what later commands run", name)
		}
	}
}

// dangerousVars change which program runs or run code on their own.
var dangerousVars = []string{"PATH", "LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT", "BASH_ENV", "ENV",
	"PROMPT_COMMAND", "IFS", "SHELLOPTS", "BASHOPTS", "PS4", "GCONV_PATH", "BASH_LOADABLES_PATH",
	"PERL5OPT", "PERL5LIB", "PYTHONPATH", "PYTHONSTARTUP", "NODE_OPTIONS", "RUBYOPT", "GIT_SSH_COMMAND",
	"PAGER", "EDITOR", "VISUAL", "SYSTEMD_PAGER", "LESSOPEN", "BASH_CMDS", "BASH_ALIASES", "BASH_XTRACEFD",
	"HOSTALIASES", "GIT_EXEC_PATH", "SSH_ASKPASS", "SUDO_ASKPASS"}

// redirs returns a statement's output redirections to files and what
// feeds its stdin, and classifies nothing: the caller's command does.
func (c *classifier) redirs(st *syntax.Stmt, x ctx) (out []string, fed string) {
	for _, r := range st.Redirs {
		switch r.Op {
		case syntax.Hdoc, syntax.DashHdoc:
			fed = "a here-document"
		case syntax.WordHdoc:
			fed = "a here-string"
		case syntax.RdrIn:
			fed = "a file"
		case syntax.DplIn:
		case syntax.DplOut:
			if r.Word != nil {
				w := evalWord(x.src, r.Word)
				if w.lit && (w.val == "-" || strings.Trim(w.val, "0123456789") == "" || w.val == "") {
					continue // >&2, 2>&1, >&-
				}
				out = append(out, ">& "+w.val)
			}
		default: // >, >>, <>, >|, &>, &>>
			if r.Word == nil {
				continue
			}
			w := evalWord(x.src, r.Word)
			if w.lit && harmlessSink(w.val) {
				continue
			}
			op := r.Op.String()
			if !w.static() {
				op = "?" + op // marked: the target is computed
			}
			out = append(out, op+" "+w.val)
		}
	}
	return out, fed
}

// harmlessSink reports whether writing to p changes no file.
func harmlessSink(p string) bool {
	switch p {
	case "/dev/null", "/dev/stdout", "/dev/stderr", "/dev/tty", "/dev/zero":
		return true
	}
	return strings.HasPrefix(p, "/dev/fd/")
}

// classRedirs classifies command i's output redirections.
func (c *classifier) classRedirs(i int) {
	if i < 0 {
		return
	}
	for _, r := range c.res.Commands[i].Redirs {
		op, target, _ := strings.Cut(r, " ")
		if strings.HasPrefix(op, "?") {
			c.class(i, Unknown, "redirects output to a computed file %s", target)
			continue
		}
		if sensitivePath(target) {
			c.class(i, Privilege, "writes %s, which grants access", target)
		}
		c.class(i, Write, "redirects output to %s", target)
	}
}

// text is a statement's source without its terminating ';'.
func text(src string, st *syntax.Stmt) string {
	return strings.TrimRight(source(src, st), "; \t")
}
