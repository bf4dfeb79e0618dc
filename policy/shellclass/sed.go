package shellclass

import "strings"

// sedScript classifies a sed script: Write when a command or s///
// flag writes a file (w, W), Unknown when one runs a command (e, s///e)
// or the script does not scan, Read otherwise. It reads GNU sed syntax
// only as far as needed to find commands.
func sedScript(s string) (string, string) {
	i := 0
	skipTo := func(stop string) {
		for i < len(s) && strings.IndexByte(stop, s[i]) < 0 {
			i++
		}
	}
	// delimited skips a delimited part (regex or replacement) ending in
	// delim, honouring backslash escapes; false if it does not end.
	delimited := func(delim byte) bool {
		for i < len(s) {
			switch s[i] {
			case '\\':
				i += 2
				continue
			case delim:
				i++
				return true
			}
			i++
		}
		return false
	}
	address := func() bool {
		switch {
		case i < len(s) && s[i] == '/':
			i++
			return delimited('/')
		case i+1 < len(s) && s[i] == '\\':
			d := s[i+1]
			i += 2
			return delimited(d)
		}
		for i < len(s) && (s[i] >= '0' && s[i] <= '9' || s[i] == '$' || s[i] == '~' || s[i] == '+') {
			i++
		}
		return true
	}
	for i < len(s) {
		for i < len(s) && strings.IndexByte(" \t\n;{}", s[i]) >= 0 {
			i++
		}
		if i >= len(s) {
			break
		}
		if !address() {
			return Unknown, "sed script does not parse"
		}
		for i < len(s) && (s[i] == ',' || s[i] == ' ') {
			i++
			if !address() {
				return Unknown, "sed script does not parse"
			}
		}
		for i < len(s) && (s[i] == '!' || s[i] == ' ' || s[i] == 'I' || s[i] == 'M') {
			i++
		}
		if i >= len(s) {
			break
		}
		cmd := s[i]
		i++
		switch cmd {
		case '{', '}', '=', 'd', 'D', 'g', 'G', 'h', 'H', 'n', 'N', 'p', 'P', 'x', 'z', 'F':
		case '#', ':', 'a', 'i', 'c', 'r', 'R', 'b', 't', 'T', 'v':
			// Text, labels and read files run to the end of the line
			// (labels and branches also end at ';').
			if cmd == 'b' || cmd == 't' || cmd == 'T' || cmd == 'v' || cmd == ':' {
				skipTo(";\n")
			} else {
				for i < len(s) && s[i] != '\n' {
					if s[i] == '\\' {
						i++
					}
					i++
				}
			}
		case 'l', 'L', 'q', 'Q':
			for i < len(s) && (s[i] >= '0' && s[i] <= '9' || s[i] == ' ') {
				i++
			}
		case 'w', 'W':
			return Write, "sed script writes a file (" + string(cmd) + ")"
		case 'e':
			return Unknown, "sed script runs a command (e)"
		case 's', 'y':
			if i >= len(s) || s[i] == '\n' || s[i] == '\\' {
				return Unknown, "sed script does not parse"
			}
			d := s[i]
			i++
			if !delimited(d) || !delimited(d) {
				return Unknown, "sed script does not parse"
			}
			if cmd == 'y' {
				continue
			}
			for i < len(s) && strings.IndexByte("gpiImM0123456789ew", s[i]) >= 0 {
				switch s[i] {
				case 'w':
					return Write, "sed s///w writes a file"
				case 'e':
					return Unknown, "sed s///e runs a command"
				}
				i++
			}
		default:
			return Unknown, "sed script has a command this classifier does not know: " + string(cmd)
		}
	}
	return Read, "sed script only reads"
}
