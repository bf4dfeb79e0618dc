// Package mask finds and hides sensitive values: detectors for common kinds
// of secret and personal data, and the modes that replace them (redact,
// partial, keyed hash). Protocol handlers decide where values are (columns,
// error details, notification payloads); this package only looks at bytes.
//
// Detectors are regular expressions over values (never over SQL), confirmed
// by checksums where the format has one (Luhn for cards, mod 97 for IBANs),
// so digits that merely look like a card are left alone.
//
// A Masker is immutable and safe for concurrent use. Learned is the set of
// table columns detectors were found to fire on, which a Masker can be
// given as column masks (WithColumns); the protocol handler says which
// column a value came from (ScanColumn).
package mask

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path"
	"regexp"
	"slices"
	"strings"

	"github.com/loopgate/loopgate/policy"
)

type detector struct {
	re    *regexp.Regexp
	check func([]byte) bool
}

var detectors = map[string]detector{
	"email":       {re: regexp.MustCompile(`[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}`)},
	"card":        {re: regexp.MustCompile(`\b\d(?:[ -]?\d){12,18}\b`), check: luhn},
	"ssn":         {re: regexp.MustCompile(`\b\d{3}-\d{2}-\d{4}\b`)},
	"phone":       {re: regexp.MustCompile(`(?:\+\d{1,3}[ .-]?)?\(?\b\d{3}\)?[ .-]?\d{3}[ .-]\d{4}\b`)},
	"iban":        {re: regexp.MustCompile(`\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b`), check: ibanOK},
	"aws-key":     {re: regexp.MustCompile(`\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA)[A-Z0-9]{16}\b`)},
	"jwt":         {re: regexp.MustCompile(`\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]+`)},
	"private-key": {re: regexp.MustCompile(`-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z0-9 ]*PRIVATE KEY-----`)},
}

func luhn(b []byte) bool {
	sum, n, double := 0, 0, false
	for i := len(b) - 1; i >= 0; i-- {
		c := b[i]
		if c < '0' || c > '9' {
			continue
		}
		d := int(c - '0')
		if double {
			d *= 2
			if d > 9 {
				d -= 9
			}
		}
		sum += d
		n++
		double = !double
	}
	return n >= 13 && sum%10 == 0
}

func ibanOK(b []byte) bool {
	s := strings.ReplaceAll(string(b), " ", "")
	if len(s) < 15 || len(s) > 34 {
		return false
	}
	s = s[4:] + s[:4]
	rem := 0
	for _, c := range s {
		switch {
		case c >= '0' && c <= '9':
			rem = (rem*10 + int(c-'0')) % 97
		case c >= 'A' && c <= 'Z':
			v := int(c-'A') + 10
			rem = (rem*100 + v) % 97
		default:
			return false
		}
	}
	return rem == 1
}

// rule is one configured mask.
type rule struct {
	name    string
	columns []string // column patterns, lower-case; "table.col" matches col
	det     *detector
	mode    string
	paths   []policy.JSONPath // JSON paths masked in HTTP bodies (json.go)
}

// Masker applies a set of configured masks.
type Masker struct {
	rules []rule
	key   []byte
	learn func(mask, column string) // nil: detectors do not learn
}

// New builds a masker for the named masks of cfg. key keys the hash mode
// (the same key gives the same token for the same value, so joins line up).
// Unknown names are an error: the config loader prevents them.
func New(cfg *policy.Config, names []string, key []byte) (*Masker, error) {
	m := &Masker{key: key}
	for _, name := range names {
		i := -1
		for j := range cfg.Masks {
			if cfg.Masks[j].Name == name {
				i = j
			}
		}
		if i < 0 {
			return nil, fmt.Errorf("mask %q is not configured", name)
		}
		cm := cfg.Masks[i]
		r := rule{name: cm.Name, mode: cm.Mode}
		for _, c := range cm.Columns {
			r.columns = append(r.columns, strings.ToLower(c))
		}
		for _, p := range cm.Paths {
			jp, err := policy.ParseJSONPath(p)
			if err != nil {
				return nil, fmt.Errorf("mask %q: %w", name, err)
			}
			r.paths = append(r.paths, jp)
		}
		if cm.Detect != "" {
			d, ok := detectors[cm.Detect]
			if !ok {
				return nil, fmt.Errorf("mask %q: unknown detector %q", name, cm.Detect)
			}
			r.det = &d
		}
		m.rules = append(m.rules, r)
	}
	return m, nil
}

// Empty reports whether the masker masks nothing.
func (m *Masker) Empty() bool { return m == nil || len(m.rules) == 0 }

