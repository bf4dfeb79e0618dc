package shellclass

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/loopgate/loopgate/policy"
)

func TestClassify(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		cmd  string
		want []string // the line's classes, in Order
		exec string   // optional: Exec of the first command, joined
	}{
		// Evasions of text matching (design note §4).
		{name: "rm", cmd: "rm -rf /", want: []string{Write}},
		{name: "split quotes", cmd: "'r''m' -rf /", want: []string{Write}, exec: "rm -rf /"},
		{name: "double quotes", cmd: `"r"m -rf /`, want: []string{Write}, exec: "rm -rf /"},
		{name: "backslash", cmd: `\rm -rf /`, want: []string{Write}, exec: "rm -rf /"},
		{name: "ansi-c quote", cmd: `$'\x72m' -rf /`, want: []string{Write}, exec: "rm -rf /"},
		{name: "absolute path", cmd: "/bin/rm -rf /", want: []string{Write}, exec: "rm -rf /"},
		{name: "command substitution", cmd: "$(echo rm) -rf /", want: []string{Read, Unknown}},
		{name: "backticks", cmd: "`echo rm` -rf /", want: []string{Read, Unknown}},
		{name: "variable", cmd: "a=rm; $a -rf /", want: []string{Read, Unknown}},
		{name: "default expansion", cmd: "${x:-rm} -rf /", want: []string{Unknown}},
		{name: "IFS", cmd: "rm${IFS}-rf /", want: []string{Unknown}},
		{name: "brace expansion", cmd: "{rm,-rf,/}", want: []string{Unknown}},
		{name: "glob program", cmd: "/bin/r? -rf /", want: []string{Unknown}},
		{name: "bash -c dynamic", cmd: `bash -c "$x"`, want: []string{Unknown}},
		{name: "eval dynamic", cmd: `eval "$x"`, want: []string{Unknown}},
		{name: "eval literal", cmd: `eval 'rm -rf /'`, want: []string{Write}},
		{name: "alias", cmd: `shopt -s expand_aliases; alias ls=rm; ls /`, want: []string{Read, Unknown}},
		{name: "function shadows", cmd: `ls() { rm -rf /; }; ls`, want: []string{Write, Unknown}},
		{name: "function called before", cmd: `f; f() { :; }`, want: []string{Read, Unknown}},
		{name: "PATH prefix", cmd: `PATH=/tmp ls`, want: []string{Read, Unknown}},
		{name: "LD_PRELOAD env", cmd: `env LD_PRELOAD=/tmp/x.so ls`, want: []string{Read, Unknown}},
		{name: "export PATH", cmd: `export PATH=/tmp:$PATH; ls`, want: []string{Read, Unknown}},
		{name: "planted ls", cmd: "/tmp/x/ls -l", want: []string{Write}, exec: "/tmp/x/ls -l"},
		{name: "relative ls", cmd: "./ls", want: []string{Write}},
		{name: "system ls", cmd: "/usr/bin/ls -l", want: []string{Read}, exec: "ls -l"},
		{name: "hash -p", cmd: "hash -p /bin/rm ls; ls /", want: []string{Read, Unknown}},
		{name: "printf -v PATH", cmd: "printf -v PATH %s /tmp; ls", want: []string{Read, Unknown}},
		{name: "printf", cmd: "printf '%s\\n' a b", want: []string{Read}},
		{name: "read PATH", cmd: "read PATH <<< /tmp; ls", want: []string{Read, Unknown}},
		{name: "read line", cmd: "read -r line < /etc/hostname", want: []string{Read}},
		{name: "BASH_CMDS", cmd: "BASH_CMDS[ls]=/bin/rm; ls /", want: []string{Read, Unknown}},
		{name: "exported function", cmd: "env 'BASH_FUNC_ls%%=() { rm -rf /; }' bash -c ls", want: []string{Read, Unknown}},
		{name: "enable", cmd: "enable -f /tmp/x.so ls", want: []string{Unknown}},
		// Interpreters fed by a pipe, here-doc or a computed string.
		{name: "pipe to sh", cmd: "echo x | sh", want: []string{Read, Unknown}},
		{name: "curl pipe bash", cmd: "curl -s http://x | bash", want: []string{Write, Unknown}},
		{name: "heredoc sh", cmd: "sh <<EOF\nrm x\nEOF", want: []string{Unknown}},
		{name: "herestring bash", cmd: "bash <<< 'rm x'", want: []string{Unknown}},
		{name: "python stdin", cmd: "python3 - < x.py", want: []string{Unknown}},
		{name: "python inline", cmd: "python3 -c 'print(1)'", want: []string{Write}},
		{name: "python dynamic", cmd: `python3 -c "$code"`, want: []string{Unknown}},
		{name: "perl inline", cmd: `perl -e 'unlink "x"'`, want: []string{Write}},
		{name: "bash script file", cmd: "bash deploy.sh", want: []string{Write}},
		{name: "sh alone", cmd: "sh", want: []string{Unknown}},
		{name: "xargs", cmd: "xargs rm", want: []string{Unknown}},
		{name: "find exec", cmd: `find / -exec rm {} \;`, want: []string{Write, Unknown}},
		{name: "find delete", cmd: `find /tmp -name '*.log' -delete`, want: []string{Write}},
		{name: "find read", cmd: `find /var/log -name '*.gz' -mtime +7`, want: []string{Read}},
		{name: "find fprint", cmd: `find / -fprint /tmp/out`, want: []string{Write}},
		{name: "source", cmd: "source ./env.sh", want: []string{Unknown}},
		{name: "dot", cmd: ". ./env.sh", want: []string{Unknown}},
		{name: "ssh hop", cmd: "ssh other rm x", want: []string{Unknown}},
		// Lists take every class.
		{name: "list", cmd: "ls; rm x", want: []string{Read, Write}},
		{name: "and sudo", cmd: "ls && sudo reboot", want: []string{Read, Write, Privilege}},
		{name: "or", cmd: "test -f x || touch x", want: []string{Read, Write}},
		{name: "pipeline read", cmd: "ps aux | grep nginx | wc -l", want: []string{Read}},
		{name: "subshell", cmd: "(cd /var/log && ls)", want: []string{Read}},
		{name: "if", cmd: "if test -f x; then cat x; else rm y; fi", want: []string{Read, Write}},
		{name: "for", cmd: "for f in a b; do cat $f; done", want: []string{Read}},
		{name: "for dynamic program", cmd: "for c in rm; do $c -rf /; done", want: []string{Unknown}},
		{name: "while", cmd: "while read l; do echo $l; done < f", want: []string{Read}},
		{name: "case", cmd: "case $x in a) ls;; b) rm x;; esac", want: []string{Read, Write}},
		{name: "subst in argument", cmd: "echo $(rm -rf /)", want: []string{Read, Write}},
		{name: "subst in heredoc", cmd: "cat <<EOF\n$(rm -rf /)\nEOF", want: []string{Read, Write}},
		{name: "process substitution", cmd: "diff <(ls a) <(rm b)", want: []string{Read, Write}},
		{name: "background", cmd: "sleep 10 &", want: []string{Read}},
		{name: "comment only", cmd: "# nothing", want: []string{Read}},
		{name: "empty", cmd: "", want: []string{Read}},
		// Redirections.
		{name: "redirect passwd", cmd: "cat f > /etc/passwd", want: []string{Read, Write, Privilege}},
		{name: "append authorized_keys", cmd: "echo k >> ~/.ssh/authorized_keys", want: []string{Read, Write, Privilege}},
		{name: "redirect file", cmd: "echo hi > /tmp/x", want: []string{Read, Write}},
		{name: "redirect dev null", cmd: "ls > /dev/null 2>&1", want: []string{Read}},
		{name: "redirect stderr dup", cmd: "ls 2>&1 >&2", want: []string{Read}},
		{name: "redirect computed", cmd: `echo x > "$f"`, want: []string{Read, Unknown}},
		{name: "redirect only", cmd: "> /etc/sudoers.d/x", want: []string{Write, Privilege}},
		{name: "redirect block", cmd: "{ echo a; echo b; } > out", want: []string{Read, Write}},
		{name: "relative sudoers", cmd: "cd /etc && echo 'x ALL=(ALL) ALL' >> sudoers", want: []string{Read, Write, Privilege}},
		{name: "input redirect", cmd: "wc -l < /etc/passwd", want: []string{Read}},
		// Privilege.
		{name: "sudo ls", cmd: "sudo -u root ls", want: []string{Read, Privilege}, exec: "ls"},
		{name: "sudo rm", cmd: "sudo rm -rf /", want: []string{Write, Privilege}},
		{name: "sudo shell", cmd: "sudo -i", want: []string{Privilege, Unknown}},
		{name: "sudo sh -c", cmd: "sudo sh -c 'rm x'", want: []string{Write, Privilege}},
		{name: "sudo -l", cmd: "sudo -l", want: []string{Read, Privilege}},
		{name: "su -c", cmd: "su - root -c 'cat /etc/shadow'", want: []string{Read, Privilege}},
		{name: "su shell", cmd: "su postgres", want: []string{Privilege, Unknown}},
		{name: "doas", cmd: "doas systemctl restart nginx", want: []string{Write, Privilege}},
		{name: "pkexec", cmd: "pkexec ls", want: []string{Read, Privilege}},
		{name: "tee authorized_keys", cmd: "echo k | tee -a ~/.ssh/authorized_keys", want: []string{Read, Write, Privilege}},
		{name: "cp sudoers", cmd: "cp x /etc/sudoers.d/y", want: []string{Write, Privilege}},
		{name: "dd of sudoers", cmd: "dd if=x of=/etc/sudoers.d/y", want: []string{Write, Privilege}},
		{name: "chmod setuid", cmd: "chmod u+s /bin/bash", want: []string{Write, Privilege}},
		{name: "chmod octal setuid", cmd: "chmod 4755 /tmp/sh", want: []string{Write, Privilege}},
		{name: "chmod plain", cmd: "chmod 0644 /tmp/x", want: []string{Write}},
		{name: "usermod", cmd: "usermod -aG sudo bob", want: []string{Write, Privilege}},
		{name: "read authorized_keys", cmd: "cat ~/.ssh/authorized_keys", want: []string{Read}},
		// Wrappers.
		{name: "env", cmd: "env FOO=1 ls", want: []string{Read}, exec: "ls"},
		{name: "env alone", cmd: "env", want: []string{Read}},
		{name: "env -S", cmd: "env -S 'rm x'", want: []string{Unknown}},
		{name: "timeout", cmd: "timeout 5 cat x", want: []string{Read}, exec: "cat x"},
		{name: "timeout signal", cmd: "timeout -s KILL 5 rm x", want: []string{Write}, exec: "rm x"},
		{name: "nohup nice", cmd: "nohup nice -n 10 ionice -c3 stdbuf -oL tail -f /var/log/syslog", want: []string{Read}, exec: "tail -f /var/log/syslog"},
		{name: "time keyword", cmd: "time ls", want: []string{Read}},
		{name: "time program output", cmd: "/usr/bin/time -o /tmp/t ls", want: []string{Read, Write}},
		{name: "command -v", cmd: "command -v rm", want: []string{Read}},
		{name: "command", cmd: "command rm x", want: []string{Write}},
		{name: "exec", cmd: "exec /bin/ls", want: []string{Read}},
		{name: "busybox", cmd: "busybox rm x", want: []string{Write}},
		{name: "bash -lc literal", cmd: "bash -lc 'ls /tmp'", want: []string{Read}},
		{name: "sh -c nested", cmd: `sh -c "sh -c 'sh -c \"ls\"'"`, want: []string{Read}},
		{name: "sh -c too deep", cmd: `sh -c "sh -c 'sh -c \"sh -c ls\"'"`, want: []string{Unknown}},
		{name: "watch", cmd: "watch -n 1 df -h", want: []string{Read}},
		// Read forms.
		{name: "systemctl restart", cmd: "systemctl restart nginx", want: []string{Write}},
		{name: "systemctl status", cmd: "systemctl status nginx", want: []string{Read}},
		{name: "systemctl options", cmd: "systemctl --no-pager -l status nginx", want: []string{Read}},
		{name: "systemctl bare", cmd: "systemctl", want: []string{Read}},
		{name: "systemctl is-active", cmd: "systemctl is-active --quiet nginx", want: []string{Read}},
		{name: "journalctl", cmd: "journalctl -u x", want: []string{Read}},
		{name: "journalctl vacuum", cmd: "journalctl --vacuum-time=2d", want: []string{Write}},
		{name: "journalctl vacuum abbreviated", cmd: "journalctl --vacuum-t 2d", want: []string{Write}},
		{name: "awk system", cmd: `awk 'BEGIN{system("rm x")}'`, want: []string{Unknown}},
		{name: "awk print", cmd: `awk '{print $1}' /etc/passwd`, want: []string{Read}},
		{name: "awk redirect", cmd: `awk '{print > "/tmp/x"}' f`, want: []string{Write}},
		{name: "awk -f", cmd: `awk -f prog.awk f`, want: []string{Unknown}},
		{name: "sed print", cmd: `sed -n '1,10p' f`, want: []string{Read}},
		{name: "sed substitute", cmd: `sed 's/a/b/g' f`, want: []string{Read}},
		{name: "sed in place", cmd: `sed -i 's/a/b/' f`, want: []string{Write}},
		{name: "sed in place sudoers", cmd: `sed -i.bak 's/a/b/' /etc/sudoers`, want: []string{Write, Privilege}},
		{name: "sed w", cmd: `sed 's/a/b/w out' f`, want: []string{Write}},
		{name: "sed e", cmd: `sed '1e rm x' f`, want: []string{Unknown}},
		{name: "sort", cmd: "sort -u f", want: []string{Read}},
		{name: "sort -o", cmd: "sort f -o /etc/passwd", want: []string{Write, Privilege}},
		{name: "sort compress", cmd: "sort --compress-program=sh f", want: []string{Unknown}},
		{name: "sort computed", cmd: "sort $opts f", want: []string{Unknown}},
		{name: "uniq out", cmd: "uniq in out", want: []string{Write}},
		{name: "tee", cmd: "ls | tee out", want: []string{Read, Write}},
		{name: "date", cmd: "date +%s", want: []string{Read}},
		{name: "date set", cmd: "date -s '2020-01-01'", want: []string{Write}},
		{name: "hostname", cmd: "hostname -f", want: []string{Read}},
		{name: "hostname set", cmd: "hostname evil", want: []string{Write}},
		{name: "ip addr", cmd: "ip -br addr show", want: []string{Read}},
		{name: "ip link set", cmd: "ip link set eth0 down", want: []string{Write}},
		{name: "ip netns exec", cmd: "ip netns exec x rm y", want: []string{Unknown}},
		{name: "dpkg -l", cmd: "dpkg -l nginx", want: []string{Read}},
		{name: "dpkg -i", cmd: "dpkg -i x.deb", want: []string{Write}},
		{name: "docker ps", cmd: "docker ps -a", want: []string{Read}},
		{name: "docker rm", cmd: "docker rm -f x", want: []string{Write}},
		{name: "kubectl get", cmd: "kubectl -n prod get pods -o wide", want: []string{Read}},
		{name: "kubectl delete", cmd: "kubectl delete pod x", want: []string{Write}},
		{name: "misc reads", cmd: "uptime; free -m; df -h; du -sh /var; id; whoami; uname -a; printenv HOME; ps aux; stat /etc/hosts", want: []string{Read}},
		{name: "unknown program", cmd: "./deploy --prod", want: []string{Write}},
		{name: "editor", cmd: "vim /etc/hosts", want: []string{Unknown}},
		// Legacy scp and rsync server ends.
		{name: "scp -t", cmd: "scp -t /tmp/dir", want: []string{FileWrite}},
		{name: "scp -r -t", cmd: "scp -r -p -t -- /srv", want: []string{FileWrite}},
		{name: "scp -f", cmd: "scp -f /etc/hosts", want: []string{FileRead}},
		{name: "scp -t sudoers", cmd: "scp -t /etc/sudoers.d", want: []string{FileWrite, Privilege}},
		{name: "rsync sender", cmd: "rsync --server --sender -vlogDtpre.iLsfxC . /srv/x", want: []string{FileRead}},
		{name: "rsync receiver", cmd: "rsync --server -vlogDtpre.iLsfxC . /srv/x", want: []string{FileWrite}},
		// Errors.
		{name: "parse error", cmd: "ls 'unterminated", want: []string{Unknown}},
		{name: "script parse error", cmd: "sh -c 'ls \"'", want: []string{Unknown}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := Classify(tt.cmd)
			if !slices.Equal(r.Classes, tt.want) {
				t.Errorf("Classify(%q).Classes = %v, want %v\n%s", tt.cmd, r.Classes, tt.want, r.Explain())
			}
			if tt.exec != "" && (len(r.Commands) == 0 || strings.Join(r.Commands[0].Exec, " ") != tt.exec) {
				t.Errorf("Classify(%q): first command runs %q, want %q\n%s", tt.cmd, r.Commands[0].Exec, tt.exec, r.Explain())
			}
			for i, cm := range r.Commands {
				if len(cm.Classes) != len(cm.Reasons) {
					t.Errorf("command %d: %d classes, %d reasons", i, len(cm.Classes), len(cm.Reasons))
				}
			}
		})
	}
}

