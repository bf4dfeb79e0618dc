package http

import (
	"encoding/binary"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"unicode/utf8"

	"github.com/loopgate/loopgate/store/event"
)

// Frames of an upgraded connection are recorded one event each (opcode,
// length, a masked excerpt of text payloads), up to maxFrameEvents per
// exchange; the rest are counted into one last event at the end.
const (
	maxFrameEvents  = 10000
	maxFrameExcerpt = 1 << 10
)

// frameRecorder sits between the reverse proxy and the upgraded upstream
// connection: what it reads came from the target, what it writes goes to
// it. Both directions are parsed as RFC 6455 frames (§5.2) and recorded;
// bytes are passed on unchanged. A stream that is not WebSocket (another
// upgrade) is recorded as bytes only.
type frameRecorder struct {
	io.ReadWriteCloser
	ex        *exchange
	up, down  frameParser
	mu        sync.Mutex // guards events, dropped
	events    int
	dropped   int
	closeOnce sync.Once
}

func newFrameRecorder(rwc io.ReadWriteCloser, ex *exchange) *frameRecorder {
	f := &frameRecorder{ReadWriteCloser: rwc, ex: ex}
	f.up.dir, f.down.dir = "agent→target", "target→agent"
	f.up.emit, f.down.emit = f.emit, f.emit
	return f
}

func (f *frameRecorder) Read(p []byte) (int, error) {
	n, err := f.ReadWriteCloser.Read(p)
	f.down.feed(p[:n])
	return n, err
}

func (f *frameRecorder) Write(p []byte) (int, error) {
	f.up.feed(p)
	return f.ReadWriteCloser.Write(p)
}

func (f *frameRecorder) Close() error {
	f.closeOnce.Do(func() {
		f.mu.Lock()
		dropped := f.dropped
		f.mu.Unlock()
		f.ex.se.s.RecordAsync(event.Event{Kind: event.KindResult, Text: f.ex.text,
			Tag: "upgrade closed", Bytes: f.up.total.Load() + f.down.total.Load(),
			Params: fmt.Sprintf(`{"frames_agent_to_target":%d,"frames_target_to_agent":%d,"frames_not_recorded":%d,"bytes_agent_to_target":%d,"bytes_target_to_agent":%d}`,
				f.up.frames.Load(), f.down.frames.Load(), dropped, f.up.total.Load(), f.down.total.Load())})
	})
	return f.ReadWriteCloser.Close()
}

var opcodes = map[byte]string{0: "continuation", 1: "text", 2: "binary", 8: "close", 9: "ping", 10: "pong"}

func (f *frameRecorder) emit(dir string, op byte, fin bool, length uint64, payload []byte) {
	f.mu.Lock()
	if f.events >= maxFrameEvents {
		f.dropped++
		f.mu.Unlock()
		return
	}
	f.events++
	f.mu.Unlock()
	name, ok := opcodes[op]
	if !ok {
		name = fmt.Sprintf("opcode %d", op)
	}
	text := fmt.Sprintf("ws %s %s %d bytes", dir, name, length)
	if !fin {
		text += " (fragment)"
	}
	if (op == 1 || op == 0 || op == 8) && len(payload) > 0 && utf8.Valid(payload) {
		p := payload
		if op == 8 && len(p) >= 2 {
			text += fmt.Sprintf(" code %d", binary.BigEndian.Uint16(p))
			p = p[2:]
		}
		s := string(p)
		if m := f.ex.masker; !m.Empty() {
			s = m.String(s)
		}
		text += ": " + s
	}
	f.ex.se.s.RecordAsync(event.Event{Kind: event.KindResult, Text: text, Tag: "ws " + name, Bytes: int64(length)})
}

// frameParser follows RFC 6455 frames in one direction across reads.
type frameParser struct {
	dir    string
	emit   func(dir string, op byte, fin bool, length uint64, payload []byte)
	hdr    [14]byte
	nhdr   int
	need   int    // header bytes needed (2 until the length is known)
	left   uint64 // payload bytes still to come
	length uint64
	op     byte
	fin    bool
	masked bool
	key    [4]byte
	pos    uint64 // payload offset (for unmasking)
	buf    []byte // payload excerpt, unmasked
	bad    bool   // not WebSocket framing: stop parsing
	// frames and total are read by Close while the other direction may
	// still be copying.
	frames atomic.Int64
	total  atomic.Int64
}

func (p *frameParser) feed(b []byte) {
	p.total.Add(int64(len(b)))
	for len(b) > 0 && !p.bad {
		if p.left == 0 && p.need == 0 {
			p.need, p.nhdr = 2, 0
		}
		if p.need > 0 {
			n := copy(p.hdr[p.nhdr:p.need], b)
			p.nhdr += n
			b = b[n:]
			if p.nhdr < p.need {
				return
			}
			if !p.header() {
				continue
			}
			if p.left == 0 {
				p.done()
				continue
			}
		}
		n := uint64(len(b))
		if n > p.left {
			n = p.left
		}
		for i := uint64(0); i < n && len(p.buf) < maxFrameExcerpt; i++ {
			c := b[i]
			if p.masked {
				c ^= p.key[(p.pos+i)%4]
			}
			p.buf = append(p.buf, c)
		}
		p.pos += n
		p.left -= n
		b = b[n:]
		if p.left == 0 {
			p.done()
		}
	}
}

// header interprets the header bytes so far; false means more are needed.
func (p *frameParser) header() bool {
	h := p.hdr[:p.nhdr]
	if p.nhdr == 2 {
		if h[0]&0x70 != 0 && h[0]&0x0f > 10 {
			p.bad = true
			return false
		}
		p.fin, p.op, p.masked = h[0]&0x80 != 0, h[0]&0x0f, h[1]&0x80 != 0
		need := 2
		switch h[1] & 0x7f {
		case 126:
			need += 2
		case 127:
			need += 8
		}
		if p.masked {
			need += 4
		}
		if need > 2 {
			p.need = need
			return false
		}
	}
	l := uint64(h[1] & 0x7f)
	i := 2
	switch l {
	case 126:
		l = uint64(binary.BigEndian.Uint16(h[2:4]))
		i = 4
	case 127:
		l = binary.BigEndian.Uint64(h[2:10])
		i = 10
	}
	if p.masked {
		copy(p.key[:], h[i:i+4])
	}
	p.need, p.length, p.left, p.pos, p.buf = 0, l, l, 0, p.buf[:0]
	return true
}

func (p *frameParser) done() {
	p.frames.Add(1)
	p.emit(p.dir, p.op, p.fin, p.length, p.buf)
	p.buf = p.buf[:0]
	p.need = 0
}
