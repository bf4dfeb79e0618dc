package ssh

import (
	"bytes"
	"fmt"
	"sync"
	"time"

	"github.com/loopgate/loopgate/l7"
	"github.com/loopgate/loopgate/l7/ssh/cast"
	"github.com/loopgate/loopgate/store/event"
)

// Cast chunks: a terminal's asciicast lines are recorded as event.KindCast
// events of about castChunk bytes, at least every castFlush while output
// flows, and at the channel's end.
const (
	castChunk = 32 << 10
	castFlush = time.Second
)

// castRec records one pty channel as asciicast v2 into the session's
// record: a cast.Writer (which carries UTF-8 split across packets over)
// writing into chunks that become cast events. It is safe for concurrent
// use. mu guards the fields below it; the cast.Writer's own lock is taken
// before mu.
type castRec struct {
	s    *l7.Session
	name string
	w    *cast.Writer

	mu     sync.Mutex
	buf    bytes.Buffer
	timer  *time.Timer
	closed bool
}

// newCast starts the cast of a pty channel.
func (b *bridge) newCast(p *ptyReq, command string) castRecorder {
	b.mu.Lock()
	b.casts++
	n := b.casts
	b.mu.Unlock()
	c := &castRec{s: b.s, name: fmt.Sprintf("cast %d", n)}
	h := cast.Header{Width: int(p.Cols), Height: int(p.Rows), Env: map[string]string{"TERM": p.Term}}
	if command != "shell" {
		h.Command = command
	}
	w, err := cast.NewWriter(c, h)
	if err != nil {
		b.s.Log.Error("terminal not recorded", "err", err)
		return nil
	}
	c.w = w
	return c
}

// Write takes cast lines from the cast.Writer.
func (c *castRec) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return len(p), nil
	}
	c.buf.Write(p)
	if c.buf.Len() >= castChunk {
		c.flushLocked()
	} else if c.timer == nil {
		c.timer = time.AfterFunc(castFlush, func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			c.timer = nil
			c.flushLocked()
		})
	}
	return len(p), nil
}

// Output records masked terminal output.
func (c *castRec) Output(p []byte) { c.w.Output(p) }

// Resize records a window change.
func (c *castRec) Resize(cols, rows int) { c.w.Resize(cols, rows) }

func (c *castRec) flushLocked() {
	if c.buf.Len() == 0 {
		return
	}
	c.s.RecordAsync(event.Event{Kind: event.KindCast, Text: c.name, Params: c.buf.String()})
	c.buf.Reset()
}

// Close records what is left; later output is dropped.
func (c *castRec) Close() {
	c.w.Close()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.timer != nil {
		c.timer.Stop()
		c.timer = nil
	}
	c.flushLocked()
	c.closed = true
}
