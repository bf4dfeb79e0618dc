package postgres

import (
	"encoding/binary"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/loopgate/loopgate/policy/mask"
)

// column is one result column as masking sees it.
type column struct {
	name   string
	real   string // "table.column" when it is a table's column as it is
	oid    uint32
	format int16  // 0 text, 1 binary
	mode   string // set when a column mask covers it
}

// layout is the shape of a command's result rows and what to mask in them.
type layout struct {
	cols []column
	m    *mask.Masker
	scan bool // value detectors apply
}

// Type OIDs (pg_type.dat) whose binary form is their text.
var textual = map[uint32]bool{25: true, 1043: true, 1042: true, 19: true, 114: true, 142: true, 705: true}

// Numeric type OIDs and their binary zero.
var zeroBinary = map[uint32][]byte{
	21: make([]byte, 2), 23: make([]byte, 4), 26: make([]byte, 4), 20: make([]byte, 8),
	700: make([]byte, 4), 701: make([]byte, 8), 1700: make([]byte, 8), // numeric 0: no digits
}

// colName is a result column's real table and column, "" for expressions.
type colName struct{ table, column string }

func newLayout(fields []pgproto3.FieldDescription, formats []int16, m *mask.Masker, names []colName) *layout {
	l := &layout{m: m, scan: m.HasDetectors()}
	for i, f := range fields {
		var real colName
		if i < len(names) {
			real = names[i]
		}
		c := column{name: string(f.Name), oid: f.DataTypeOID, format: f.Format, mode: m.Column(real.table, real.column, string(f.Name))}
		if real.table != "" && real.column != "" {
			c.real = real.table + "." + real.column
		}
		switch {
		case len(formats) == 1:
			c.format = formats[0]
		case i < len(formats):
			c.format = formats[i]
		}
		l.cols = append(l.cols, c)
	}
	return l
}

// active reports whether rows must be rewritten.
func (l *layout) active() bool {
	if l == nil {
		return false
	}
	if l.scan {
		return true
	}
	for _, c := range l.cols {
		if c.mode != "" {
			return true
		}
	}
	return false
}

// maskValue returns the masked value for column c, or nil with null set
// when the column must read as NULL. A masked value always decodes as its
// type: text-like types get masked text, numbers get zero, anything else
// NULL.
func (l *layout) maskValue(c column, v []byte) (out []byte, null bool) {
	text := c.format == 0 || textual[c.oid]
	if c.mode != "" {
		switch {
		case textual[c.oid]:
			return l.m.Value(c.mode, v), false
		case c.format == 0 && zeroBinary[c.oid] != nil:
			return []byte("0"), false
		case c.format == 1 && zeroBinary[c.oid] != nil:
			return zeroBinary[c.oid], false
		case c.format == 0 && c.oid == 0:
			return l.m.Value(c.mode, v), false
		default:
			return nil, true
		}
	}
	if l.scan && text {
		// A detector firing on a table column teaches the rule that the
		// column holds what it detects (Masker.Learning).
		return l.m.ScanColumn(v, c.real), false
	}
	return v, false
}

// maskRow rewrites a DataRow body; it returns the whole message.
func (l *layout) maskRow(body []byte) ([]byte, bool) {
	if len(body) < 2 {
		return nil, false
	}
	n := int(binary.BigEndian.Uint16(body))
	if n != len(l.cols) {
		return nil, false // not the described shape: never pass a column unmasked
	}
	out := make([]byte, 5, len(body)+64)
	out[0] = 'D'
	out = binary.BigEndian.AppendUint16(out, uint16(n))
	off := 2
	for i := 0; i < n; i++ {
		if off+4 > len(body) {
			return nil, false
		}
		size := int32(binary.BigEndian.Uint32(body[off:]))
		off += 4
		if size < 0 {
			out = binary.BigEndian.AppendUint32(out, 0xffffffff)
			continue
		}
		if off+int(size) > len(body) {
			return nil, false
		}
		v := body[off : off+int(size)]
		off += int(size)
		if i < len(l.cols) {
			nv, null := l.maskValue(l.cols[i], v)
			if null {
				out = binary.BigEndian.AppendUint32(out, 0xffffffff)
				continue
			}
			v = nv
		}
		out = binary.BigEndian.AppendUint32(out, uint32(len(v)))
		out = append(out, v...)
	}
	binary.BigEndian.PutUint32(out[1:], uint32(len(out)-1))
	return out, true
}
