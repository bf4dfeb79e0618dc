package policy

import (
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Defaults of the limits: key (see Limits). A workload's own max_sessions
// defaults to DefaultWorkloadMaxSessions.
const (
	DefaultMaxSessions         = 8192
	DefaultWorkloadMaxSessions = 1024
	DefaultMaxStatementBytes   = 1 << 20
)

// Limits are the daemon's budgets, so that one workload exhausting its own
// is refused rather than taking the daemon down for all.
type Limits struct {
	// MaxSessions bounds the sessions open at once, all workloads
	// together (the daemon also keeps it within its file descriptor
	// limit). A session past it is refused.
	MaxSessions int
	// MaxStatementBytes bounds one SQL statement (a PostgreSQL Query or
	// Parse message): a larger one is denied without being read whole or
	// parsed.
	MaxStatementBytes int
}

// WorkloadMaxSessions returns how many sessions the named workload may
// have open at once (the default for a name not in the config).
func (c *Config) WorkloadMaxSessions(name string) int {
	if w, ok := c.WorkloadByName(name); ok && w.MaxSessions > 0 {
		return w.MaxSessions
	}
	return DefaultWorkloadMaxSessions
}

func (d *decoder) limits(n *yaml.Node, l *Limits) {
	d.mapping(n, "limits", map[string]func(*yaml.Node){
		"max_sessions":        func(v *yaml.Node) { d.count(v, "limits: max_sessions", 1, 1<<20, &l.MaxSessions) },
		"max_statement_bytes": func(v *yaml.Node) { d.size(v, "limits: max_statement_bytes", 64, 1<<30, &l.MaxStatementBytes) },
	})
}

// count reads a whole number from lo to hi.
func (d *decoder) count(n *yaml.Node, what string, lo, hi int, dst *int) {
	v, err := strconv.Atoi(n.Value)
	if n.Kind != yaml.ScalarNode || err != nil || v < lo || v > hi {
		d.errorf(n, "%s must be a number from %d to %d, got %q", what, lo, hi, n.Value)
		return
	}
	*dst = v
}

// size reads a byte count: a number, optionally with a KiB, MiB or GiB
// suffix, from lo to hi bytes.
func (d *decoder) size(n *yaml.Node, what string, lo, hi int, dst *int) {
	s, mult := strings.TrimSpace(n.Value), 1
	for suffix, m := range map[string]int{"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30} {
		if t, ok := strings.CutSuffix(s, suffix); ok {
			s, mult = strings.TrimSpace(t), m
		}
	}
	v, err := strconv.Atoi(s)
	if n.Kind != yaml.ScalarNode || err != nil || v < 0 || v > hi/mult || v*mult < lo {
		d.errorf(n, "%s must be a size from %d bytes to 1GiB (a number, or with KiB, MiB, GiB), got %q", what, lo, n.Value)
		return
	}
	*dst = v * mult
}
