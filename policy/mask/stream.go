package mask

import (
	"bytes"
	"fmt"
	"io"
	"regexp"
	"sync"
)

// Limits of a Stream's hold-back.
const (
	// MaxRun is the longest run of characters a detector can match
	// (letters, digits, spaces and ._%+-@()) that a Stream holds back
	// whole; a longer run is cut, and a value straddling that cut at a
	// packet boundary may be missed.
	MaxRun = 4096
	// MaxHold is the most a Stream holds back for a private key block
	// whose END line has not arrived.
	MaxHold = 64 << 10
)

var (
	keyBegin = regexp.MustCompile(`-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----`)
	keyEnd   = regexp.MustCompile(`-----END [A-Z0-9 ]*PRIVATE KEY-----`)
)

// Stream masks a byte stream (a terminal's or a command's output) that
// arrives in pieces cut anywhere, with the masker's value detectors: a
// value split across two writes is masked as if it had come in one.
//
// It holds back the tail a detected value could still be growing from:
// the trailing run of characters detectors match (bounded by MaxRun) and
// an unfinished private key block (bounded by MaxHold). Everything before
// is masked and written at once, so a line ending in a newline or other
// punctuation goes out whole. The holder of a Stream calls Flush when the
// stream goes idle (a timer: output is held at most that long) and at its
// end, to write the tail.
//
// Safe for concurrent use: Flush may run on a timer while Write runs.
type Stream struct {
	mu   sync.Mutex // guards all below
	m    *Masker
	w    io.Writer
	held []byte
	keys bool // a rule detects private keys: hold unfinished blocks
	err  error
}

// NewStream returns a Stream writing the masking of what it is given to
// w. With a masker without detectors it writes through.
func NewStream(m *Masker, w io.Writer) *Stream {
	s := &Stream{m: m, w: w}
	if m != nil {
		for _, r := range m.rules {
			if r.det != nil && r.det.re == detectors["private-key"].re {
				s.keys = true
			}
		}
	}
	return s
}

// Write masks and writes what is safe to write of p and holds the rest.
// It reports len(p) written unless w failed (then the error, for this and
// every later call).
func (s *Stream) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return 0, s.err
	}
	if !s.m.HasDetectors() {
		if _, err := s.w.Write(p); err != nil {
			s.err = err
			return 0, err
		}
		return len(p), nil
	}
	s.held = append(s.held, p...)
	if c := s.cut(); c > 0 {
		s.emit(c)
	}
	if s.err != nil {
		return 0, s.err
	}
	return len(p), nil
}

// Flush masks and writes everything held.
func (s *Stream) Flush() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil && len(s.held) > 0 {
		s.emit(len(s.held))
	}
	return s.err
}

// Close flushes. It does not close the underlying writer.
func (s *Stream) Close() error { return s.Flush() }

// Held returns how many bytes wait for more input or a Flush.
func (s *Stream) Held() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.held)
}

// emit masks and writes held[:n] and keeps the rest. Callers hold mu.
func (s *Stream) emit(n int) {
	out := s.m.Scan(s.held[:n])
	if _, err := s.w.Write(out); err != nil {
		s.err = fmt.Errorf("write masked stream: %w", err)
	}
	rest := copy(s.held, s.held[n:])
	s.held = s.held[:rest]
	if cap(s.held) > 2*MaxHold && rest < MaxHold {
		s.held = append([]byte(nil), s.held...) // give back a burst's buffer
	}
}

// cut returns how much of held can be masked and written now: all but
// the tail a detected value may still grow from.
func (s *Stream) cut() int {
	b := s.held
	c := len(b)
	for c > 0 && len(b)-c < MaxRun && matchable(b[c-1]) {
		c--
	}
	if s.keys {
		// Never cut inside the last private key block: before its END
		// line is whole (held back up to MaxHold), or between its BEGIN
		// and the end of its END line.
		if i := lastBegin(b); i >= 0 && i < c {
			loc := keyEnd.FindIndex(b[i:])
			if (loc == nil && len(b)-i <= MaxHold) || (loc != nil && c < i+loc[1]) {
				// The BEGIN line may end a value ("-" is matchable): hold
				// the run it ends too.
				c = i
				for k := 0; c > 0 && k < MaxRun && matchable(b[c-1]); k++ {
					c--
				}
			}
		}
	}
	return c
}

// lastBegin returns where the last private key BEGIN line starts, or -1.
func lastBegin(b []byte) int {
	i := bytes.LastIndex(b, []byte("-----BEGIN "))
	for i >= 0 {
		if loc := keyBegin.FindIndex(b[i:]); loc != nil && loc[0] == 0 {
			return i
		}
		i = bytes.LastIndex(b[:i], []byte("-----BEGIN "))
	}
	return -1
}

// matchable reports whether a detector's value may hold c (every
// detector matches only letters, digits, spaces and ._%+-@()).
func matchable(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	switch c {
	case '.', '_', '%', '+', '-', '@', '(', ')', ' ':
		return true
	}
	return false
}
