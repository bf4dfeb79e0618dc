package sqlpolicy_test

import (
	"testing"

	"github.com/loopgate/loopgate/policy"
	"github.com/loopgate/loopgate/policy/sqlpolicy"
)

func TestExplain(t *testing.T) {
	t.Parallel()
	cfg, err := policy.Parse("test.yaml", []byte(`targets:
  - {name: db, protocol: postgres, address: 127.0.0.1:5432}
workloads:
  - {name: w, cgroup: lg/w}
masks:
  - {name: pii, columns: [users.email]}
  - {name: mail, detect: email}
rules:
  - {id: r, workloads: [w], targets: [db], allow: [read], mask: [pii, mail]}
`))
	if err != nil {
		t.Fatal(err)
	}
	tg, _ := cfg.TargetByName("db")
	sub := &policy.Subject{Workload: "w", Target: tg}
	learned := func(rule string) map[string][]string {
		if rule != "r" {
			t.Errorf("learned asked for rule %q", rule)
		}
		return map[string][]string{"mail": {"people.contact"}}
	}
	for _, tc := range []struct {
		sql  string
		want policy.Action
	}{
		{"SELECT email FROM users", policy.Allow},
		{"SELECT upper(email) FROM users", policy.Deny},                   // computes on a masked column
		{"SELECT replace(contact, '@', ' at ') FROM people", policy.Deny}, // a learned column
		{"SELECT contact FROM people", policy.Allow},
		{"DELETE FROM users", policy.Deny},
		{"SELECT 1; DROP TABLE users", policy.Deny},
	} {
		ex, err := sqlpolicy.Explain(cfg, sub, tc.sql, learned)
		if err != nil {
			t.Fatal(err)
		}
		if ex.Decision.Action != tc.want {
			t.Errorf("%s: %s (%s), want %s", tc.sql, ex.Decision.Action, ex.Decision.Reason, tc.want)
		}
	}
}
