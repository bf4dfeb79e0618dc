package shellclass

import (
	"strings"
	"testing"

	"github.com/loopgate/loopgate/policy"
)

const lineConfig = `targets:
  - name: web
    protocol: ssh
    address: 10.0.0.7:22
    known_hosts: /etc/loopgate/known_hosts
    credentials: {user: deploy, ssh_ca: true}
workloads:
  - name: bot
    cgroup: loopgate/bot
approvers:
  - {name: alice, uid: 1000}
rules:
  - id: read-only
    workloads: [bot]
    targets: [web]
    allow: [read]
    approvers: [alice]
    commands:
      allow: ["systemctl reload nginx", "find /var/log *", "python3", "sleep 0"]
      approve: ["systemctl restart *"]
      deny: ["rm -rf *"]
`

// TestDecideLine runs real command lines through the classifier and a
// rule that allows only read: the design note's evasions never get
// through, and patterns decide what they name.
func TestDecideLine(t *testing.T) {
	t.Parallel()
	cfg, err := policy.Parse("c.yaml", []byte(lineConfig))
	if err != nil {
		t.Fatal(err)
	}
	web, _ := cfg.TargetByName("web")
	s := &policy.Subject{Workload: "bot", Target: web}
	tests := []struct {
		cmd     string
		action  policy.Action
		pattern string
	}{
		{"ls -l /tmp", policy.Allow, ""},
		{"rm -rf /", policy.Deny, "rm -rf *"},
		{"'r''m' -rf /", policy.Deny, "rm -rf *"},
		{"sudo rm -rf /", policy.Deny, "rm -rf *"},
		{"$(echo rm) -rf /", policy.Deny, ""},
		{"a=rm; $a -rf /", policy.Deny, ""},
		{`bash -c "$x"`, policy.Deny, ""},
		{"rm x", policy.Deny, ""},
		{"systemctl reload nginx", policy.Allow, "systemctl reload nginx"},
		{"sudo systemctl reload nginx", policy.Deny, ""},
		{"sudo systemctl restart nginx", policy.Deny, ""},
		{"systemctl reload nginx > /etc/passwd", policy.Deny, ""},
		{"systemctl restart nginx", policy.Approve, "systemctl restart *"},
		{"ls && systemctl restart nginx", policy.Approve, "systemctl restart *"},
		{"systemctl restart nginx; touch x", policy.Deny, ""},
		{"sh -c 'systemctl reload nginx'", policy.Allow, "systemctl reload nginx"},
		{"find /var/log -name x -exec rm {} ;", policy.Deny, ""},
		{"ls 'unterminated", policy.Deny, ""},
		// Ansible with pipelining: python3 reads its module from stdin.
		{"/bin/sh -c '/usr/bin/python3 && sleep 0'", policy.Allow, "python3"},
		{"python3", policy.Allow, "python3"},
		{"PATH=/tmp python3", policy.Deny, ""},
		{"python3 > /etc/x", policy.Deny, ""},
		{"echo x | python3", policy.Allow, "python3"},
		{"$(echo python3)", policy.Deny, ""},
		{"find /var/log -name '*.gz' -exec gzip -d {} +", policy.Deny, ""},
		{"find /var/log -name '*.gz' -exec cat {} +", policy.Allow, "find /var/log *"},
	}
	for _, tt := range tests {
		t.Run(tt.cmd, func(t *testing.T) {
			t.Parallel()
			r, d := Decide(cfg, s, tt.cmd)
			if d.Action != tt.action || d.Pattern != tt.pattern {
				t.Errorf("decision %s by %q (%s), want %s by %q\n%s", d.Action, d.Pattern, d.Reason, tt.action, tt.pattern, r.Explain())
			}
		})
	}
	r, d := Decide(cfg, s, "ls; systemctl restart nginx")
	out := ExplainDecision(r, d)
	for _, want := range []string{"2. systemctl restart nginx", "decision: approve", "rule:     read-only", `pattern:  systemctl restart *`} {
		if !strings.Contains(out, want) {
			t.Errorf("explanation lacks %q:\n%s", want, out)
		}
	}
}
