package shellclass

import (
	"slices"
	"strings"
)

// A check classifies a read-list program by its arguments: Read, or the
// class its form has (Write for sort -o, Unknown for awk system()).
type check func(name string, args []word) (class, reason string)

// readers are the reviewed programs that only read, in every form (nil
// check) or in the forms their check accepts. Anything else is Write.
var readers = map[string]check{}

func init() {
	for _, n := range strings.Fields(`ls dir vdir cat tac head tail wc stat du df free uptime id whoami
		logname groups users who w last lastlog lastb uname arch nproc lscpu lsmem lsmod lspci lsusb lsblk
		blkid findmnt lsof ps pgrep pidof pstree top vmstat iostat mpstat pidstat netstat printenv echo
		true false test [ : pwd cd basename dirname realpath readlink which whereis type sleep
		seq tty locale getent tree namei getfacl lsattr cut tr nl rev fold fmt paste join comm column
		expand unexpand strings od hexdump hd zcat bzcat xzcat zstdcat lz4cat grep egrep fgrep zgrep zegrep
		zfgrep ag ack diff cmp md5sum sha1sum sha224sum sha256sum sha384sum sha512sum b2sum cksum sum base64
		base32 basenc jq read wait exit return shift getopts times jobs unalias set mountpoint dpkg-query
		apt-cache getconf dig host nslookup ping mokutil`) {
		readers[n] = nil
	}
	for n, f := range map[string]check{
		"sort":        sortCheck,
		"uniq":        operandsCheck(1, "fsw", []string{"--skip-fields", "--skip-chars", "--check-chars"}),
		"xxd":         operandsCheck(1, "cglosn", nil),
		"date":        dateCheck,
		"hostname":    optsCheck("F", nil, []string{"-F", "--file", "-b", "--boot"}, nil, true),
		"dmesg":       optsCheck("fFlns", nil, []string{"-c", "-C", "-D", "-E", "-n", "--clear", "--read-clear", "--console-off", "--console-on", "--console-level"}, nil, false),
		"journalctl":  journalctl,
		"systemctl":   subCheck("tpHMnos", []string{"--type", "--property", "--host", "--machine", "--lines", "--output", "--signal", "--state", "--kill-whom", "--root", "--job-mode", "--what"}, "list-units", systemctlReads),
		"hostnamectl": subCheck("HM", []string{"--host", "--machine"}, "status", "status"),
		"timedatectl": subCheck("HM", []string{"--host", "--machine"}, "status", "status show list-timezones show-timesync timesync-status"),
		"localectl":   subCheck("HM", []string{"--host", "--machine"}, "status", "status list-locales list-keymaps list-x11-keymap-models list-x11-keymap-layouts list-x11-keymap-variants list-x11-keymap-options"),
		"loginctl":    subCheck("HMpPn", []string{"--host", "--machine", "--property"}, "list-sessions", "list-sessions session-status show-session list-users user-status show-user list-seats seat-status show-seat"),
		"networkctl":  subCheck("HMn", []string{"--host", "--machine", "--lines"}, "list", "list status lldp label"),
		"resolvectl":  subCheck("ipt", []string{"--interface", "--protocol", "--type", "--class"}, "status", "status query service openpgp tlsa statistics dns domain llmnr mdns dnssec dnsovertls nta"),
		"ip":          ipCheck,
		"ss":          optsCheck("FAf", nil, []string{"-K", "--kill", "-D", "--diag"}, nil, false),
		"ifconfig":    optsCheck("", nil, nil, nil, true),
		"route":       optsCheck("A", nil, nil, nil, true),
		"mount":       optsCheck("t", nil, []string{"-a", "--all", "-o", "-B", "--bind", "-M", "--move", "--make-private", "--make-shared"}, nil, true),
		"iptables":    firstOptCheck("-L -S --list --list-rules -V --version -h --help"),
		"ip6tables":   firstOptCheck("-L -S --list --list-rules -V --version -h --help"),
		"nft":         subCheck("fI", []string{"--file", "--includepath"}, "", "list describe --version -v"),
		"dpkg":        firstOptCheck("-l -L -s -S -p -c -I -C -V --list --listfiles --status --search --print-avail --contents --info --audit --verify --get-selections --print-architecture --print-foreign-architectures --compare-versions --version --help"),
		"rpm":         rpmCheck,
		"apt":         subCheck("ocst", []string{"--option", "--config-file", "--target-release"}, "", "list show search policy depends rdepends showsrc changelog"),
		"docker":      dockerCheck,
		"podman":      dockerCheck,
		"kubectl":     kubectlCheck,
		"crictl":      subCheck("ir", []string{"--image-endpoint", "--runtime-endpoint", "--config"}, "", "ps pods images img inspect inspecti inspectp logs info version stats statsp imagefsinfo"),
		"sed":         sedCheck,
		"awk":         awkCheck,
		"gawk":        awkCheck,
		"mawk":        awkCheck,
		"nawk":        awkCheck,
		"rg":          optsCheck("efgtTAB", []string{"--regexp", "--file", "--glob", "--type", "--type-not"}, nil, []string{"--pre", "--pre-glob", "--search-zip", "-z"}, false),
		"yq":          optsCheck("", nil, []string{"-i", "--inplace"}, nil, false),
		"file":        optsCheck("mfFeP", nil, []string{"-C", "--compile"}, nil, false),
		"sar":         optsCheck("ofeisPn", nil, []string{"-o"}, nil, false),
		"sdiff":       optsCheck("ow", []string{"--output", "--width"}, []string{"-o", "--output"}, nil, false),
		"umask":       optsCheck("", nil, nil, nil, true),
		"ulimit":      optsCheck("", nil, nil, nil, true),
		"arp":         optsCheck("HiA", nil, []string{"-d", "-s", "-f", "--delete", "--set", "--file"}, nil, false),
		"shopt":       shoptCheck,
		"hash":        optsCheck("pd", nil, nil, []string{"-p"}, false),
		"printf":      varCheck,
		"read":        varCheck,
		"mapfile":     varCheck,
		"readarray":   varCheck,
		"getopts":     varCheck,
	} {
		readers[n] = f
	}
}

