package shellclass

import (
	"path"
	"slices"
	"strings"

	"mvdan.cc/sh/v3/expand"
	"mvdan.cc/sh/v3/syntax"
)

// word is one shell word after quote removal.
type word struct {
	// val is the word's value with quotes removed when the word is
	// literal, and its source text otherwise.
	val string
	// lit is false when the shell computes the word at run time
	// (parameter, command, arithmetic or process substitution).
	lit bool
	// glob is true when the unquoted word holds a pattern or brace
	// expansion the shell expands at run time (*, ?, [..], {a,b}, {1..3}).
	glob bool
}

// static reports whether the word stands for exactly its value.
func (w word) static() bool { return w.lit && !w.glob }

// evalWord removes quotes from w. src is the text w was parsed from, used
// for the source form of words that are not literal.
func evalWord(src string, w *syntax.Word) word {
	var b strings.Builder
	out := word{lit: true}
	for _, p := range w.Parts {
		switch p := p.(type) {
		case *syntax.Lit:
			if hasGlob(p.Value) {
				out.glob = true
			}
			unescape(&b, p.Value, false)
		case *syntax.SglQuoted:
			if p.Dollar {
				s, _, err := expand.Format(nil, p.Value, nil)
				if err != nil {
					out.lit = false
				}
				s, _, _ = strings.Cut(s, "\x00")
				b.WriteString(s)
			} else {
				b.WriteString(p.Value)
			}
		case *syntax.DblQuoted:
			for _, q := range p.Parts {
				if l, ok := q.(*syntax.Lit); ok {
					unescape(&b, l.Value, true)
				} else {
					out.lit = false
				}
			}
		case *syntax.ExtGlob, *syntax.BraceExp:
			out.glob = true
		default:
			out.lit = false
		}
	}
	if out.lit {
		out.val = b.String()
	} else {
		out.val = source(src, w)
	}
	return out
}

// source returns the text of node n in src.
func source(src string, n syntax.Node) string {
	start, end := int(n.Pos().Offset()), int(n.End().Offset())
	if start < 0 || end > len(src) || start > end {
		return ""
	}
	return src[start:end]
}

// unescape writes s with backslash escapes removed: every escaped
// character outside quotes, and only \$ \` \" \\ and \newline inside
// double quotes (bash(1) QUOTING).
func unescape(b *strings.Builder, s string, dquoted bool) {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' || i+1 >= len(s) {
			b.WriteByte(c)
			continue
		}
		next := s[i+1]
		switch {
		case next == '\n':
			i++
		case !dquoted || strings.IndexByte("$`\"\\", next) >= 0:
			b.WriteByte(next)
			i++
		default:
			b.WriteByte(c)
		}
	}
}

// hasGlob reports whether an unquoted literal holds pattern characters or
// a brace expansion. A lone "[" (the test command) and "{}" (find's
// placeholder) are not patterns.
func hasGlob(s string) bool {
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '*', '?':
			return true
		case '[':
			if strings.IndexByte(s[i+1:], ']') >= 0 {
				return true
			}
		case '{':
			if j := strings.IndexByte(s[i+1:], '}'); j >= 0 {
				in := s[i+1 : i+1+j]
				if strings.Contains(in, ",") || strings.Contains(in, "..") {
					return true
				}
			}
		}
	}
	return false
}

// systemDirs are where the reviewed programs live. A program named by a
// path elsewhere (/tmp/ls, ./ls) is not the reviewed program.
var systemDirs = []string{"/bin", "/usr/bin", "/sbin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin",
	"/usr/lib/openssh", "/usr/libexec/openssh", "/usr/libexec"}

// base returns the program name of a command word: "/usr/bin/rm" is "rm".
// A path outside the system directories stays whole, so a program of
// that name planted elsewhere is never taken for the reviewed one.
func base(s string) string {
	i := strings.LastIndexByte(s, '/')
	if i < 0 || i+1 >= len(s) {
		return s
	}
	dir := path.Clean(s[:i+1])
	if dir == "/" || !slices.Contains(systemDirs, dir) {
		return s
	}
	return s[i+1:]
}
