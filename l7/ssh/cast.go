package ssh

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/loopgate/loopgate/l7"
	"github.com/loopgate/loopgate/store/event"
)

// Cast chunks: a terminal's asciicast lines are recorded as event.KindCast
// events of at most castChunk bytes, at least every castFlush while output
// flows, and at the channel's end.
const (
	castChunk = 32 << 10
	castFlush = time.Second
)

// castEncoder turns a terminal's output and resizes into asciicast v2
// lines. Placeholder until l7/ssh/cast lands (which carries UTF-8 split
// across packets over instead of replacing it).
type castEncoder struct {
	start time.Time
}

func (e *castEncoder) header(w *bytes.Buffer, cols, rows int, term, command string) {
	h := map[string]any{"version": 2, "width": cols, "height": rows, "timestamp": e.start.Unix(),
		"env": map[string]string{"TERM": term}}
	if command != "" && command != "shell" {
		h["command"] = command
	}
	b, _ := json.Marshal(h)
	w.Write(b)
	w.WriteByte('\n')
}

func (e *castEncoder) event(w *bytes.Buffer, code, data string) {
	b, _ := json.Marshal([]any{json.Number(fmt.Sprintf("%.6f", time.Since(e.start).Seconds())), code, strings.ToValidUTF8(data, "\uFFFD")})
	w.Write(b)
	w.WriteByte('\n')
}

// cast records one pty channel as asciicast v2 into the session's record.
// It is safe for concurrent use. mu guards everything below it.
type cast struct {
	s    *l7.Session
	name string

	mu     sync.Mutex
	enc    castEncoder
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
	c := &cast{s: b.s, name: fmt.Sprintf("cast %d", n), enc: castEncoder{start: time.Now()}}
	c.enc.header(&c.buf, int(p.Cols), int(p.Rows), p.Term, command)
	return c
}

// Output records masked terminal output.
func (c *cast) Output(p []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || len(p) == 0 {
		return
	}
	c.enc.event(&c.buf, "o", string(p))
	c.scheduleLocked()
}

// Resize records a window change.
func (c *cast) Resize(cols, rows int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return
	}
	c.enc.event(&c.buf, "r", fmt.Sprintf("%dx%d", cols, rows))
	c.scheduleLocked()
}

func (c *cast) scheduleLocked() {
	if c.buf.Len() >= castChunk {
		c.flushLocked()
		return
	}
	if c.timer == nil {
		c.timer = time.AfterFunc(castFlush, func() {
			c.mu.Lock()
			defer c.mu.Unlock()
			c.timer = nil
			c.flushLocked()
		})
	}
}

func (c *cast) flushLocked() {
	if c.buf.Len() == 0 {
		return
	}
	c.s.RecordAsync(event.Event{Kind: event.KindCast, Text: c.name, Params: c.buf.String()})
	c.buf.Reset()
}

// Close records what is left; later output is dropped.
func (c *cast) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.timer != nil {
		c.timer.Stop()
		c.timer = nil
	}
	c.flushLocked()
	c.closed = true
}
