package postgres

import (
	"bytes"
	"fmt"

	"github.com/loopgate/loopgate/policy/mask"
	"github.com/loopgate/loopgate/policy/sqlclass"
)

// copyMask applies column masks to the rows of a COPY ... TO STDOUT in
// text or CSV format. PostgreSQL sends one row per CopyData message. The
// columns are known from the statement, or from a header line loopgate
// asked the server for (dropped again if the agent did not ask for one).
type copyMask struct {
	csv               bool
	delim, quote, esc byte
	null              []byte
	table             string
	names             []string // source column of each position; nil until the header
	modes             []string // mask mode of each position ("" none)
	masker            *mask.Masker
	dropHeader        bool // the header is ours: read it, do not forward it
	headerPending     bool // the next row is the header
}

func newCopyMask(co *sqlclass.CopyOut, m *mask.Masker, ourHeader bool) *copyMask {
	cm := &copyMask{csv: co.Format == "csv", delim: co.Delimiter[0], null: []byte(co.Null), table: co.Table, masker: m,
		dropHeader: ourHeader && !co.Header, headerPending: co.Header || ourHeader}
	if cm.csv {
		cm.quote, cm.esc = co.Quote[0], co.Escape[0]
	}
	if !ourHeader {
		cm.setNames(co.Columns)
	}
	return cm
}

func (cm *copyMask) setNames(names []string) {
	cm.names = names
	cm.modes = make([]string, len(names))
	for i, n := range names {
		if n != "" {
			cm.modes[i] = cm.masker.Column(cm.table, n, "")
		}
	}
}

// columns checks the CopyOutResponse's column count against what the masks
// were laid out for.
func (cm *copyMask) columns(n int) error {
	if cm.names != nil && n != len(cm.names) {
		return fmt.Errorf("COPY sends %d columns, masks were laid out for %d", n, len(cm.names))
	}
	return nil
}

// row masks one row (a CopyData payload). It returns the row to send, or
// nil to send nothing (loopgate's own header).
func (cm *copyMask) row(line []byte) ([]byte, error) {
	fields, err := cm.split(line)
	if err != nil {
		return nil, err
	}
	if cm.headerPending {
		cm.headerPending = false
		if cm.names == nil {
			names := make([]string, len(fields))
			for i, f := range fields {
				names[i] = string(cm.value(f))
			}
			cm.setNames(names)
		}
		if cm.dropHeader {
			return []byte{}, nil
		}
		return line, nil
	}
	if len(fields) != len(cm.modes) {
		return nil, fmt.Errorf("COPY row of %d fields, expected %d", len(fields), len(cm.modes))
	}
	masked := false
	for i, f := range fields {
		masked = masked || cm.modes[i] != "" && !cm.isNull(f)
	}
	if !masked {
		return line, nil
	}
	out := make([]byte, 0, len(line)+16)
	for i, f := range fields {
		if i > 0 {
			out = append(out, cm.delim)
		}
		raw := line[f.start:f.end]
		if cm.modes[i] == "" || cm.isNull(f) {
			out = append(out, raw...)
			continue
		}
		out = cm.encode(out, cm.masker.Value(cm.modes[i], cm.value(f)))
	}
	return append(out, '\n'), nil
}

// field is one field of a row: its bytes as written, and whether it was
// quoted (CSV).
type field struct {
	start, end int
	quoted     bool
	line       []byte
}

func (cm *copyMask) isNull(f field) bool {
	return !f.quoted && bytes.Equal(f.line[f.start:f.end], cm.null)
}

// split cuts a row into fields, honouring the format's escapes and quotes.
func (cm *copyMask) split(line []byte) ([]field, error) {
	if len(line) == 0 || line[len(line)-1] != '\n' {
		return nil, fmt.Errorf("COPY row without a line end")
	}
	body := line[:len(line)-1]
	if n := len(body); n > 0 && body[n-1] == '\r' && !cm.csv {
		body = body[:n-1]
	}
	fields := make([]field, 0, max(len(cm.modes), 8))
	start, i := 0, 0
	quoted := false
	for i <= len(body) {
		if i == len(body) || body[i] == cm.delim {
			fields = append(fields, field{start: start, end: i, quoted: quoted, line: line})
			i++
			start, quoted = i, false
			if i > len(body) {
				break
			}
			continue
		}
		c := body[i]
		switch {
		case !cm.csv && c == '\\':
			i += 2
			if i > len(body) {
				return nil, fmt.Errorf("COPY row ends inside an escape")
			}
		case cm.csv && c == cm.quote && i == start:
			quoted = true
			i++
			for {
				if i >= len(body) {
					return nil, fmt.Errorf("COPY row ends inside quotes")
				}
				if body[i] == cm.esc && cm.esc != cm.quote && i+1 < len(body) && (body[i+1] == cm.quote || body[i+1] == cm.esc) {
					i += 2
					continue
				}
				if body[i] == cm.quote {
					if cm.esc == cm.quote && i+1 < len(body) && body[i+1] == cm.quote {
						i += 2
						continue
					}
					i++
					break
				}
				i++
			}
			if i < len(body) && body[i] != cm.delim {
				return nil, fmt.Errorf("COPY field continues after its closing quote")
			}
		default:
			i++
		}
	}
	return fields, nil
}

// value decodes a field to the value it holds.
func (cm *copyMask) value(f field) []byte {
	raw := f.line[f.start:f.end]
	if cm.csv {
		if !f.quoted {
			return raw
		}
		raw = raw[1 : len(raw)-1]
		var v []byte
		for i := 0; i < len(raw); i++ {
			if raw[i] == cm.esc && i+1 < len(raw) && (raw[i+1] == cm.quote || raw[i+1] == cm.esc) {
				i++
			}
			v = append(v, raw[i])
		}
		return v
	}
	if bytes.IndexByte(raw, '\\') < 0 {
		return raw
	}
	var v []byte
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c != '\\' || i+1 >= len(raw) {
			v = append(v, c)
			continue
		}
		i++
		if c, ok := textUnescape[raw[i]]; ok {
			v = append(v, c)
		} else {
			v = append(v, raw[i])
		}
	}
	return v
}

// textEscape is how COPY's text format writes special bytes (after a
// backslash); textUnescape reads them back.
var (
	textEscape   = map[byte]byte{'\\': '\\', '\b': 'b', '\f': 'f', '\n': 'n', '\r': 'r', '\t': 't', '\v': 'v'}
	textUnescape = map[byte]byte{'b': '\b', 'f': '\f', 'n': '\n', 'r': '\r', 't': '\t', 'v': '\v'}
)

// encode appends a value written as the format writes it.
func (cm *copyMask) encode(out, v []byte) []byte {
	if cm.csv {
		out = append(out, cm.quote)
		for _, c := range v {
			if c == cm.quote || c == cm.esc {
				out = append(out, cm.esc)
			}
			out = append(out, c)
		}
		return append(out, cm.quote)
	}
	for _, c := range v {
		if e, ok := textEscape[c]; ok {
			out = append(out, '\\', e)
			continue
		}
		if c == cm.delim {
			out = append(out, '\\')
		}
		out = append(out, c)
	}
	return out
}
