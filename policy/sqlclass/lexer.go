package sqlclass

import (
	"strings"

	pg_query "github.com/pganalyze/pg_query_go/v6"
)

// The classifier reads SQL as PostgreSQL does with its defaults. Two
// settings make the server read the same bytes differently, and so could
// hide a statement inside what the classifier takes for a string literal:
//
//   - standard_conforming_strings = off: a backslash in '...' escapes the
//     next character, so 'x\' ... is not closed where the classifier
//     closes it;
//   - a client encoding whose multibyte characters can end in the byte of a
//     backslash (SJIS, BIG5, GBK, UHC, GB18030, JOHAB, SHIFT_JIS_2004): the
//     server converts them first, so E'…\' is closed where the classifier
//     reads an escaped quote.
//
// loopgate refuses both: in startup parameters, in the server's reported
// settings, and in SET and set_config (class unknown).

// unsafeEncodings are PostgreSQL's client-only encodings, by
// clean_encoding_name (lower case, letters and digits only), aliases
// included (encnames.c).
var unsafeEncodings = map[string]bool{
	"sjis": true, "shiftjis": true, "mskanji": true, "win932": true, "windows932": true,
	"big5": true, "win950": true, "windows950": true,
	"gbk": true, "win936": true, "windows936": true,
	"uhc": true, "win949": true, "windows949": true,
	"gb18030": true, "johab": true, "shiftjis2004": true,
}

// UnsafeSetting reports whether setting name to value would make the
// server read SQL differently from the classifier (see above). Names are
// matched case-insensitively; unknown names are safe.
func UnsafeSetting(name, value string) bool {
	switch strings.ToLower(name) {
	case "standard_conforming_strings":
		switch strings.ToLower(strings.TrimSpace(value)) {
		case "on", "true", "yes", "1", "t", "tr", "tru", "y", "ye":
			return false
		}
		return true
	case "client_encoding":
		var clean strings.Builder
		for _, r := range strings.ToLower(value) {
			if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
				clean.WriteRune(r)
			}
		}
		return unsafeEncodings[clean.String()]
	}
	return false
}

// unsafeSet reports whether a SET statement changes a setting the
// classifier depends on to a value it cannot follow (or one it cannot see).
func unsafeSet(s *pg_query.VariableSetStmt) bool {
	name := strings.ToLower(s.Name)
	if name != "standard_conforming_strings" && name != "client_encoding" {
		return false
	}
	switch s.Kind {
	case pg_query.VariableSetKind_VAR_SET_DEFAULT, pg_query.VariableSetKind_VAR_RESET, pg_query.VariableSetKind_VAR_RESET_ALL:
		return false // back to the session's start, which was checked
	case pg_query.VariableSetKind_VAR_SET_VALUE:
	default:
		return true
	}
	if len(s.Args) != 1 {
		return true
	}
	v, ok := constText(s.Args[0])
	return !ok || UnsafeSetting(name, v)
}

// constText is the text of a constant (string, integer or boolean).
func constText(n *pg_query.Node) (string, bool) {
	c := n.GetAConst()
	switch {
	case c == nil:
		return "", false
	case c.GetSval() != nil:
		return c.GetSval().Sval, true
	case c.GetIval() != nil:
		if c.GetIval().Ival == 0 {
			return "0", true
		}
		return "1", true
	case c.GetBoolval() != nil:
		if c.GetBoolval().Boolval {
			return "on", true
		}
		return "off", true
	}
	return "", false
}
