package ssh

import (
	"io"
	"sync"
	"time"

	"github.com/loopgate/loopgate/policy/mask"
)

// castRecorder records a pty channel's masked output as asciicast v2. It
// is safe for concurrent use (stdout and stderr pumps both write).
type castRecorder interface {
	Output(p []byte)
	Resize(cols, rows int)
	Close()
}

// maskIdle is how long masked output may be held back waiting for the
// rest of a value split across packets before it is written anyway.
const maskIdle = 50 * time.Millisecond

// sink writes masked output to the agent, the cast and an observer (a
// legacy scp watch).
type sink struct {
	dst     io.Writer
	cast    castRecorder
	observe io.Writer
}

func (s sink) Write(p []byte) (int, error) {
	if s.cast != nil {
		s.cast.Output(p)
	}
	if s.observe != nil {
		s.observe.Write(p)
	}
	return s.dst.Write(p)
}

// copyOut copies one of the target's output streams to the agent through
// the rule's value detectors as a stream (unless masked is false: a file
// transfer's protocol): a value split across packets is still masked.
// What the masker holds back is written after maskIdle without more
// output, and at the end.
func (c *channel) copyOut(dst io.Writer, src io.Reader, masked bool, observe io.Writer) (int64, error) {
	out := sink{dst: dst, cast: c.cast, observe: observe}
	var m *mask.Masker
	if masked && len(c.masks) > 0 {
		if mm, err := mask.New(c.s.Policy(), c.masks, c.b.h.MaskKey); err != nil {
			c.s.Log.Error("masks not loaded; output withheld", "err", err)
			return 0, err // fail closed: unmasked output never flows
		} else if mm.HasDetectors() {
			m = mm
		}
	}
	if m == nil {
		return io.Copy(out, src)
	}
	st := mask.NewStream(m, out)
	var mu sync.Mutex // guards timer
	var timer *time.Timer
	buf := make([]byte, 32<<10)
	var n int64
	for {
		k, rerr := src.Read(buf)
		n += int64(k)
		if k > 0 {
			if _, err := st.Write(buf[:k]); err != nil {
				return n, err
			}
			if st.Held() > 0 {
				mu.Lock()
				if timer == nil {
					timer = time.AfterFunc(maskIdle, func() {
						st.Flush()
						mu.Lock()
						timer = nil
						mu.Unlock()
					})
				}
				mu.Unlock()
			}
		}
		if rerr != nil {
			mu.Lock()
			if timer != nil {
				timer.Stop()
			}
			mu.Unlock()
			err := st.Flush()
			if rerr == io.EOF {
				rerr = err
			}
			return n, rerr
		}
	}
}
