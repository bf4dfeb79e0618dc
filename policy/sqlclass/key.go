package sqlclass

// cacheKey returns the key a query string is cached under: the text with
// every numeric literal replaced by 0, so "... WHERE aid = 17" and "...
// WHERE aid = 4242" share one parse. Only numbers are folded: no class
// depends on a number's value, while string literals can (set_config('role',
// ...)). single reports that the text holds one statement (a trailing ';'
// aside); keys are only used for single statements, whose text is the whole
// string. ok is false when the lexer meets something it does not know how to
// skip, and the caller then keys by the exact text.
//
// This lexer only finds literals, comments and quoted text so it can leave
// them alone; classification itself is always PostgreSQL's parser.
func cacheKey(sql string) (key string, single, ok bool) {
	out := make([]byte, 0, len(sql))
	statements := 0
	sawToken := false
	i := 0
	for i < len(sql) {
		c := sql[i]
		switch {
		case c == '-' && i+1 < len(sql) && sql[i+1] == '-':
			for i < len(sql) && sql[i] != '\n' {
				i++
			}
			out = append(out, ' ')
			continue
		case c == '/' && i+1 < len(sql) && sql[i+1] == '*':
			depth := 0
			for i < len(sql) {
				if sql[i] == '/' && i+1 < len(sql) && sql[i+1] == '*' {
					depth++
					i += 2
					continue
				}
				if sql[i] == '*' && i+1 < len(sql) && sql[i+1] == '/' {
					depth--
					i += 2
					if depth == 0 {
						break
					}
					continue
				}
				i++
			}
			if depth != 0 {
				return "", false, false
			}
			out = append(out, ' ')
			continue
		case c == '\'' || c == '"':
			// A quoted string or identifier, copied verbatim. E'' strings
			// (backslash escapes) are refused: keyed by exact text.
			if c == '\'' && i > 0 && (sql[i-1] == 'E' || sql[i-1] == 'e') {
				return "", false, false
			}
			j := i + 1
			for {
				if j >= len(sql) {
					return "", false, false
				}
				if sql[j] == c {
					if j+1 < len(sql) && sql[j+1] == c {
						j += 2
						continue
					}
					break
				}
				j++
			}
			out = append(out, sql[i:j+1]...)
			i = j + 1
			sawToken = true
			continue
		case c == '$':
			// $n parameters are kept; $tag$ ... $tag$ quoting is refused.
			j := i + 1
			for j < len(sql) && sql[j] >= '0' && sql[j] <= '9' {
				j++
			}
			if j > i+1 && (j >= len(sql) || !isIdent(sql[j])) {
				out = append(out, sql[i:j]...)
				i = j
				sawToken = true
				continue
			}
			return "", false, false
		case c >= '0' && c <= '9' && (len(out) == 0 || !isIdent(out[len(out)-1])):
			j := i
			for j < len(sql) && (isIdent(sql[j]) || sql[j] == '.') {
				j++
			}
			out = append(out, '0')
			i = j
			sawToken = true
			continue
		case c == ';':
			if sawToken {
				statements++
			}
			sawToken = false
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
		default:
			sawToken = true
		}
		out = append(out, c)
		i++
	}
	if sawToken {
		statements++
	}
	return string(out), statements == 1, true
}

func isIdent(c byte) bool {
	return c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c >= 0x80
}
