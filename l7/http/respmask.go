package http

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	stdhttp "net/http"
	"strings"

	"github.com/loopgate/loopgate/policy/mask"
)

// maxTextBody caps a non-JSON text body masked whole, and an SSE line.
const maxTextBody = 8 << 20

// errEncoded: a masked route got a body in an encoding it cannot read.
var errEncoded = errors.New("the response is encoded (Content-Encoding) and cannot be masked")

// modifyResponse strips Alt-Svc, records upgrades frame by frame and masks
// bodies on masked routes. An error becomes a 502 (ErrorHandler): a body
// that cannot be masked is never passed.
func (h *Handler) modifyResponse(resp *stdhttp.Response) error {
	ex := resp.Request.Context().Value(stateKey{}).(*exchange)
	resp.Header.Del("Alt-Svc")
	if resp.StatusCode == stdhttp.StatusSwitchingProtocols {
		if rwc, ok := resp.Body.(io.ReadWriteCloser); ok {
			resp.Body = newFrameRecorder(rwc, ex)
		}
		return nil
	}
	if secret, _ := h.secrets.get(ex.target); secret != "" {
		ns := needles(ex.target, secret)
		scrubHeader(resp.Header, ns)
		if err := scrubBody(resp, ns); err != nil {
			return err
		}
	}
	m := ex.masker
	if m.Empty() || resp.Request.Method == stdhttp.MethodHead || resp.StatusCode == stdhttp.StatusNoContent || resp.StatusCode == stdhttp.StatusNotModified {
		return nil
	}
	ct := resp.Header.Get("Content-Type")
	mt, _, _ := mime.ParseMediaType(ct)
	var run func(dst io.Writer, src io.Reader) error
	switch {
	case isJSON(ct):
		run = func(dst io.Writer, src io.Reader) error { return m.JSON(dst, src, h.MaxJSONToken) }
	case mt == "text/event-stream":
		run = func(dst io.Writer, src io.Reader) error { return maskSSE(dst, src, m) }
	case textual(ct):
		if !m.HasDetectors() {
			return nil
		}
		run = func(dst io.Writer, src io.Reader) error { return maskText(dst, src, m) }
	default:
		return nil // binary bodies pass unmasked (README: Limits)
	}
	if ce := resp.Header.Get("Content-Encoding"); ce != "" && !strings.EqualFold(ce, "identity") {
		ex.maskErr = errEncoded
		return errEncoded
	}
	src := resp.Body
	pr, pw := io.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		err := run(pw, src)
		if err != nil {
			ex.maskErr = err
		}
		pw.CloseWithError(err)
	}()
	br := bufio.NewReaderSize(pr, 32<<10)
	if _, err := br.Peek(1); err != nil && err != io.EOF {
		pr.CloseWithError(err)
		src.Close()
		<-done
		return fmt.Errorf("mask: %w", err)
	}
	resp.Body = &maskedBody{r: br, pr: pr, src: src, done: done}
	resp.Header.Del("Content-Length")
	resp.ContentLength = -1
	return nil
}

// maskedBody is a response body read through a masking goroutine; Close
// stops the goroutine and waits for it.
type maskedBody struct {
	r    *bufio.Reader
	pr   *io.PipeReader
	src  io.ReadCloser
	done chan struct{}
}

func (b *maskedBody) Read(p []byte) (int, error) { return b.r.Read(p) }

func (b *maskedBody) Close() error {
	b.pr.Close()
	err := b.src.Close()
	<-b.done
	return err
}

// maskSSE masks a text/event-stream line by line: each data: line is
// masked as JSON when it is JSON, by the value detectors otherwise, and
// written at once (events flow unbuffered). Best effort: a value split
// across events (token deltas of an LLM stream) escapes the detectors.
func maskSSE(dst io.Writer, src io.Reader, m *mask.Masker) error {
	br := bufio.NewReaderSize(src, 64<<10)
	flusher, _ := dst.(interface{ Flush() error })
	for {
		line, err := readLine(br, maxTextBody)
		if len(line) > 0 {
			out := line
			if rest, ok := bytes.CutPrefix(line, []byte("data:")); ok {
				body, eol := splitEOL(rest)
				lead := ""
				if bytes.HasPrefix(body, []byte(" ")) {
					lead, body = " ", body[1:]
				}
				masked, jerr := m.JSONBytes(body)
				if jerr != nil || len(bytes.TrimSpace(body)) == 0 {
					masked = m.Scan(body)
				}
				out = append(append([]byte("data:"+lead), masked...), eol...)
			}
			if _, werr := dst.Write(out); werr != nil {
				return werr
			}
			if flusher != nil {
				flusher.Flush()
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func splitEOL(b []byte) (body, eol []byte) {
	n := len(b)
	for n > 0 && (b[n-1] == '\n' || b[n-1] == '\r') {
		n--
	}
	return b[:n], b[n:]
}

// readLine reads a line (with its end) of at most max bytes.
func readLine(br *bufio.Reader, max int) ([]byte, error) {
	var line []byte
	for {
		frag, err := br.ReadSlice('\n')
		line = append(line, frag...)
		if len(line) > max {
			return nil, fmt.Errorf("event-stream line over %d bytes: cannot mask", max)
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		return line, err
	}
}

// maskText masks a text body whole, up to maxTextBody; a larger one fails
// (closed).
func maskText(dst io.Writer, src io.Reader, m *mask.Masker) error {
	b, err := io.ReadAll(io.LimitReader(src, maxTextBody+1))
	if err != nil {
		return err
	}
	if len(b) > maxTextBody {
		return fmt.Errorf("text body over %d bytes: cannot mask", maxTextBody)
	}
	_, err = dst.Write(m.Scan(b))
	return err
}
