package policy

import (
	"fmt"
	"strconv"
	"strings"
)

// JSONPath is a parsed JSON-path mask ("$.items[*].email"): a value whose
// path it matches is masked whole, with everything inside it. Supported:
// $ (the root), .key and ['key'], .* and [*] (any key or index), [N], and
// ..key (key at any depth).
type JSONPath struct {
	Text  string
	Steps []JSONStep
}

// JSONStep is one step of a JSONPath.
type JSONStep struct {
	// Key is an object key; "" with Index < 0 means any key or index.
	Key string
	// Index is an array index, or -1.
	Index int
	// Any matches any one key or index.
	Any bool
	// Deep lets any number of steps come before this one (..).
	Deep bool
}

// ParseJSONPath parses a JSON path mask.
func ParseJSONPath(s string) (JSONPath, error) {
	p := JSONPath{Text: s}
	if !strings.HasPrefix(s, "$") {
		return p, fmt.Errorf("%q: a JSON path starts with $", s)
	}
	rest := s[1:]
	for rest != "" {
		st := JSONStep{Index: -1}
		switch {
		case strings.HasPrefix(rest, ".."):
			st.Deep = true
			rest = rest[2:]
			if strings.HasPrefix(rest, "[") {
				break
			}
			fallthrough
		case strings.HasPrefix(rest, "."):
			rest = strings.TrimPrefix(rest, ".")
			end := strings.IndexAny(rest, ".[")
			if end < 0 {
				end = len(rest)
			}
			key := rest[:end]
			rest = rest[end:]
			if key == "" {
				return p, fmt.Errorf("%q: empty key", s)
			}
			if key == "*" {
				st.Any = true
			} else {
				st.Key = key
			}
			p.Steps = append(p.Steps, st)
			continue
		}
		if !strings.HasPrefix(rest, "[") {
			return p, fmt.Errorf("%q: want . or [ at %q", s, rest)
		}
		end := strings.IndexByte(rest, ']')
		if end < 0 {
			return p, fmt.Errorf("%q: unclosed [", s)
		}
		in := rest[1:end]
		rest = rest[end+1:]
		switch {
		case in == "*":
			st.Any = true
		case len(in) >= 2 && (in[0] == '\'' && in[len(in)-1] == '\'' || in[0] == '"' && in[len(in)-1] == '"'):
			st.Key = in[1 : len(in)-1]
		default:
			n, err := strconv.Atoi(in)
			if err != nil || n < 0 {
				return p, fmt.Errorf("%q: [%s] is neither *, an index nor a quoted key", s, in)
			}
			st.Index = n
		}
		p.Steps = append(p.Steps, st)
	}
	if len(p.Steps) == 0 {
		return p, fmt.Errorf("%q: masking the whole document: name a path below $", s)
	}
	return p, nil
}

// JSONElem is one step of a concrete path in a document: a key, or an
// index when Key is "" and IsIndex.
type JSONElem struct {
	Key     string
	Index   int
	IsIndex bool
}

// Match reports whether the path matches the concrete path at exactly.
func (p JSONPath) Match(at []JSONElem) bool { return matchJSON(p.Steps, at) }

func matchJSON(steps []JSONStep, at []JSONElem) bool {
	if len(steps) == 0 {
		return len(at) == 0
	}
	st := steps[0]
	if st.Deep {
		nd := st
		nd.Deep = false
		for i := 0; i < len(at); i++ {
			if matchJSON(append([]JSONStep{nd}, steps[1:]...), at[i:]) {
				return true
			}
		}
		return false
	}
	if len(at) == 0 {
		return false
	}
	e := at[0]
	switch {
	case st.Any:
	case st.Index >= 0:
		if !e.IsIndex || e.Index != st.Index {
			return false
		}
	default:
		if e.IsIndex || e.Key != st.Key {
			return false
		}
	}
	return matchJSON(steps[1:], at[1:])
}