// computed is the verdict on a checked program whose arguments are
// computed: they could hold any option.
func computed(name string) (string, string) {
	return Unknown, name + "'s arguments are computed at run time and may hold options that write"
}

// optsCheck reads unless an option in write (Write) or exec (Unknown) is
// given or, with noOperands, any operand is.
func optsCheck(short string, long, write, exec []string, noOperands bool) check {
	return func(name string, args []word) (string, string) {
		a := parseArgs(args, short, long, true)
		switch {
		case a.dynamic:
			return computed(name)
		case len(exec) > 0 && a.has(exec...):
			return Unknown, name + " " + strings.Join(exec, "/") + " runs other programs"
		case len(write) > 0 && a.has(write...):
			return Write, name + " writes in this form (" + strings.Join(write, ", ") + ")"
		case noOperands && len(a.operands) > 0:
			return Write, name + " with operands changes settings"
		}
		return Read, name + " only reads in this form"
	}
}

// operandsCheck reads with at most max operands (uniq IN OUT writes OUT).
func operandsCheck(max int, short string, long []string) check {
	return func(name string, args []word) (string, string) {
		a := parseArgs(args, short, long, true)
		switch {
		case a.dynamic:
			return computed(name)
		case len(a.operands) > max || (name == "xxd" && a.has("-r") && len(a.operands) > max):
			return Write, name + " writes its last operand"
		}
		return Read, name + " only reads in this form"
	}
}

// firstOptCheck reads when the first argument is one of the listed
// query options (dpkg -l, iptables -L).
func firstOptCheck(reads string) check {
	list := strings.Fields(reads)
	return func(name string, args []word) (string, string) {
		if len(args) == 0 {
			return Read, name + " without arguments prints usage"
		}
		if !allStatic(args) {
			return computed(name)
		}
		first := args[0].val
		if !strings.HasPrefix(first, "--") && len(first) > 2 && first[0] == '-' {
			first = first[:2] // -nL: the cluster's first letter decides for -L, -l
		}
		for _, w := range args {
			if strings.HasPrefix(w.val, "-") && !strings.HasPrefix(w.val, "--") && len(w.val) >= 2 {
				if slices.Contains(list, w.val[:2]) || slices.Contains(list, w.val) {
					first = w.val[:2]
					break
				}
			}
		}
		if slices.Contains(list, first) {
			return Read, name + " " + first + " only queries"
		}
		return Write, name + " changes the system in this form"
	}
}

// subCheck reads when the subcommand (first operand) is one of reads, or
// absent and def is one of them.
func subCheck(short string, long []string, def, reads string) check {
	list := strings.Fields(reads)
	return func(name string, args []word) (string, string) {
		a := parseArgs(args, short, long, false)
		if a.dynamic || (len(a.operands) > 0 && !a.operands[0].static()) {
			return computed(name)
		}
		sub := def
		if len(a.operands) > 0 {
			sub = a.operands[0].val
		}
		if sub != "" && slices.Contains(list, sub) || (sub == "" && a.has("--version", "-v", "--help", "-h")) {
			return Read, strings.TrimSpace(name+" "+sub) + " only reads"
		}
		return Write, strings.TrimSpace(name+" "+sub) + " changes the system"
	}
}

