package policy

import (
	"strings"
	"testing"
)

const commandsConfig = `targets:
  - name: web
    protocol: ssh
    address: 10.0.0.7:22
    known_hosts: /etc/loopgate/known_hosts
    credentials: {user: deploy, ssh_ca: true}
  - name: db
    protocol: postgres
    address: 10.0.0.5:5432
    credentials: {user: app, password_file: /etc/x}
workloads:
  - name: bot
    cgroup: loopgate/bot
approvers:
  - {name: alice, uid: 1000}
rules:
  - id: bot-web
    workloads: [bot]
    targets: [web]
    allow: [read]
    deny: [write]
    approvers: [alice]
    commands:
      allow: ["systemctl reload nginx", "sudo systemctl status *"]
      approve: ["systemctl restart *"]
      deny: ["rm -rf *"]
`

func TestCommandPatternsParse(t *testing.T) {
	t.Parallel()
	cfg, err := Parse("c.yaml", []byte(commandsConfig))
	if err != nil {
		t.Fatal(err)
	}
	p := cfg.Rules[0].Commands
	if p == nil || len(p.allow) != 2 || len(p.approve) != 1 || len(p.deny) != 1 {
		t.Fatalf("patterns = %+v", p)
	}
	if cfg.Rules[0].ApprovalsRequired != 1 {
		t.Errorf("approve patterns need an approval: %d", cfg.Rules[0].ApprovalsRequired)
	}
}

func TestCommandPatternsInvalid(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, commands, target, want string
	}{
		{name: "both", commands: `{allow: ["ls"], deny: ["ls"]}`, target: "web", want: `c.yaml:21:37: commands: pattern "ls" is both allow and deny`},
		{name: "lone backslash", commands: `{deny: ['rm \']}`, target: "web", want: `lone backslash`},
		{name: "empty", commands: `{deny: [" "]}`, target: "web", want: `must not be empty`},
		{name: "unknown key", commands: `{permit: ["ls"]}`, target: "web", want: `commands: unknown key "permit"`},
		{name: "postgres target", commands: `{allow: ["ls"]}`, target: "db", want: `c.yaml:21:15: rule "bot-web": commands: patterns apply to ssh targets only`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			src := strings.Replace(commandsConfig, "    targets: [web]", "    targets: ["+tt.target+"]", 1)
			src = strings.Replace(src, "    allow: [read]\n    deny: [write]\n", "", 1)
			i := strings.Index(src, "    commands:")
			src = src[:i] + "    commands: " + tt.commands + "\n"
			_, err := Parse("c.yaml", []byte(src))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestDecideCommand(t *testing.T) {
	t.Parallel()
	cfg, err := Parse("c.yaml", []byte(commandsConfig))
	if err != nil {
		t.Fatal(err)
	}
	web, _ := cfg.TargetByName("web")
	s := &Subject{Workload: "bot", Target: web}
	cmd := func(argv string, plain bool, classes ...string) LineCommand {
		return LineCommand{Argv: strings.Fields(argv), Exec: strings.Fields(argv), Classes: classes, Plain: plain}
	}
	line := func(cmds ...LineCommand) CommandLine {
		var l CommandLine
		for _, c := range cmds {
			for _, cl := range c.Classes {
				if !strings.Contains(strings.Join(l.Classes, " "), cl) {
					l.Classes = append(l.Classes, cl)
				}
			}
			l.Commands = append(l.Commands, c)
		}
		return l
	}
	sudo := cmd("sudo rm -rf /tmp/x", true, "write", "privilege")
	sudo.Exec = []string{"rm", "-rf", "/tmp/x"}
	tests := []struct {
		name    string
		line    CommandLine
		action  Action
		pattern string
	}{
		{"allowed by pattern", line(cmd("systemctl reload nginx", true, "write")), Allow, "systemctl reload nginx"},
		{"approve beats allow", line(cmd("systemctl restart nginx", true, "write")), Approve, "systemctl restart *"},
		{"approve pattern", line(cmd("systemctl restart redis", true, "write")), Approve, "systemctl restart *"},
		{"approve beats read", line(cmd("ls", true, "read"), cmd("systemctl restart redis", true, "write")), Approve, "systemctl restart *"},
		{"class deny beats approve", line(cmd("rm x", true, "write"), cmd("systemctl restart redis", true, "write")), Deny, ""},
		{"deny pattern", line(cmd("rm -rf /", true, "write")), Deny, "rm -rf *"},
		{"deny pattern via wrapper", line(sudo), Deny, "rm -rf *"},
		{"class read", line(cmd("ls", true, "read")), Allow, ""},
		{"class write", line(cmd("touch x", true, "write")), Deny, ""},
		{"allow needs plain", line(cmd("systemctl restart nginx", false, "write", "unknown")), Approve, "systemctl restart *"},
		{"wrapper must be named", line(cmd("sudo systemctl status x", true, "read", "privilege")), Allow, "sudo systemctl status *"},
		{"line class without command", CommandLine{Classes: []string{"read", "unknown"}, Commands: []LineCommand{cmd("ls", true, "read")}}, Deny, ""},
		{"script needs no pattern", line(LineCommand{Argv: []string{"sh", "-c", "systemctl restart nginx"}, Script: true}, cmd("systemctl reload nginx", true, "write")), Allow, "systemctl reload nginx"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			d := cfg.DecideCommand(s, tt.line)
			if d.Action != tt.action || d.Pattern != tt.pattern || d.RuleID != "bot-web" || d.Reason == "" {
				t.Errorf("DecideCommand = %+v, want %s by %q", d, tt.action, tt.pattern)
			}
		})
	}
	if d := cfg.DecideCommand(&Subject{Workload: "nobody", Target: web}, line(cmd("ls", true, "read"))); d.Action != Deny {
		t.Errorf("unknown workload: %+v", d)
	}
}

func TestGlobRegexp(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		pat, s string
		want   bool
	}{
		{"systemctl restart *", "systemctl restart nginx", true},
		{"systemctl restart *", "systemctl restart", false},
		{"cat /var/log/*", "cat /var/log/a/b.log", true},
		{"ls", "ls -l", false},
		{"ls ?", "ls a", true},
		{`echo \*`, "echo *", true},
		{`echo \*`, "echo x", false},
		{"a.b", "axb", false},
		{"*", "anything at all", true},
	} {
		re, err := globRegexp(tt.pat)
		if err != nil {
			t.Fatal(err)
		}
		if got := re.MatchString(tt.s); got != tt.want {
			t.Errorf("%q matches %q = %v, want %v", tt.pat, tt.s, got, tt.want)
		}
	}
}