// Column returns the mode masking a result column, or "" if none does.
// table and column are the column's real table and name when the result
// column is a plain column of a table ("" when it is an expression); alias
// is the name the result shows. A pattern "table.col" matches the real
// table and name (or, with the table unknown, the name alone: more, never
// less); "*.col" and "col" match the real name or the alias, so renaming a
// column (SELECT ssn AS x) does not unmask it.
func (m *Masker) Column(table, column, alias string) string {
	if m == nil {
		return ""
	}
	table, column, alias = strings.ToLower(table), strings.ToLower(column), strings.ToLower(alias)
	for _, r := range m.rules {
		for _, p := range r.columns {
			pt, pc := "*", p
			if i := strings.LastIndexByte(p, '.'); i >= 0 {
				pt, pc = p[:i], p[i+1:]
			}
			nameOK := false
			for _, n := range []string{column, alias} {
				if ok, _ := path.Match(pc, n); ok && n != "" {
					nameOK = true
				}
			}
			tableOK := pt == "*" || table == ""
			if !tableOK {
				tableOK, _ = path.Match(pt, table)
			}
			if nameOK && tableOK {
				return r.mode
			}
		}
	}
	return ""
}

// NamesColumn reports whether a column of this name is masked in some
// table (a pattern's table part is ignored: where the table is not known,
// the name alone decides).
func (m *Masker) NamesColumn(name string) bool {
	if m == nil {
		return false
	}
	name = strings.ToLower(name)
	for _, r := range m.rules {
		for _, p := range r.columns {
			if i := strings.LastIndexByte(p, '.'); i >= 0 {
				p = p[i+1:]
			}
			if ok, _ := path.Match(p, name); ok {
				return true
			}
		}
	}
	return false
}

// HasColumns reports whether any mask names columns.
func (m *Masker) HasColumns() bool {
	if m == nil {
		return false
	}
	for _, r := range m.rules {
		if len(r.columns) > 0 {
			return true
		}
	}
	return false
}

// HasDetectors reports whether values must be scanned.
func (m *Masker) HasDetectors() bool {
	if m == nil {
		return false
	}
	for _, r := range m.rules {
		if r.det != nil {
			return true
		}
	}
	return false
}

// Value applies a mode to a whole value.
func (m *Masker) Value(mode string, v []byte) []byte {
	switch mode {
	case "partial":
		rs := []rune(string(v))
		keep := 4
		if len(rs) <= keep {
			return []byte(strings.Repeat("*", len(rs)))
		}
		return []byte(strings.Repeat("*", len(rs)-keep) + string(rs[len(rs)-keep:]))
	case "hash":
		h := hmac.New(sha256.New, m.key)
		h.Write(v)
		return []byte("hmac:" + hex.EncodeToString(h.Sum(nil))[:24])
	default:
		return []byte("[redacted]")
	}
}

// Scan replaces every detected value in v. It returns v itself when nothing
// was found.
func (m *Masker) Scan(v []byte) []byte { return m.ScanColumn(v, "") }

// ScanColumn is Scan for a value of the table column named column
// ("table.column", "" when the value is not a table column's). When a
// detector fires on it and the masker learns (Learning), the column is
// reported as holding what that mask detects.
func (m *Masker) ScanColumn(v []byte, column string) []byte {
	if m == nil {
		return v
	}
	out := v
	for _, r := range m.rules {
		if r.det == nil {
			continue
		}
		d := r.det
		mode := r.mode
		fired := false
		out = d.re.ReplaceAllFunc(out, func(match []byte) []byte {
			if d.check != nil && !d.check(match) {
				return match
			}
			fired = true
			return m.Value(mode, match)
		})
		if fired && column != "" && m.learn != nil {
			m.learn(r.name, column)
		}
	}
	return out
}

// Learning returns a copy of m that calls learn(mask, column) when a
// detector of the named mask fires on a value of a table column given to
// ScanColumn. learn must be safe for concurrent use and must not block.
func (m *Masker) Learning(learn func(mask, column string)) *Masker {
	if m == nil {
		return nil
	}
	c := *m
	c.learn = learn
	return &c
}

// Learns reports whether m reports the columns its detectors fire on.
func (m *Masker) Learns() bool { return m != nil && m.learn != nil && m.HasDetectors() }

// WithColumns returns a copy of m in which each mask named in extra also
// masks the columns listed for it ("table.column" patterns), in its own
// mode: columns its detector was found to fire on (see Learned). Names of
// masks m does not hold are ignored. It returns m itself when there is
// nothing to add.
func (m *Masker) WithColumns(extra map[string][]string) *Masker {
	if m == nil || len(extra) == 0 {
		return m
	}
	c := *m
	c.rules = slices.Clone(m.rules)
	changed := false
	for i := range c.rules {
		cols := extra[c.rules[i].name]
		if len(cols) == 0 {
			continue
		}
		changed = true
		c.rules[i].columns = slices.Clone(c.rules[i].columns)
		for _, col := range cols {
			c.rules[i].columns = append(c.rules[i].columns, strings.ToLower(col))
		}
	}
	if !changed {
		return m
	}
	return &c
}

// String is Scan for strings.
func (m *Masker) String(s string) string { return string(m.Scan([]byte(s))) }