var systemctlReads = "status show cat is-active is-enabled is-failed is-system-running list-units list-unit-files " +
	"list-sockets list-timers list-jobs list-dependencies list-machines list-automounts list-paths " +
	"show-environment get-default help"

func sortCheck(name string, args []word) (string, string) {
	a := parseArgs(args, "kotST", []string{"--key", "--output", "--field-separator", "--buffer-size",
		"--temporary-directory", "--compress-program", "--parallel", "--files0-from", "--batch-size"}, true)
	switch {
	case a.dynamic:
		return computed(name)
	case a.has("--compress-program"):
		return Unknown, "sort --compress-program runs another program"
	case a.has("-o", "--output"):
		return Write, "sort -o writes a file"
	}
	return Read, "sort only reads in this form"
}

func dateCheck(name string, args []word) (string, string) {
	a := parseArgs(args, "dfrs", []string{"--date", "--file", "--reference", "--set"}, true)
	if a.dynamic {
		return computed(name)
	}
	if a.has("-s", "--set") {
		return Write, "date -s sets the clock"
	}
	for _, o := range a.operands {
		if !strings.HasPrefix(o.val, "+") {
			return Write, "date with a date operand sets the clock"
		}
	}
	return Read, "date only reads in this form"
}

var journalWrites = []string{"--vacuum-size", "--vacuum-time", "--vacuum-files", "--rotate", "--flush", "--sync",
	"--relinquish-var", "--smart-relinquish-var", "--setup-keys", "--update-catalog"}

func journalctl(name string, args []word) (string, string) {
	a := parseArgs(args, "bcDEFgiMnoptSUu", []string{"--boot", "--cursor", "--directory", "--field", "--grep",
		"--file", "--machine", "--lines", "--output", "--priority", "--identifier", "--since", "--until", "--unit",
		"--user-unit", "--facility", "--root", "--namespace"}, true)
	switch {
	case a.dynamic:
		return computed(name)
	case a.has(journalWrites...):
		return Write, "journalctl " + strings.Join(journalWrites, "/") + " change the journal"
	}
	return Read, "journalctl only reads in this form"
}

func ipCheck(name string, args []word) (string, string) {
	var ops []string
	for i := 0; i < len(args); i++ {
		w := args[i]
		if !w.static() {
			return computed(name)
		}
		switch {
		case w.val == "-b" || w.val == "-batch" || w.val == "-force":
			return Unknown, "ip -batch runs commands from a file"
		case w.val == "-n" || w.val == "-netns" || w.val == "-rc" || w.val == "-rcvbuf" || w.val == "-l" || w.val == "-loops" || w.val == "-f" || w.val == "-family":
			i++
		case strings.HasPrefix(w.val, "-"):
		default:
			ops = append(ops, w.val)
		}
	}
	if len(ops) < 2 {
		return Read, "ip only shows in this form"
	}
	cmd := ops[1]
	if cmd == "exec" {
		return Unknown, "ip " + ops[0] + " exec runs a command"
	}
	for _, r := range []string{"show", "list", "lst", "get", "help"} {
		if strings.HasPrefix(r, cmd) {
			return Read, "ip " + ops[0] + " " + cmd + " only shows"
		}
	}
	if ops[0] == "monitor" || ops[0] == "mon" {
		return Read, "ip monitor only shows"
	}
	return Write, "ip " + ops[0] + " " + cmd + " changes the network"
}

func rpmCheck(name string, args []word) (string, string) {
	if !allStatic(args) {
		return computed(name)
	}
	for _, w := range args {
		if strings.HasPrefix(w.val, "-q") || strings.HasPrefix(w.val, "-V") || w.val == "--query" || w.val == "--verify" {
			return Read, "rpm " + w.val + " only queries"
		}
	}
	return Write, "rpm changes packages in this form"
}

func dockerCheck(name string, args []word) (string, string) {
	a := parseArgs(args, "Hcl", []string{"--host", "--context", "--config", "--log-level"}, false)
	if a.dynamic || !allStatic(a.operands) {
		return computed(name)
	}
	ops := vals(a.operands)
	reads := []string{"ps", "images", "inspect", "logs", "version", "info", "stats", "top", "port", "diff", "history", "events"}
	if len(ops) == 0 {
		return Read, name + " prints usage"
	}
	sub := ops[0]
	if (sub == "container" || sub == "image" || sub == "network" || sub == "volume") && len(ops) > 1 {
		sub = ops[1]
		reads = append(reads, "ls", "list")
	}
	if slices.Contains(reads, sub) {
		return Read, name + " " + sub + " only reads"
	}
	return Write, name + " " + sub + " changes containers"
}