func TestClassifyLimits(t *testing.T) {
	t.Parallel()
	big := strings.Repeat("a", MaxInput+1)
	if r := Classify(big); !errors.Is(r.Err, ErrTooLarge) || !slices.Equal(r.Classes, []string{Unknown}) {
		t.Errorf("oversized: %v %v", r.Err, r.Classes)
	}
	deep := strings.Repeat("( ", 500) + "ls" + strings.Repeat(" )", 500)
	if r := Classify(deep); !errors.Is(r.Err, ErrTooDeep) || r.Strictest() != Unknown {
		t.Errorf("deep: %v %v", r.Err, r.Classes)
	}
	many := strings.Repeat("ls;", MaxCommands+1)
	if r := Classify(many); !errors.Is(r.Err, ErrTooMany) || r.Strictest() != Unknown {
		t.Errorf("many: %v %v", r.Err, r.Classes)
	}
}

func TestPager(t *testing.T) {
	t.Parallel()
	for cmd, want := range map[string]bool{
		"systemctl status nginx":                true,
		"journalctl -u x | tail":                true,
		"systemctl --no-pager status nginx":     false,
		"sudo journalctl --no-pager -n 10 -u x": false,
		"ls -l":                                 false,
	} {
		if got := Classify(cmd).Pager(); got != want {
			t.Errorf("Classify(%q).Pager() = %v, want %v", cmd, got, want)
		}
	}
}

func TestExplain(t *testing.T) {
	t.Parallel()
	out := Classify("ls && sudo -u root rm -rf /tmp/x > /tmp/log").Explain()
	for _, want := range []string{"1. ls", "read: ls only reads", "2. sudo -u root rm -rf /tmp/x",
		"runs rm -rf /tmp/x via sudo", "redirects > /tmp/log", "privilege: sudo runs it as root",
		"classes: read, write, privilege"} {
		if !strings.Contains(out, want) {
			t.Errorf("Explain lacks %q:\n%s", want, out)
		}
	}
}

// TestClassesMatchPolicy keeps policy's list of SSH classes (which rules
// are validated against) equal to this package's.
func TestClassesMatchPolicy(t *testing.T) {
	t.Parallel()
	got := slices.Clone(policy.Classes[policy.ProtocolSSH])
	want := slices.Clone(Order)
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("policy.Classes[ssh] = %v, shellclass.Order = %v", got, want)
	}
}
