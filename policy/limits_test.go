package policy

import (
	"strings"
	"testing"
)

func TestLimits(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		yaml      string
		sessions  int
		stmt      int
		workloadW int    // WorkloadMaxSessions("w")
		err       string // substring, including position
	}{
		{name: "defaults", yaml: "workloads:\n  - {name: w, cgroup: x}\n",
			sessions: DefaultMaxSessions, stmt: DefaultMaxStatementBytes, workloadW: DefaultWorkloadMaxSessions},
		{name: "set", yaml: "limits: {max_sessions: 100, max_statement_bytes: 64KiB}\nworkloads:\n  - {name: w, cgroup: x, max_sessions: 7}\n",
			sessions: 100, stmt: 64 << 10, workloadW: 7},
		{name: "plain bytes", yaml: "limits: {max_statement_bytes: 4096}\n", sessions: DefaultMaxSessions, stmt: 4096, workloadW: DefaultWorkloadMaxSessions},
		{name: "zero sessions", yaml: "limits: {max_sessions: 0}\n", err: `f.yaml:1:24: limits: max_sessions must be a number from 1`},
		{name: "bad size", yaml: "limits:\n  max_statement_bytes: 1TB\n", err: `f.yaml:2:24: limits: max_statement_bytes must be a size`},
		{name: "too big", yaml: "limits: {max_statement_bytes: 2GiB}\n", err: `max_statement_bytes must be a size`},
		{name: "unknown key", yaml: "limits: {max_conns: 1}\n", err: `f.yaml:1:10: limits: unknown key "max_conns"`},
		{name: "workload", yaml: "workloads:\n  - {name: w, cgroup: x, max_sessions: -1}\n", err: `f.yaml:2:40: workload max_sessions must be a number`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := Parse("f.yaml", []byte(tc.yaml))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Limits.MaxSessions != tc.sessions || cfg.Limits.MaxStatementBytes != tc.stmt {
				t.Errorf("limits = %+v", cfg.Limits)
			}
			if got := cfg.WorkloadMaxSessions("w"); got != tc.workloadW {
				t.Errorf("WorkloadMaxSessions(w) = %d, want %d", got, tc.workloadW)
			}
		})
	}
}
