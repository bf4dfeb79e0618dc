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
	privateKeyRE = detectors["private-key"].re
	keyBegin     = regexp.MustCompile(`-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----`)
	keyEnd       = regexp.MustCompile(`-----END [A-Z0-9 ]*PRIVATE KEY-----`)
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
	out  []byte // scanRuns' buffer
}

// NewStream returns a Stream writing the masking of what it is given to
// w. With a masker without detectors it writes through.
func NewStream(m *Masker, w io.Writer) *Stream {
	s := &Stream{m: m, w: w}
	if m != nil {
		for _, r := range m.rules {
			if r.det != nil && r.det.re == privateKeyRE {
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
	out := s.m.scanRuns(s.held[:n], &s.out)
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

// prefilters are necessary conditions for each detector to match a run
// of matchable characters: a run failing one is not scanned with it.
var prefilters = map[*regexp.Regexp]func(run []byte) bool{
	detectors["email"].re:   func(r []byte) bool { return bytes.IndexByte(r, '@') >= 0 },
	detectors["card"].re:    func(r []byte) bool { return digits(r) >= 13 },
	detectors["ssn"].re:     func(r []byte) bool { return digits(r) >= 9 && bytes.IndexByte(r, '-') >= 0 },
	detectors["phone"].re:   func(r []byte) bool { return digits(r) >= 10 },
	detectors["iban"].re:    ibanStart,
	detectors["aws-key"].re: awsPrefix,
	detectors["jwt"].re:     func(r []byte) bool { return bytes.Contains(r, []byte("eyJ")) },
}

func digits(b []byte) int {
	n := 0
	for _, c := range b {
		if c >= '0' && c <= '9' {
			n++
		}
	}
	return n
}

func ibanStart(b []byte) bool {
	for i := 0; i+3 < len(b); i++ {
		if b[i] >= 'A' && b[i] <= 'Z' && b[i+1] >= 'A' && b[i+1] <= 'Z' &&
			b[i+2] >= '0' && b[i+2] <= '9' && b[i+3] >= '0' && b[i+3] <= '9' {
			return true
		}
	}
	return false
}

func awsPrefix(b []byte) bool {
	for i := 0; i+3 < len(b); i++ {
		if b[i] != 'A' {
			continue
		}
		switch string(b[i+1 : i+4]) {
		case "KIA", "SIA", "GPA", "IDA", "ROA", "NPA":
			return true
		}
	}
	return false
}

// scanRuns is Scan for a stream segment, made fast for long output: no
// detector but private-key matches anything but letters, digits, spaces
// and ._%+-@(), so each maximal run of those is masked on its own, and a
// detector is run on a run only when the run passes its prefilter. The
// result is Scan's (FuzzStreamMask checks). A segment holding a key's
// BEGIN, or a masker with a detector without a prefilter, is Scanned
// whole. The result may alias buf.
func (m *Masker) scanRuns(seg []byte, buf *[]byte) []byte {
	for _, r := range m.rules {
		if r.det != nil && prefilters[r.det.re] == nil && r.det.re != privateKeyRE {
			return m.Scan(seg)
		}
	}
	if bytes.Contains(seg, []byte("-----BEGIN ")) {
		return m.Scan(seg)
	}
	out := (*buf)[:0]
	for i := 0; i < len(seg); {
		j := i
		for j < len(seg) && matchable(seg[j]) {
			j++
		}
		if j == i { // a character no detector matches
			out = append(out, seg[i])
			i++
			continue
		}
		out = append(out, m.scanRun(seg[i:j])...)
		i = j
	}
	*buf = out
	return out
}

// scanRun masks one run with the rules whose prefilter it passes, in
// rule order, as ScanColumn does.
func (m *Masker) scanRun(run []byte) []byte {
	for _, r := range m.rules {
		if r.det == nil || r.det.re == privateKeyRE {
			continue
		}
		if pass := prefilters[r.det.re]; !pass(run) {
			continue
		}
		d, mode := r.det, r.mode
		run = d.re.ReplaceAllFunc(run, func(match []byte) []byte {
			if d.check != nil && !d.check(match) {
				return match
			}
			return m.Value(mode, match)
		})
	}
	return run
}
