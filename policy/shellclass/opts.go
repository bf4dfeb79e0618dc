package shellclass

import (
	"slices"
	"strings"
)

// opt is one option of a command line.
type opt struct {
	name string // "-o" or "--output"
	val  word   // its value, when the option takes one
	has  bool   // a value was given
}

// argv holds a command's options and operands.
type argv struct {
	opts     []opt
	operands []word
	// dynamic is true when a computed word stood where an option could
	// be, so the options are not known.
	dynamic bool
}

// has reports whether any option is one of names. A long name also
// matches an abbreviation of it (GNU getopt_long takes unique prefixes).
func (a argv) has(names ...string) bool {
	for _, o := range a.opts {
		for _, n := range names {
			if o.name == n || (strings.HasPrefix(n, "--") && len(o.name) > 3 && strings.HasPrefix(n, o.name)) {
				return true
			}
		}
	}
	return false
}

// get returns the last value of any option in names.
func (a argv) get(names ...string) (word, bool) {
	var w word
	found := false
	for _, o := range a.opts {
		if slices.Contains(names, o.name) && o.has {
			w, found = o.val, true
		}
	}
	return w, found
}

// parseArgs splits args into options and operands. short holds the short
// options that take a value, long the long ones. With permute, options may
// follow operands (GNU getopt); without, the first operand ends the
// options and the rest are operands (the words of a wrapped command).
// "--" ends options either way.
func parseArgs(args []word, short string, long []string, permute bool) argv {
	var a argv
	for i := 0; i < len(args); i++ {
		w := args[i]
		if !w.static() {
			if !w.lit || strings.HasPrefix(w.val, "-") || !permute {
				a.dynamic = true
			}
			if !permute {
				a.operands = append(a.operands, args[i:]...)
				return a
			}
			a.operands = append(a.operands, w)
			continue
		}
		s := w.val
		if s == "--" {
			a.operands = append(a.operands, args[i+1:]...)
			return a
		}
		if len(s) < 2 || s[0] != '-' {
			if !permute {
				a.operands = append(a.operands, args[i:]...)
				return a
			}
			a.operands = append(a.operands, w)
			continue
		}
		if strings.HasPrefix(s, "--") {
			name, val, hasVal := strings.Cut(s, "=")
			o := opt{name: name}
			if hasVal {
				o.val, o.has = word{val: val, lit: true}, true
			} else if slices.Contains(long, name) && i+1 < len(args) {
				i++
				o.val, o.has = args[i], true
				if !args[i].lit {
					a.dynamic = true
				}
			}
			a.opts = append(a.opts, o)
			continue
		}
		for j := 1; j < len(s); j++ {
			o := opt{name: "-" + s[j:j+1]}
			if strings.IndexByte(short, s[j]) >= 0 {
				if j+1 < len(s) {
					o.val, o.has = word{val: s[j+1:], lit: true}, true
				} else if i+1 < len(args) {
					i++
					o.val, o.has = args[i], true
					if !args[i].lit {
						a.dynamic = true
					}
				}
				a.opts = append(a.opts, o)
				break
			}
			a.opts = append(a.opts, o)
		}
	}
	return a
}

// vals returns the values of words.
func vals(ws []word) []string {
	out := make([]string, len(ws))
	for i, w := range ws {
		out[i] = w.val
	}
	return out
}

// allStatic reports whether every word is literal and pattern-free.
func allStatic(ws []word) bool {
	for _, w := range ws {
		if !w.static() {
			return false
		}
	}
	return true
}
