package mask

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"unicode/utf8"

	"github.com/loopgate/loopgate/policy"
)

// ErrJSONTooLarge is returned by JSON when one token (a string, a number)
// of the document is larger than the cap: it cannot be masked in bounded
// memory, so nothing more is passed.
var ErrJSONTooLarge = errors.New("json token larger than the masking cap")

// DefaultJSONCap is JSON's cap on one token when the caller gives none.
const DefaultJSONCap = 8 << 20

// HasPaths reports whether any mask names JSON paths.
func (m *Masker) HasPaths() bool {
	if m == nil {
		return false
	}
	for _, r := range m.rules {
		if len(r.paths) > 0 {
			return true
		}
	}
	return false
}

// pathMode returns the mode of the first mask whose JSON path matches at.
func (m *Masker) pathMode(at []policy.JSONElem) string {
	for _, r := range m.rules {
		for _, p := range r.paths {
			if p.Match(at) {
				return r.mode
			}
		}
	}
	return ""
}

// JSON copies JSON text from src to dst with the masks applied: a value at
// a masked JSON path is replaced whole (a scalar by its masked form, a
// string; inside an object or array, every scalar), and every other string
// (object keys included) goes through the value detectors. src may hold
// one value or a stream of them (newline-delimited JSON, Kubernetes
// watches); the output is compact, values separated by newlines.
//
// It streams: memory is bounded by maxToken (the largest single token
// taken; 0 means DefaultJSONCap), not by the document, so a large array is
// masked item by item. Output is flushed to dst whenever src is read from,
// so a slowly arriving stream flows on. On bad JSON or a token over the cap
// it stops and returns the error; what it wrote before is masked, and the
// caller must not pass anything more of src (fail closed).
func (m *Masker) JSON(dst io.Writer, src io.Reader, maxToken int) error {
	if maxToken <= 0 {
		maxToken = DefaultJSONCap
	}
	bw := bufio.NewWriterSize(dst, 32<<10)
	cr := &capReader{r: src, max: int64(maxToken), flush: bw}
	dec := json.NewDecoder(cr)
	dec.UseNumber()
	cr.dec = dec
	w := jsonWriter{m: m, w: bw}
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			if len(w.stack) > 0 {
				return io.ErrUnexpectedEOF
			}
			return bw.Flush()
		}
		if err != nil {
			bw.Flush()
			if cr.err != nil {
				return cr.err
			}
			return fmt.Errorf("mask json: %w", err)
		}
		w.token(tok)
		if w.err != nil {
			return w.err
		}
	}
}

// JSONBytes masks a whole JSON document held in memory.
func (m *Masker) JSONBytes(b []byte) ([]byte, error) {
	var out bytesWriter
	err := m.JSON(&out, &byteReader{b: b}, len(b)+1)
	return out.b, err
}

type bytesWriter struct{ b []byte }

func (w *bytesWriter) Write(p []byte) (int, error) { w.b = append(w.b, p...); return len(p), nil }

type byteReader struct{ b []byte }

func (r *byteReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	return n, nil
}

// capReader fails once the decoder holds more than max bytes it has not
// turned into tokens, and flushes the output before it may block.
type capReader struct {
	r     io.Reader
	dec   *json.Decoder
	read  int64
	max   int64
	flush *bufio.Writer
	err   error
}

func (c *capReader) Read(p []byte) (int, error) {
	if c.read-c.dec.InputOffset() > c.max {
		c.err = ErrJSONTooLarge
		return 0, c.err
	}
	if err := c.flush.Flush(); err != nil {
		c.err = err
		return 0, err
	}
	n, err := c.r.Read(p)
	c.read += int64(n)
	return n, err
}

// jsonFrame is an open object or array.
type jsonFrame struct {
	obj       bool
	n         int    // members or elements so far
	expectKey bool   // object: the next string is a key
	key       string // object: the current member's key
	mode      string // a masked path covers the whole container
}

type jsonWriter struct {
	m     *Masker
	w     *bufio.Writer
	stack []jsonFrame
	path  []policy.JSONElem
	roots int
	err   error
	buf   []byte
}

func (j *jsonWriter) token(tok json.Token) {
	var top *jsonFrame
	if len(j.stack) > 0 {
		top = &j.stack[len(j.stack)-1]
	}
	if d, ok := tok.(json.Delim); ok && (d == '}' || d == ']') {
		j.w.WriteByte(byte(d))
		j.stack = j.stack[:len(j.stack)-1]
		if len(j.path) > 0 {
			j.path = j.path[:len(j.path)-1]
		}
		j.after()
		return
	}
	if top != nil && top.obj && top.expectKey {
		key, _ := tok.(string)
		if top.n > 0 {
			j.w.WriteByte(',')
		}
		j.str(j.scan(key))
		j.w.WriteByte(':')
		top.key, top.expectKey = key, false
		return
	}
	// A value: where is it?
	var elem policy.JSONElem
	mode := ""
	switch {
	case top == nil:
		if j.roots > 0 {
			j.w.WriteByte('\n')
		}
	case top.obj:
		elem = policy.JSONElem{Key: top.key}
		mode = top.mode
	default:
		if top.n > 0 {
			j.w.WriteByte(',')
		}
		elem = policy.JSONElem{Index: top.n, IsIndex: true}
		mode = top.mode
	}
	at := j.path
	if top != nil {
		at = append(j.path, elem)
	}
	if mode == "" && top != nil {
		mode = j.m.pathMode(at)
	}
	if d, ok := tok.(json.Delim); ok {
		j.w.WriteByte(byte(d))
		j.stack = append(j.stack, jsonFrame{obj: d == '{', expectKey: d == '{', mode: mode})
		if top != nil {
			j.path = at
		} else {
			j.path = j.path[:0]
		}
		// The root container has no element of its own: paths below
		// it start with their first key or index.
		return
	}
	switch v := tok.(type) {
	case string:
		if mode != "" {
			j.str(string(j.m.Value(mode, []byte(v))))
		} else {
			j.str(j.scan(v))
		}
	case json.Number:
		if mode != "" {
			j.str(string(j.m.Value(mode, []byte(v))))
		} else {
			j.w.WriteString(string(v))
		}
	case bool:
		if mode != "" {
			j.str(string(j.m.Value(mode, []byte(strconv.FormatBool(v)))))
		} else {
			j.w.WriteString(strconv.FormatBool(v))
		}
	case nil:
		j.w.WriteString("null")
	}
	j.after()
}

// after notes that a value ended in the current container.
func (j *jsonWriter) after() {
	if len(j.stack) == 0 {
		j.roots++
		return
	}
	top := &j.stack[len(j.stack)-1]
	top.n++
	if top.obj {
		top.expectKey = true
	}
}

func (j *jsonWriter) scan(s string) string {
	if !j.m.HasDetectors() {
		return s
	}
	return j.m.String(s)
}

// str writes s as a JSON string.
func (j *jsonWriter) str(s string) {
	b := append(j.buf[:0], '"')
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				b = append(b, '\\', c)
			case c == '\n':
				b = append(b, '\\', 'n')
			case c == '\r':
				b = append(b, '\\', 'r')
			case c == '\t':
				b = append(b, '\\', 't')
			case c < 0x20:
				b = append(b, `\u00`...)
				b = append(b, "0123456789abcdef"[c>>4], "0123456789abcdef"[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, `\ufffd`...)
		} else {
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	b = append(b, '"')
	j.buf = b
	if _, err := j.w.Write(b); err != nil && j.err == nil {
		j.err = err
	}
}
