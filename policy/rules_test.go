package policy

import (
	"strings"
	"testing"
)

// issueExample is the config from the policy issue, which must work as
// written.
const issueExample = `oidc:
  - issuer: https://token.actions.githubusercontent.com
    audience: loopgate
targets:
  - name: prod-db
    protocol: postgres
    address: 10.0.0.5:5432
    credentials: {user: app, password_file: /etc/loopgate/prod-db.pass}
workloads:
  - name: ci-bot
    cgroup: loopgate/ci-bot
    token: {issuer: https://token.actions.githubusercontent.com, subject: "repo:acme/app:ref:refs/heads/main"}
masks:
  - {name: email, detect: email, mode: partial}
  - {name: ssn, columns: ["*.ssn"], mode: redact}
approvers:
  - {name: alice, uid: 1000}
  - {name: dba, oidc_group: dba}
rules:
  - id: bot-prod
    workloads: [ci-bot]
    targets: [prod-db]
    allow: [read]
    approve: [write]          # command classes as the protocol issues define them
    deny: [ddl, drop]
    mask: [email, ssn]
    approvers: [alice, dba]
    approvals_required: 1
`

func TestIssueExampleLoads(t *testing.T) {
	t.Parallel()
	cfg, err := Parse("loopgate.yaml", []byte(issueExample))
	if err != nil {
		t.Fatal(err)
	}
	r := cfg.Rules[0]
	if r.ID != "bot-prod" || len(r.Mask) != 2 || r.ApprovalsRequired != 1 {
		t.Errorf("rule = %+v", r)
	}
	w, _ := cfg.WorkloadByName("ci-bot")
	if w.Token == nil || w.Token.Subject != "repo:acme/app:ref:refs/heads/main" {
		t.Errorf("token = %+v", w.Token)
	}
	tg, _ := cfg.TargetByName("prod-db")
	if tg.Credentials.PasswordFile != "/etc/loopgate/prod-db.pass" {
		t.Errorf("credentials = %+v", tg.Credentials)
	}
	if cfg.Approvers[0].UID != 1000 || cfg.Approvers[1].OIDCGroup != "dba" {
		t.Errorf("approvers = %+v", cfg.Approvers)
	}
}

func TestRuleErrors(t *testing.T) {
	t.Parallel()
	base := "targets:\n  - {name: db, protocol: postgres, address: 1.1.1.1:5432}\n  - {name: echo, protocol: tcp, address: 1.1.1.1:7}\nworkloads:\n  - {name: bot, cgroup: lg/bot}\nmasks:\n  - {name: email, detect: email}\napprovers:\n  - {name: alice, uid: 1000}\n"
	tests := []struct {
		name, yaml, want string
	}{
		{"unknown workload", "rules:\n  - {id: r, workloads: [nobody], targets: [db], allow: [read]}\n", `f.yaml:11:24: rule "r": unknown workload "nobody"`},
		{"unknown target", "rules:\n  - {id: r, workloads: [bot], targets: [nope], allow: [read]}\n", `rule "r": unknown target "nope"`},
		{"class of wrong protocol", "rules:\n  - {id: r, workloads: [bot], targets: [echo], allow: [read]}\n", `rule "r": unknown command class "read" for tcp targets`},
		{"class twice", "rules:\n  - {id: r, workloads: [bot], targets: [db], allow: [read], deny: [read]}\n", `class "read" is both allow and deny`},
		{"unknown mask", "rules:\n  - {id: r, workloads: [bot], targets: [db], allow: [read], mask: [ssn]}\n", `unknown mask "ssn"`},
		{"unknown approver", "rules:\n  - {id: r, workloads: [bot], targets: [db], approve: [write], approvers: [bob]}\n", `unknown approver "bob"`},
		{"too many approvals", "rules:\n  - {id: r, workloads: [bot], targets: [db], approve: [write], approvers: [alice], approvals_required: 2}\n", `2 approvals required but only 1 approvers named`},
		{"duplicate id", "rules:\n  - {id: r, workloads: [bot], targets: [db], allow: [read]}\n  - {id: r, workloads: [bot], targets: [db], allow: [read]}\n", `rule: duplicate id "r"`},
		{"no targets", "rules:\n  - {id: r, workloads: [bot], allow: [read]}\n", `workloads and targets are required`},
		{"inline password", "targets:\n  - {name: x, protocol: postgres, address: 1.1.1.1:1, credentials: {user: a, password: hunter2}}\n", `inline passwords are not accepted`},
		{"bad detector", "masks:\n  - {name: m, detect: dna}\n", `unknown detector "dna"`},
		{"bad mode", "masks:\n  - {name: m, detect: email, mode: blur}\n", `unknown mode "blur"`},
		{"issuer http", "oidc:\n  - {issuer: http://example.com, audience: a}\n", `must use https`},
		{"issuer no audience", "oidc:\n  - {issuer: https://example.com}\n", `needs an audience`},
		{"token issuer unknown", "oidc:\n  - {issuer: https://a.example, audience: x}\nworkloads:\n  - {name: w, cgroup: a/b, token: {issuer: https://b.example, subject: s}}\n", `token issuer "https://b.example" is not in oidc:`},
		{"token matches anything", "oidc:\n  - {issuer: https://a.example, audience: x}\nworkloads:\n  - {name: w, cgroup: a/b, token: {issuer: https://a.example}}\n", `give a subject or claims`},
		{"approver without identity", "approvers:\n  - {name: bob}\n", `approver "bob": give uid, oidc_subject or oidc_group`},
		{"dynamic ttl", "targets:\n  - {name: x, protocol: postgres, address: 1.1.1.1:1, credentials: {user: a, dynamic: {role: r, ttl: 2s}}}\n", `dynamic: ttl "2s" must be a duration from 10s to 24h`},
		{"dynamic role", "targets:\n  - {name: x, protocol: postgres, address: 1.1.1.1:1, credentials: {user: a, dynamic: {ttl: 1m}}}\n", `dynamic: role "" must match`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			text := tc.yaml
			if strings.HasPrefix(text, "rules:") {
				text = base + text
			}
			_, err := Parse("f.yaml", []byte(text))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v\nwant it to contain %q", err, tc.want)
			}
		})
	}
}

