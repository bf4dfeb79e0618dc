package shellclass

import (
	"path"
	"slices"
	"strings"
)

// program classifies a program that is not a wrapper.
func (c *classifier) program(i int, name string, args []word, x ctx) {
	switch {
	case slices.Contains(shells, name):
		c.shell(i, name, args, x)
	case interpreter(name) != nil:
		c.interp(i, name, interpreter(name), args, x)
	case name == "find":
		c.find(i, args, x)
	case runners[name] != "":
		if slices.Contains(rebinders, name) {
			c.class(i, Unknown, "%s %s", name, runners[name])
		} else {
			c.opaque(i, "%s %s", name, runners[name])
		}
	case slices.Contains(privileged, name):
		c.class(i, Privilege, "%s changes users, groups or capabilities", name)
		c.class(i, Write, "%s changes the system", name)
	case name == "scp":
		c.scp(i, args)
	case name == "rsync":
		c.rsync(i, args)
	default:
		check, ok := readers[name]
		if !ok {
			c.class(i, Write, "%s is not on the list of read-only programs", name)
			c.sensitiveArgs(i, args)
			if name == "chmod" && setuid(args) {
				c.class(i, Privilege, "chmod sets a set-user-ID or set-group-ID bit")
			}
			return
		}
		cl, reason := Read, name+" only reads"
		if check != nil {
			cl, reason = check(name, args)
		}
		if slices.Contains(pagers, name) && !slices.ContainsFunc(args, func(w word) bool { return w.val == "--no-pager" }) {
			c.res.Commands[i].Pager = true
		}
		if cl == Unknown && !slices.Contains(rebinders, name) {
			c.opaque(i, "%s", reason) // computed arguments make Literal false
		} else {
			c.class(i, cl, "%s", reason)
		}
		if cl == Write {
			c.sensitiveArgs(i, args)
		}
	}
}

// sensitiveArgs adds Privilege to command i when a literal argument names
// a file that grants access (sudoers, authorized_keys, account files).
func (c *classifier) sensitiveArgs(i int, args []word) {
	for _, w := range args {
		if !w.lit {
			continue
		}
		v := w.val
		_, after, hasEq := strings.Cut(v, "=") // --output=F, of=F
		if sensitivePath(v) || (hasEq && sensitivePath(after)) {
			c.class(i, Privilege, "changes %s, which grants access", w.val)
			return
		}
	}
}

// sensitivePath reports whether p names a file (or directory) whose
// change grants access: sudoers, authorized keys and principals, the
// account databases, sshd's and PAM's configuration. Relative names
// match by their base name, so cd /etc; tee sudoers is caught.
func sensitivePath(p string) bool {
	p = strings.TrimSpace(p)
	if p == "" {
		return false
	}
	clean := path.Clean(p)
	b := path.Base(clean)
	switch {
	case strings.HasPrefix(b, "sudoers"), strings.HasPrefix(b, "authorized_keys"),
		strings.HasPrefix(b, "authorized_principals"), b == "doas.conf", b == ".ssh":
		return true
	case strings.Contains(clean, "sudoers.d"), strings.Contains(clean, "/.ssh/"), strings.HasPrefix(clean, ".ssh/"),
		strings.HasPrefix(clean, "/etc/ssh/"), strings.HasPrefix(clean, "/etc/pam.d"),
		strings.HasPrefix(clean, "/etc/security/"), strings.HasPrefix(clean, "/etc/polkit-1/"):
		return true
	}
	switch clean {
	case "/etc/passwd", "/etc/shadow", "/etc/group", "/etc/gshadow", "/etc/sudo.conf", "/etc/ld.so.preload",
		"/etc/ssh", "/etc/subuid", "/etc/subgid", "passwd", "shadow", "gshadow":
		return true
	}
	return false
}

