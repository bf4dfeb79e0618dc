package ssh

import (
	"io"
	"sync"

	"github.com/loopgate/loopgate/policy/mask"
)

// castRecorder records a pty channel's masked output as asciicast v2. It
// is safe for concurrent use (stdout and stderr pumps both write).
type castRecorder interface {
	Output(p []byte)
	Resize(cols, rows int)
	Close()
}

// outWriter masks a stream of the target's output, writes it to the
// agent and to the cast. Placeholder masker until policy/mask's stream
// masker lands: each chunk is scanned on its own.
type outWriter struct {
	dst  io.Writer
	m    *mask.Masker
	cast castRecorder
	mu   sync.Mutex
}

func (c *channel) outputWriter(dst io.Writer, cast castRecorder) *outWriter {
	w := &outWriter{dst: dst, cast: cast}
	if len(c.masks) > 0 {
		cfg := c.s.Policy()
		if m, err := mask.New(cfg, c.masks, c.b.h.MaskKey); err == nil && !m.Empty() {
			w.m = m
		}
	}
	return w
}

func (w *outWriter) Write(p []byte) (int, error) {
	out := p
	if w.m != nil {
		out = w.m.Scan(p)
	}
	if w.cast != nil {
		w.cast.Output(out)
	}
	if _, err := w.dst.Write(out); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Flush writes what the masker holds back.
func (w *outWriter) Flush() error { return nil }