func TestDecide(t *testing.T) {
	t.Parallel()
	cfg, err := Parse("f.yaml", []byte(`oidc:
  - {issuer: https://idp.example, audience: loopgate}
targets:
  - {name: prod-db, protocol: postgres, address: 10.0.0.5:5432}
  - {name: stage-db, protocol: postgres, address: 10.0.0.6:5432}
  - {name: echo, protocol: tcp, address: 127.0.0.2:7000}
workloads:
  - {name: ci-bot, cgroup: lg/ci}
  - {name: agent, cgroup: lg/agent}
  - {name: signed, cgroup: lg/signed, token: {issuer: https://idp.example, subject: "repo:acme"}}
rules:
  - id: bot-prod
    workloads: [ci-bot]
    targets: [prod-db]
    allow: [read, transaction, session]
    approve: [write]
    deny: [ddl, drop]
  - id: anyone-stage
    workloads: ["*"]
    targets: [stage-db]
    allow: ["*"]
    deny: [drop]
  - id: echo
    workloads: [ci-bot, signed]
    targets: [echo]
    allow: [connect]
`))
	if err != nil {
		t.Fatal(err)
	}
	subject := func(w, target string) *Subject {
		tg, _ := cfg.TargetByName(target)
		return &Subject{Workload: w, Target: tg}
	}
	signed := subject("signed", "echo")
	signed.Claims = &Claims{Issuer: "https://idp.example", Subject: "repo:acme"}
	tests := []struct {
		name    string
		subject *Subject
		classes []string
		action  Action
		rule    string
	}{
		{"read allowed", subject("ci-bot", "prod-db"), []string{"read"}, Allow, "bot-prod"},
		{"write held", subject("ci-bot", "prod-db"), []string{"write"}, Approve, "bot-prod"},
		{"ddl denied", subject("ci-bot", "prod-db"), []string{"ddl"}, Deny, "bot-prod"},
		{"strictest wins: read+write", subject("ci-bot", "prod-db"), []string{"read", "write"}, Approve, "bot-prod"},
		{"strictest wins: read+drop", subject("ci-bot", "prod-db"), []string{"read", "write", "drop"}, Deny, "bot-prod"},
		{"unlisted class denied", subject("ci-bot", "prod-db"), []string{"privilege"}, Deny, "bot-prod"},
		{"unknown denied", subject("ci-bot", "prod-db"), []string{"unknown"}, Deny, "bot-prod"},
		{"no class denied", subject("ci-bot", "prod-db"), nil, Deny, "bot-prod"},
		{"no rule: default deny", subject("agent", "prod-db"), []string{"read"}, Deny, ""},
		{"wildcard workload", subject("agent", "stage-db"), []string{"write"}, Allow, "anyone-stage"},
		{"wildcard class keeps unknown out", subject("agent", "stage-db"), []string{"unknown"}, Deny, "anyone-stage"},
		{"wildcard with deny", subject("agent", "stage-db"), []string{"drop"}, Deny, "anyone-stage"},
		{"tcp connect", subject("ci-bot", "echo"), []string{"connect"}, Allow, "echo"},
		{"token required, none", subject("signed", "echo"), []string{"connect"}, Deny, ""},
		{"token presented", signed, []string{"connect"}, Allow, "echo"},
		{"unknown workload", subject("gone", "echo"), []string{"connect"}, Deny, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			d := cfg.Decide(tc.subject, tc.classes)
			if d.Action != tc.action || d.RuleID != tc.rule {
				t.Errorf("Decide = %+v, want %s by %q", d, tc.action, tc.rule)
			}
			if d.Reason == "" {
				t.Error("no reason")
			}
		})
	}
}

func TestSubjectRestrictions(t *testing.T) {
	t.Parallel()
	cfg, err := Parse("f.yaml", []byte("targets:\n  - {name: e, protocol: tcp, address: 1.1.1.1:1}\nworkloads:\n  - {name: w, cgroup: lg/w, uid: [1000, 1001], exe: [/usr/bin/*]}\n"))
	if err != nil {
		t.Fatal(err)
	}
	tg, _ := cfg.TargetByName("e")
	w, _ := cfg.WorkloadByName("w")
	for _, tc := range []struct {
		name string
		uid  uint32
		exe  string
		ok   bool
	}{
		{"match", 1000, "/usr/bin/psql", true},
		{"wrong uid", 0, "/usr/bin/psql", false},
		{"wrong exe", 1001, "/tmp/evil", false},
		{"exe unknown", 1001, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := cfg.Subject(KernelFacts{TargetID: tg.ID, WorkloadID: w.ID, UID: tc.uid, Exe: tc.exe})
			if (err == nil) != tc.ok {
				t.Errorf("err = %v", err)
			}
		})
	}
}
