package policy

import (
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Retention says how long the store keeps sessions (retention: in the
// config). The daemon prunes once a day what ended before Keep ago; the
// chain stays verifiable (a signed prune mark marks its new start).
type Retention struct {
	// Keep is how long a session is kept after it ends; 0: forever
	// (no retention: section).
	Keep time.Duration
}

// retention reads retention: {keep: 90d}. keep takes a Go duration
// (2160h) or a whole number of days (90d).
func (d *decoder) retention(n *yaml.Node, r *Retention) {
	seen := false
	d.mapping(n, "retention", map[string]func(*yaml.Node){
		"keep": func(v *yaml.Node) {
			seen = true
			var s string
			d.str(v, "retention: keep", &s)
			keep, err := parseKeep(s)
			switch {
			case err != nil:
				d.errorf(v, "retention: keep: want a duration such as 90d or 2160h, got %q", s)
			case keep < time.Hour:
				d.errorf(v, "retention: keep: must be at least 1h, got %s", s)
			default:
				r.Keep = keep
			}
		},
	})
	if resolveAlias(n).Kind == yaml.MappingNode && !seen {
		d.errorf(n, "retention: keep: is required (for example keep: 90d)")
	}
}

// parseKeep parses a Go duration or a number of days ("90d").
func parseKeep(s string) (time.Duration, error) {
	if days, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(days)
		if err != nil || n < 0 || n > 100*366 {
			return 0, strconv.ErrSyntax
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	return time.ParseDuration(s)
}
