package http

import (
	"errors"
	"strings"
	"unicode/utf8"
)

// maxPathLen bounds a request path (escaped form).
const maxPathLen = 8 << 10

// ErrAmbiguousPath is returned for a path that servers may read in more
// than one way; such a request is refused rather than guessed at.
var ErrAmbiguousPath = errors.New("ambiguous request path")

// normalizePath turns a request path as sent (escaped, origin-form) into
// the path decisions are made on and the path sent upstream, which are the
// same path, so what was decided is what the target sees:
//
//   - "." segments go and ".." climbs one segment (never above /);
//   - empty segments ("//") go;
//   - percent-escapes are decoded for matching (clean), and re-escaped
//     canonically for forwarding (escaped).
//
// Anything servers disagree on is refused with ErrAmbiguousPath: an
// escaped slash or backslash (%2f, %5c), an escaped dot segment (%2e%2e),
// a raw backslash, ';' (path parameters some servers cut at), NUL and
// other control bytes, bad escapes, bytes that are not UTF-8 once decoded
// (overlong forms like %c0%ae), a climb above the root, or a path over
// 8 KiB.
func normalizePath(raw string) (clean, escaped string, err error) {
	if len(raw) > maxPathLen {
		return "", "", errors.New("request path too long")
	}
	if raw == "" {
		return "/", "/", nil
	}
	if raw[0] != '/' {
		return "", "", ErrAmbiguousPath
	}
	var segs []string
	for seg := range strings.SplitSeq(raw[1:], "/") {
		if strings.ContainsAny(seg, "\\;") {
			return "", "", ErrAmbiguousPath
		}
		dec, encoded, ok := unescapeSegment(seg)
		if !ok {
			return "", "", ErrAmbiguousPath
		}
		switch dec {
		case "":
			continue
		case ".", "..":
			if encoded {
				return "", "", ErrAmbiguousPath
			}
			if dec == ".." {
				if len(segs) == 0 {
					return "", "", ErrAmbiguousPath
				}
				segs = segs[:len(segs)-1]
			}
			continue
		}
		segs = append(segs, dec)
	}
	if raw == "/" || len(segs) == 0 {
		return "/", "/", nil
	}
	// "/a/" and "/a/b/.." name a directory: keep its trailing slash.
	last := raw[strings.LastIndexByte(raw, '/')+1:]
	trailing := last == "" || last == "." || last == ".."
	var c, e strings.Builder
	for _, s := range segs {
		c.WriteByte('/')
		c.WriteString(s)
		e.WriteByte('/')
		escapeSegment(&e, s)
	}
	if trailing {
		c.WriteByte('/')
		e.WriteByte('/')
	}
	return c.String(), e.String(), nil
}

// unescapeSegment decodes one segment's escapes. encoded reports whether
// any escape was present; ok is false for bad escapes, escaped '/' or '\',
// control bytes or invalid UTF-8.
func unescapeSegment(s string) (dec string, encoded, ok bool) {
	if !strings.Contains(s, "%") {
		for i := 0; i < len(s); i++ {
			if s[i] < 0x20 || s[i] == 0x7f {
				return "", false, false
			}
		}
		return s, false, utf8.ValidString(s)
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '%' {
			if i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2]) {
				return "", true, false
			}
			c = unhex(s[i+1])<<4 | unhex(s[i+2])
			i += 2
			if c == '/' || c == '\\' {
				return "", true, false
			}
		}
		if c < 0x20 || c == 0x7f {
			return "", true, false
		}
		b = append(b, c)
	}
	return string(b), true, utf8.Valid(b)
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	}
	return c - 'a' + 10
}

// escapeSegment writes s with everything but RFC 3986 pchar escaped.
func escapeSegment(b *strings.Builder, s string) {
	const hexd = "0123456789ABCDEF"
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-._~!$&'()*+,=:@", c) >= 0 {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hexd[c>>4])
		b.WriteByte(hexd[c&0xf])
	}
}