// shells run -c scripts (classified like the line) or read a script.
var shells = []string{"sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "rbash", "yash", "posh", "lksh"}

func (c *classifier) shell(i int, name string, args []word, x ctx) {
	a := parseArgs(args, "oO", []string{"--rcfile", "--init-file"}, false)
	switch {
	case a.has("-c") && len(a.operands) > 0:
		c.script1(i, name+" -c", a.operands[0], x)
	case a.dynamic:
		c.class(i, Unknown, "%s's options are computed at run time", name)
	case a.has("-c"):
		if len(a.operands) == 0 {
			c.class(i, Unknown, "%s -c without a script", name)
			return
		}
		c.script1(i, name+" -c", a.operands[0], x)
	case a.has("-s") || len(a.operands) == 0 || (a.operands[0].lit && a.operands[0].val == "-"):
		c.opaque(i, "%s reads its script from %s", name, feeder(x))
	default:
		c.class(i, Write, "%s runs the script %s", name, a.operands[0].val)
	}
}

func feeder(x ctx) string {
	if x.fed == "" {
		return "the session's input"
	}
	return x.fed
}

// interp says how an interpreter takes inline code.
type interp struct {
	inline []string // options whose value is a program
	short  string   // short options taking a value
	long   []string
	module []string // options naming a module to run
}

func interpreter(name string) *interp {
	switch {
	case strings.HasPrefix(name, "python") || name == "pypy" || name == "pypy3":
		return &interp{inline: []string{"-c"}, short: "cmWXQ", module: []string{"-m"}}
	case name == "perl" || strings.HasPrefix(name, "perl5"):
		return &interp{inline: []string{"-e", "-E"}, short: "eEIMmx"}
	case name == "ruby" || name == "irb":
		return &interp{inline: []string{"-e"}, short: "eIrCEF"}
	case name == "node" || name == "nodejs" || name == "bun" || name == "deno":
		return &interp{inline: []string{"-e", "--eval", "-p", "--print"}, short: "epr", long: []string{"--eval", "--print", "--require", "--import", "--loader"}}
	case name == "php":
		return &interp{inline: []string{"-r"}, short: "rdcf"}
	case strings.HasPrefix(name, "lua") || name == "luajit":
		return &interp{inline: []string{"-e"}, short: "elW"}
	case name == "Rscript" || name == "R":
		return &interp{inline: []string{"-e"}, short: "e"}
	case name == "pwsh" || name == "powershell":
		return &interp{inline: []string{"-c", "-Command", "-EncodedCommand", "-e"}, short: "ce"}
	case name == "tclsh" || name == "wish" || name == "julia" || name == "groovy" || name == "jshell" || name == "osascript":
		return &interp{inline: []string{"-e"}, short: "e"}
	}
	return nil
}

func (c *classifier) interp(i int, name string, in *interp, args []word, x ctx) {
	a := parseArgs(args, in.short, in.long, false)
	code, ok := a.get(in.inline...)
	if a.dynamic && !(ok && !code.lit) {
		c.class(i, Unknown, "%s's options are computed at run time", name)
		return
	}
	if ok {
		if !code.lit {
			c.class(i, Unknown, "%s runs code computed at run time", name)
			return
		}
		c.class(i, Write, "%s runs inline code, which can do anything", name)
		return
	}
	if m, ok := a.get(in.module...); ok {
		c.class(i, Write, "%s runs the module %s", name, m.val)
		return
	}
	if len(a.operands) == 0 || a.operands[0].val == "-" {
		c.opaque(i, "%s reads its program from %s", name, feeder(x))
		return
	}
	c.class(i, Write, "%s runs the script %s", name, a.operands[0].val)
}

// find reads unless it deletes, writes files or runs commands; the
// commands of -exec and -ok are classified as its children.
func (c *classifier) find(i int, args []word, x ctx) {
	defer func() {
		if len(c.res.Commands[i].Classes) == 0 {
			c.class(i, Read, "find only reads in this form")
		}
	}()
	for j := 0; j < len(args); j++ {
		w := args[j]
		if !w.static() {
			if !w.lit {
				c.class(i, Unknown, "find's argument %s is computed at run time and may be an action", w.val)
			}
			continue
		}
		switch w.val {
		case "-exec", "-execdir", "-ok", "-okdir":
			k := j + 1
			for k < len(args) && !(args[k].lit && (args[k].val == ";" || args[k].val == "+")) {
				k++
			}
			c.opaque(i, "find %s runs a command for each file it finds", w.val)
			inner := args[j+1 : k]
			if len(inner) > 0 {
				child := c.add(Command{Text: strings.Join(vals(inner), " "), Argv: normalise(inner),
					Literal: allLit(inner), Parent: i})
				if child >= 0 {
					c.run(child, inner, x)
				}
			}
			j = k
		case "-delete":
			c.class(i, Write, "find -delete removes files")
		case "-fprint", "-fprint0", "-fprintf", "-fls":
			c.class(i, Write, "find %s writes a file", w.val)
			if j+1 < len(args) {
				c.sensitiveArgs(i, args[j+1:j+2])
			}
		}
	}
}

func allLit(ws []word) bool {
	for _, w := range ws {
		if !w.lit {
			return false
		}
	}
	return true
}

// scp on the exec line is the remote end of legacy scp: -t receives
// files (an upload), -f sends them (a download).
func (c *classifier) scp(i int, args []word) {
	a := parseArgs(args, "cFiJloPSDBX", nil, true)
	switch {
	case a.dynamic:
		c.class(i, Unknown, "scp's options are computed at run time")
	case a.has("-S"):
		c.opaque(i, "scp -S runs another program")
	case a.has("-t"):
		c.class(i, FileWrite, "scp -t receives files into %s", strings.Join(vals(a.operands), " "))
		c.sensitiveArgs(i, a.operands)
	case a.has("-f"):
		c.class(i, FileRead, "scp -f sends %s", strings.Join(vals(a.operands), " "))
	default:
		c.class(i, Write, "scp copies files to or from another host")
	}
}

// rsync --server is the remote end of rsync over ssh: with --sender it
// sends files (a download), otherwise it receives them.
func (c *classifier) rsync(i int, args []word) {
	a := parseArgs(args, "", nil, true)
	switch {
	case a.dynamic:
		c.class(i, Unknown, "rsync's options are computed at run time")
	case !a.has("--server"):
		c.class(i, Write, "rsync copies files")
		c.sensitiveArgs(i, a.operands)
	case a.has("--sender"):
		c.class(i, FileRead, "rsync --server --sender sends %s", strings.Join(vals(a.operands), " "))
	default:
		c.class(i, FileWrite, "rsync --server receives files into %s", strings.Join(vals(a.operands), " "))
		c.sensitiveArgs(i, a.operands)
	}
}

// runners run commands this classifier cannot see.
var runners = map[string]string{
	"xargs":         "runs commands built from its input",
	"parallel":      "runs commands built from its input",
	"source":        "runs a script file in this shell",
	".":             "runs a script file in this shell",
	"trap":          "sets code to run on a signal",
	"alias":         "redefines command names",
	"nsenter":       "runs a command in other namespaces",
	"chroot":        "runs a command in another root",
	"unshare":       "runs a command in new namespaces",
	"systemd-run":   "runs a command as a service",
	"flock":         "runs a command under a lock",
	"chrt":          "runs a command with another scheduler",
	"taskset":       "runs a command on other CPUs",
	"strace":        "runs a command under a tracer",
	"ltrace":        "runs a command under a tracer",
	"gdb":           "runs and alters programs",
	"valgrind":      "runs a command under a checker",
	"script":        "runs a command in a recorded pty",
	"ssh":           "runs commands on another host",
	"at":            "schedules commands read from its input",
	"batch":         "schedules commands read from its input",
	"screen":        "runs shells and commands",
	"tmux":          "runs shells and commands",
	"sg":            "runs a command with another group",
	"newgrp":        "opens a shell with another group",
	"expect":        "runs a script that drives other programs",
	"fc":            "re-runs commands from history",
	"enable":        "loads or switches off shell builtins",
	"sftp-server":   "serves SFTP outside the subsystem loopgate inspects",
	"internal-sftp": "serves SFTP outside the subsystem loopgate inspects",
	"csh":           "is a shell whose syntax this classifier does not parse",
	"tcsh":          "is a shell whose syntax this classifier does not parse",
	"fish":          "is a shell whose syntax this classifier does not parse",
	"vi":            "is an editor that can run commands",
	"vim":           "is an editor that can run commands",
	"nvim":          "is an editor that can run commands",
	"emacs":         "is an editor that can run commands",
	"less":          "is a pager that can run commands",
	"more":          "is a pager that can run commands",
	"man":           "runs a pager that can run commands",
	"env-update":    "rewrites the environment",
}

// pagers page their output through less on a terminal.
var pagers = []string{"systemctl", "journalctl", "loginctl", "timedatectl", "hostnamectl", "localectl",
	"networkctl", "resolvectl", "busctl", "coredumpctl"}

// rebinders change what later commands of the line mean; no pattern
// lifts them.
var rebinders = []string{"source", ".", "trap", "alias", "enable", "fc", "shopt", "hash", "printf", "read",
	"mapfile", "readarray", "getopts"}

// privileged change who may do what.
var privileged = []string{"visudo", "sudoedit", "usermod", "useradd", "userdel", "adduser", "deluser", "groupadd",
	"groupmod", "groupdel", "addgroup", "delgroup", "gpasswd", "passwd", "chpasswd", "chage", "chsh", "chfn",
	"vipw", "vigr", "setcap", "pam-auth-update", "ssh-copy-id", "newusers"}

// setuid reports whether chmod's arguments set a set-user-ID or
// set-group-ID bit (u+s, g+s, +s, 4755, 2755) or are computed.
func setuid(args []word) bool {
	for _, w := range args {
		if !w.lit {
			return true
		}
		v := w.val
		if strings.HasPrefix(v, "--") {
			continue
		}
		if strings.ContainsAny(v, "+=") && strings.Contains(v, "s") {
			return true
		}
		if len(v) >= 4 && strings.Trim(v, "01234567") == "" && (v[len(v)-4]-'0')&6 != 0 {
			return true
		}
	}
	return false
}