func kubectlCheck(name string, args []word) (string, string) {
	a := parseArgs(args, "nlocsf", []string{"--namespace", "--context", "--cluster", "--kubeconfig", "--user",
		"--server", "--selector", "--output", "--container", "--token"}, true)
	if a.dynamic || !allStatic(a.operands) {
		return computed(name)
	}
	ops := vals(a.operands)
	if len(ops) == 0 {
		return Read, "kubectl prints usage"
	}
	switch ops[0] {
	case "get", "describe", "logs", "top", "explain", "api-resources", "api-versions", "cluster-info", "version", "events":
		return Read, "kubectl " + ops[0] + " only reads"
	case "config":
		if len(ops) > 1 && slices.Contains([]string{"view", "get-contexts", "current-context", "get-clusters", "get-users"}, ops[1]) {
			return Read, "kubectl config " + ops[1] + " only reads"
		}
	case "auth":
		if len(ops) > 1 && (ops[1] == "can-i" || ops[1] == "whoami") {
			return Read, "kubectl auth " + ops[1] + " only reads"
		}
	}
	return Write, "kubectl " + ops[0] + " changes the cluster"
}

func shoptCheck(name string, args []word) (string, string) {
	if !allStatic(args) {
		return computed(name)
	}
	for _, w := range args {
		if w.val == "expand_aliases" {
			return Unknown, "shopt expand_aliases lets aliases redefine commands"
		}
	}
	return Read, "shopt only sets shell options"
}

func awkCheck(name string, args []word) (string, string) {
	a := parseArgs(args, "fFvEeil", []string{"--file", "--field-separator", "--assign", "--exec", "--source",
		"--include", "--load"}, false)
	if a.dynamic {
		return computed(name)
	}
	if a.has("-f", "--file", "-E", "--exec") {
		return Unknown, name + " runs a program from a file"
	}
	if a.has("-l", "--load") {
		return Unknown, name + " loads an extension"
	}
	if inc, ok := a.get("-i", "--include"); ok && strings.Contains(inc.val, "inplace") {
		return Write, name + " -i inplace edits files"
	}
	var progs []word
	for _, o := range a.opts {
		if (o.name == "-e" || o.name == "--source") && o.has {
			progs = append(progs, o.val)
		}
	}
	if len(progs) == 0 {
		if len(a.operands) == 0 {
			return Read, name + " without a program prints usage"
		}
		progs = a.operands[:1]
	}
	for _, p := range progs {
		switch {
		case !p.lit:
			return Unknown, name + " runs a program computed at run time"
		case strings.Contains(p.val, "system") || strings.Contains(p.val, "|") || strings.Contains(p.val, "getline"):
			return Unknown, name + " program runs commands (system, pipes or getline)"
		case strings.Contains(p.val, ">"):
			return Write, name + " program may write files (print > file)"
		}
	}
	return Read, name + " program only reads"
}

func sedCheck(name string, args []word) (string, string) {
	a := parseArgs(args, "efl", []string{"--expression", "--file", "--line-length"}, true)
	if a.dynamic {
		return computed(name)
	}
	if a.has("-i", "--in-place") {
		return Write, "sed -i edits files in place"
	}
	if a.has("-f", "--file") {
		return Unknown, "sed runs a script from a file"
	}
	var scripts []word
	for _, o := range a.opts {
		if (o.name == "-e" || o.name == "--expression") && o.has {
			scripts = append(scripts, o.val)
		}
	}
	if len(scripts) == 0 && len(a.operands) > 0 {
		scripts = a.operands[:1]
	}
	worst, why := Read, "sed script only reads"
	for _, s := range scripts {
		if !s.lit {
			return Unknown, "sed runs a script computed at run time"
		}
		if cl, r := sedScript(s.val); strictness(cl) > strictness(worst) {
			worst, why = cl, r
		}
	}
	return worst, why
}

func strictness(cl string) int { return slices.Index(Order, cl) }

// varCheck reads unless a builtin that assigns a variable (printf -v,
// read, mapfile, getopts) may assign one that changes what later
// commands run.
func varCheck(name string, args []word) (string, string) {
	if name == "printf" {
		a := parseArgs(args, "v", nil, false)
		v, ok := a.get("-v")
		if !ok {
			return Read, "printf only writes to its output"
		}
		args = []word{v}
	}
	for _, w := range args {
		if !w.static() {
			return Unknown, name + " assigns a variable named at run time"
		}
		if slices.Contains(dangerousVars, w.val) {
			return Unknown, name + " sets " + w.val + ", which changes what later commands run"
		}
	}
	return Read, name + " only sets shell variables"
}
