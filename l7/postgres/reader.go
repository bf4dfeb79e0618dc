package postgres

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"io"
	"sync"

	"github.com/jackc/pgx/v5/pgproto3"
)

// Startup packet codes (PostgreSQL protocol, "Message Formats").
const (
	codeSSLRequest     = 80877103
	codeGSSENCRequest  = 80877104
	codeCancelRequest  = 80877102
	protocolVersion3_0 = 196608
)

// agentReader frames the agent's messages without decoding them, so the
// relay can decode only what policy needs and forward the original bytes
// (no re-encoding). A message returned by next is valid until the next call.
type agentReader struct {
	br  *bufio.Reader
	max int // largest body accepted
	// stmtMax, if positive, is the largest Query or Parse body read: a
	// larger one is discarded (limit.go).
	stmtMax int
	buf     []byte
}

// Pools of the 64 KiB buffers each session used to allocate anew: a
// reader, two writers and the event loop's two inputs (most of the garbage
// of an agent that connects for every statement).
var (
	readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 64<<10) }}
	writerPool = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 64<<10) }}
	inputPool  = sync.Pool{New: func() any { b := make([]byte, loopRead); return &b }}
)

func newAgentReader(r io.Reader) *agentReader {
	br := readerPool.Get().(*bufio.Reader)
	br.Reset(r)
	return &agentReader{br: br, max: maxStartupBody}
}

// release gives the reader's buffer back; a is not used after.
func (a *agentReader) release() {
	if a == nil || a.br == nil {
		return
	}
	a.br.Reset(nil)
	readerPool.Put(a.br)
	a.br = nil
}

func pooledWriter(w io.Writer) *bufio.Writer {
	bw := writerPool.Get().(*bufio.Writer)
	bw.Reset(w)
	return bw
}

func releaseWriter(bw *bufio.Writer) {
	bw.Reset(nil)
	writerPool.Put(bw)
}

// startup reads one untyped startup packet and decodes it; the message is
// the caller's to keep.
func (a *agentReader) startup() (pgproto3.FrontendMessage, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(a.br, hdr[:]); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint32(hdr[:])) - 4
	if n < 4 || n > maxStartupBody {
		return nil, fmt.Errorf("startup packet of %d bytes", n+4)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(a.br, body); err != nil {
		return nil, err
	}
	var msg pgproto3.FrontendMessage
	code := binary.BigEndian.Uint32(body)
	switch {
	case code == codeSSLRequest:
		msg = &pgproto3.SSLRequest{}
	case code == codeGSSENCRequest:
		msg = &pgproto3.GSSEncRequest{}
	case code == codeCancelRequest:
		msg = &pgproto3.CancelRequest{}
	case code>>16 == 3:
		// Any 3.x, as PostgreSQL takes it: a newer minor (3.2 from pgx
		// or libpq 18) is answered with NegotiateProtocolVersion and
		// goes on at 3.0 (readStartup). pgproto3 decodes 3.0 and 3.2
		// only, so decode as 3.0 and keep the version asked for.
		binary.BigEndian.PutUint32(body, protocolVersion3_0)
		sm := &pgproto3.StartupMessage{}
		if err := sm.Decode(body); err != nil {
			return nil, err
		}
		sm.ProtocolVersion = code
		return sm, nil
	default:
		return nil, fmt.Errorf("unsupported startup code %d", code)
	}
	if err := msg.Decode(body); err != nil {
		return nil, err
	}
	return msg, nil
}

// next reads one typed message and returns its type and its whole encoding
// (header included).
func (a *agentReader) next() (byte, []byte, error) {
	hdr, err := a.br.Peek(5)
	if err != nil {
		if err == io.EOF && len(hdr) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	typ := hdr[0]
	n := int(binary.BigEndian.Uint32(hdr[1:])) - 4
	if n < 0 || n > a.max {
		return 0, nil, fmt.Errorf("%q message of %d bytes (limit %d)", typ, n, a.max)
	}
	if a.stmtMax > 0 && n > a.stmtMax && isStatement(typ) {
		return a.skipOversized(n)
	}
	if cap(a.buf) < 5+n {
		a.buf = make([]byte, 5+n)
	}
	msg := a.buf[:5+n]
	if _, err := io.ReadFull(a.br, msg); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	if cap(a.buf) > 1<<20 {
		a.buf = nil // do not keep a huge buffer for the whole session
	}
	return typ, msg, nil
}

// copyN moves the next n bytes of br to w through br's own buffer, without
// the allocation io.CopyN makes per call (it runs for every DataRow).
func copyN(w io.Writer, br *bufio.Reader, n int64) error {
	for n > 0 {
		k := int64(br.Size())
		if n < k {
			k = n
		}
		b, err := br.Peek(int(k))
		if len(b) > 0 {
			if _, werr := w.Write(b); werr != nil {
				return werr
			}
			br.Discard(len(b))
			n -= int64(len(b))
		}
		if err != nil && len(b) < int(k) {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
	}
	return nil
}

// msgSource yields the body of the target message whose header relayMessage
// was given: from a stream (bufSource) or from a message already read whole
// (memSource, on the event loop).
type msgSource interface {
	// body returns the body for the caller to keep.
	body(n int64) ([]byte, error)
	// transient returns the body, valid until the next call.
	transient(n int64) ([]byte, error)
	// passOn writes the body to w as it comes.
	passOn(w io.Writer, n int64) error
	skip(n int64) error
}

// bufSource reads bodies from a buffered stream; big ones pass through
// without being held whole.
type bufSource struct {
	br      *bufio.Reader
	scratch []byte
}

func (s *bufSource) body(n int64) ([]byte, error) {
	b := make([]byte, n)
	if _, err := io.ReadFull(s.br, b); err != nil {
		return nil, err
	}
	return b, nil
}

func (s *bufSource) transient(n int64) ([]byte, error) {
	if int64(cap(s.scratch)) < n {
		s.scratch = make([]byte, n)
	}
	b := s.scratch[:n]
	_, err := io.ReadFull(s.br, b)
	if cap(s.scratch) > 1<<20 {
		s.scratch = nil // do not keep a huge buffer for the whole session
	}
	return b, err
}

func (s *bufSource) passOn(w io.Writer, n int64) error { return copyN(w, s.br, n) }

func (s *bufSource) skip(n int64) error {
	_, err := s.br.Discard(int(n))
	return err
}

// memSource is a body already in memory, valid during one relayMessage.
type memSource struct{ b []byte }

func (s *memSource) body(n int64) ([]byte, error) { return append([]byte(nil), s.b...), nil }

func (s *memSource) transient(n int64) ([]byte, error) { return s.b, nil }

func (s *memSource) passOn(w io.Writer, n int64) error {
	_, err := w.Write(s.b)
	return err
}

func (s *memSource) skip(n int64) error { return nil }
