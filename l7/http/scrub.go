package http

import (
	"bytes"
	"encoding/base64"
	"io"
	stdhttp "net/http"
	"strconv"
	"strings"

	"github.com/loopgate/loopgate/policy"
)

// scrubbed is what an echoed credential becomes.
const scrubbed = "[redacted]"

// needles are the forms of t's secret a response could echo: the secret
// and, for Basic, the header value's base64.
func needles(t *policy.Target, secret string) [][]byte {
	if secret == "" {
		return nil
	}
	out := [][]byte{[]byte(secret)}
	if t.Credentials.HTTP.Scheme == policy.SchemeBasic {
		out = append(out, []byte(base64.StdEncoding.EncodeToString([]byte(t.Credentials.User+":"+secret))))
	}
	return out
}

// scrubHeader replaces the secret in response header values: a target
// that echoes its request (debug endpoints, error pages) must not hand the
// agent the credential it never held.
func scrubHeader(h stdhttp.Header, ns [][]byte) {
	for k, vs := range h {
		for i, v := range vs {
			for _, n := range ns {
				if strings.Contains(v, string(n)) {
					vs[i] = strings.ReplaceAll(v, string(n), scrubbed)
					v = vs[i]
				}
			}
		}
		h[k] = vs
	}
}

// maxScrubWhole is the largest body with a length scrubbed whole, so it
// keeps an exact Content-Length; larger ones stream without one.
const maxScrubWhole = 1 << 20

// scrubBody replaces the secret in resp's body: whole (with its new
// length) when it is small and of known length, else as it streams.
func scrubBody(resp *stdhttp.Response, ns [][]byte) error {
	if resp.ContentLength >= 0 && resp.ContentLength <= maxScrubWhole {
		b, err := io.ReadAll(io.LimitReader(resp.Body, maxScrubWhole+1))
		resp.Body.Close()
		if err != nil {
			return err
		}
		for _, n := range ns {
			if bytes.Contains(b, n) {
				b = bytes.ReplaceAll(b, n, []byte(scrubbed))
			}
		}
		resp.Body = io.NopCloser(bytes.NewReader(b))
		resp.ContentLength = int64(len(b))
		resp.Header.Set("Content-Length", strconv.Itoa(len(b)))
		return nil
	}
	resp.Body = newScrubReader(resp.Body, ns)
	resp.ContentLength = -1
	resp.Header.Del("Content-Length")
	return nil
}

// scrubReader replaces the secret in a body as it streams: it holds back
// only a tail of what it has read that could begin a secret (one that
// straddles two reads), so streams (SSE) are not delayed.
type scrubReader struct {
	r      io.ReadCloser
	ns     [][]byte
	buf    []byte // read, not yet returned
	out    []byte // scrubbed, ready
	err    error
	rawBuf []byte
}

func newScrubReader(r io.ReadCloser, ns [][]byte) *scrubReader {
	return &scrubReader{r: r, ns: ns, rawBuf: make([]byte, 32<<10)}
}

func (s *scrubReader) Read(p []byte) (int, error) {
	for len(s.out) == 0 {
		if s.err != nil {
			if len(s.buf) > 0 {
				s.out, s.buf = s.scrub(s.buf), nil
				continue
			}
			return 0, s.err
		}
		n, err := s.r.Read(s.rawBuf)
		s.buf = append(s.buf, s.rawBuf[:n]...)
		s.err = err
		s.buf = s.scrub(s.buf)
		hold := 0
		if err == nil {
			hold = s.holdback(s.buf)
		}
		if cut := len(s.buf) - hold; cut > 0 {
			s.out = append(s.out[:0], s.buf[:cut]...)
			s.buf = append(s.buf[:0], s.buf[cut:]...)
		}
	}
	n := copy(p, s.out)
	s.out = s.out[n:]
	return n, nil
}

// holdback is the length of the longest suffix of b that is a proper
// prefix of a needle.
func (s *scrubReader) holdback(b []byte) int {
	best := 0
	for _, n := range s.ns {
		for k := min(len(b), len(n)-1); k > best; k-- {
			if bytes.HasSuffix(b, n[:k]) {
				best = k
				break
			}
		}
	}
	return best
}

func (s *scrubReader) scrub(b []byte) []byte {
	for _, n := range s.ns {
		if bytes.Contains(b, n) {
			b = bytes.ReplaceAll(b, n, []byte(scrubbed))
		}
	}
	return b
}

func (s *scrubReader) Close() error { return s.r.Close() }
