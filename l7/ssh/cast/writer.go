package cast

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// Header is a cast's first line.
type Header struct {
	Version int `json:"version"`
	Width   int `json:"width"`
	Height  int `json:"height"`
	// Timestamp is the start, in Unix seconds.
	Timestamp int64 `json:"timestamp,omitempty"`
	// Duration is the length in seconds, when known.
	Duration float64 `json:"duration,omitempty"`
	// IdleTimeLimit caps idle gaps on replay, in seconds.
	IdleTimeLimit float64           `json:"idle_time_limit,omitempty"`
	Command       string            `json:"command,omitempty"`
	Title         string            `json:"title,omitempty"`
	Env           map[string]string `json:"env,omitempty"`
}

// Event codes.
const (
	Output = "o"
	Input  = "i"
	Resize = "r"
	Marker = "m"
)

// DefaultMaxBytes is a Writer's default limit on recorded output.
const DefaultMaxBytes = 64 << 20

// Writer writes an asciicast v2 recording.
type Writer struct {
	mu    sync.Mutex // guards all below
	w     io.Writer
	start time.Time
	now   func() time.Time
	// carry holds the start of a UTF-8 sequence cut off at the end of
	// the last write, per stream (output, input).
	carry    [2][]byte
	written  int64 // event bytes written
	max      int64
	full     bool // past max: output no longer recorded
	err      error
	buf      []byte
	closed   bool
	lastTime float64
}

// Option configures a Writer.
type Option func(*Writer)

// WithClock sets the clock (tests).
func WithClock(now func() time.Time) Option { return func(w *Writer) { w.now = now } }

// WithMaxBytes caps the bytes of events recorded (default
// DefaultMaxBytes); past it output and input are dropped, and a marker
// says so.
func WithMaxBytes(n int64) Option { return func(w *Writer) { w.max = n } }

// NewWriter writes h (Version set to 2, Timestamp to now when zero) to w
// and returns a Writer for its events, timed from now.
func NewWriter(w io.Writer, h Header, opts ...Option) (*Writer, error) {
	cw := &Writer{w: w, now: time.Now, max: DefaultMaxBytes}
	for _, o := range opts {
		o(cw)
	}
	cw.start = cw.now()
	h.Version = 2
	if h.Timestamp == 0 {
		h.Timestamp = cw.start.Unix()
	}
	b, err := json.Marshal(h)
	if err != nil {
		return nil, fmt.Errorf("cast header: %w", err)
	}
	if _, err := w.Write(append(b, '\n')); err != nil {
		return nil, fmt.Errorf("write cast header: %w", err)
	}
	return cw, nil
}

// Output records terminal output. It never fails: a write error is kept
// for Err and Close, and stops recording.
func (w *Writer) Output(p []byte) { w.data(0, Output, p) }

// Input records terminal input (off by default in loopgate: passwords are
// typed with echo off).
func (w *Writer) Input(p []byte) { w.data(1, Input, p) }

// Resize records a window change.
func (w *Writer) Resize(cols, rows int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.event(Resize, strconv.Itoa(cols)+"x"+strconv.Itoa(rows))
}

// Mark records a marker with a label.
func (w *Writer) Mark(label string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.event(Marker, label)
}

// data records p on stream s, carrying a cut-off UTF-8 sequence over.
func (w *Writer) data(s int, code string, p []byte) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed || w.full || w.err != nil || len(p) == 0 {
		return
	}
	var b []byte
	if len(w.carry[s]) > 0 {
		b = append(w.carry[s], p...)
		w.carry[s] = nil
	} else {
		b = p
	}
	cut := incompleteTail(b)
	if cut < len(b) {
		w.carry[s] = append([]byte(nil), b[cut:]...)
		b = b[:cut]
	}
	if len(b) == 0 {
		return
	}
	if w.written+int64(len(b)) > w.max {
		w.full = true
		w.event(Marker, "recording stopped: output over "+strconv.FormatInt(w.max, 10)+" bytes")
		return
	}
	w.eventBytes(code, b)
}

// incompleteTail returns where a UTF-8 sequence that is cut off at the
// end of b (a valid start without all its continuation bytes) begins, or
// len(b).
func incompleteTail(b []byte) int {
	for i := 1; i <= utf8.UTFMax-1 && i <= len(b); i++ {
		c := b[len(b)-i]
		if c < 0x80 {
			return len(b) // ASCII: nothing cut
		}
		if utf8.RuneStart(c) {
			if !utf8.FullRune(b[len(b)-i:]) {
				return len(b) - i
			}
			return len(b)
		}
	}
	return len(b)
}

func (w *Writer) event(code, data string) { w.eventBytes(code, []byte(data)) }

// eventBytes writes one event line. Callers hold mu.
func (w *Writer) eventBytes(code string, data []byte) {
	if w.err != nil || w.closed {
		return
	}
	t := w.now().Sub(w.start).Seconds()
	if t < w.lastTime {
		t = w.lastTime // events stay in order whatever the clock does
	}
	w.lastTime = t
	b := w.buf[:0]
	b = append(b, '[')
	b = strconv.AppendFloat(b, t, 'f', 6, 64)
	b = append(b, ", \""...)
	b = append(b, code...)
	b = append(b, "\", "...)
	b = appendJSONString(b, data)
	b = append(b, "]\n"...)
	w.buf = b
	n, err := w.w.Write(b)
	w.written += int64(n)
	if err != nil {
		w.err = fmt.Errorf("write cast: %w", err)
	}
}

// appendJSONString appends s as a JSON string; invalid UTF-8 becomes
// U+FFFD.
func appendJSONString(b, s []byte) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
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
			case c < 0x20 || c == 0x7f:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			default:
				b = append(b, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRune(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, "\ufffd"...)
		} else {
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return append(b, '"')
}

// Err returns the first write error.
func (w *Writer) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// Close records what is still carried (an incomplete sequence at the very
// end becomes U+FFFD) and stops recording; it does not close the
// underlying writer. It returns the first write error. Idempotent.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return w.err
	}
	for s, code := range []string{Output, Input} {
		if len(w.carry[s]) > 0 && !w.full {
			w.eventBytes(code, w.carry[s])
		}
		w.carry[s] = nil
	}
	w.closed = true
	return w.err
}
