package http

import (
	"encoding/json"
	"fmt"
	"io"
	"mime"
	stdhttp "net/http"
	"strconv"
	"strings"
	"time"

	"github.com/loopgate/loopgate/l7"
	"github.com/loopgate/loopgate/policy/mask"
	"github.com/loopgate/loopgate/store/event"
)

// maxExcerpt caps the body bytes a record keeps of each direction.
const maxExcerpt = 64 << 10

// excerpt keeps the first maxExcerpt bytes of a body and counts the rest.
type excerpt struct {
	b []byte
	n int64
}

func (x *excerpt) add(p []byte) {
	x.n += int64(len(p))
	if room := maxExcerpt - len(x.b); room > 0 {
		x.b = append(x.b, p[:min(room, len(p))]...)
	}
}

func (x *excerpt) truncated() bool { return x.n > int64(len(x.b)) }

// teeBody copies a request body into an excerpt as it streams upstream.
type teeBody struct {
	io.ReadCloser
	x *excerpt
}

func (t *teeBody) Read(p []byte) (int, error) {
	n, err := t.ReadCloser.Read(p)
	t.x.add(p[:n])
	return n, err
}

// captureWriter notes the status and an excerpt of what the agent is sent
// (masked already, when the route masks).
type captureWriter struct {
	stdhttp.ResponseWriter
	status  int
	wrote   bool
	body    excerpt
	headers stdhttp.Header
}

func (c *captureWriter) WriteHeader(code int) {
	if !c.wrote && code >= 200 || code == stdhttp.StatusSwitchingProtocols {
		c.status, c.wrote = code, true
		c.headers = c.ResponseWriter.Header().Clone()
	}
	c.ResponseWriter.WriteHeader(code)
}

func (c *captureWriter) Write(p []byte) (int, error) {
	if !c.wrote {
		c.WriteHeader(stdhttp.StatusOK)
	}
	n, err := c.ResponseWriter.Write(p)
	c.body.add(p[:n])
	return n, err
}

// Unwrap lets http.ResponseController flush and hijack.
func (c *captureWriter) Unwrap() stdhttp.ResponseWriter { return c.ResponseWriter }

// secretHeaders are recorded as [redacted] whatever the masks.
var secretHeaders = map[string]bool{"Authorization": true, "Proxy-Authorization": true, "Cookie": true,
	"Set-Cookie": true, "X-Api-Key": true, "Api-Key": true, "X-Auth-Token": true, "Private-Token": true,
	"X-Goog-Api-Key": true, "Anthropic-Api-Key": true}

func recordHeaders(h stdhttp.Header, m *mask.Masker, extra string) map[string]string {
	out := make(map[string]string, len(h))
	for k, vs := range h {
		v := strings.Join(vs, ", ")
		if secretHeaders[k] || k == extra {
			v = "[redacted]"
		} else if !m.Empty() {
			v = m.String(v)
		}
		out[k] = v
	}
	return out
}

// textual reports whether a content type is worth keeping as text.
func textual(ct string) bool {
	mt, _, _ := mime.ParseMediaType(ct)
	return strings.HasPrefix(mt, "text/") || strings.HasSuffix(mt, "json") || strings.HasSuffix(mt, "+json") ||
		strings.HasSuffix(mt, "xml") || mt == "application/x-www-form-urlencoded" || mt == "application/javascript" || mt == ""
}

func isJSON(ct string) bool {
	mt, _, _ := mime.ParseMediaType(ct)
	return strings.HasSuffix(mt, "/json") || strings.HasSuffix(mt, "+json") || mt == "application/x-ndjson" || mt == "application/jsonl"
}

// bodyRecord is a body as the record keeps it: masked text, or a note.
func bodyRecord(x *excerpt, ct string, m *mask.Masker) string {
	if x == nil || x.n == 0 {
		return ""
	}
	if !textual(ct) {
		return fmt.Sprintf("[%d bytes of %s]", x.n, ct)
	}
	if m.Empty() {
		return string(x.b)
	}
	if isJSON(ct) && !x.truncated() {
		if b, err := m.JSONBytes(x.b); err == nil {
			return string(b)
		}
	}
	return m.String(string(x.b))
}

type exchangeRecord struct {
	Proto    string            `json:"proto"`
	ReqHdr   map[string]string `json:"request_headers"`
	ReqBody  string            `json:"request_body,omitempty"`
	ReqBytes int64             `json:"request_bytes"`
	ReqTrunc bool              `json:"request_truncated,omitempty"`
	Status   int               `json:"status"`
	RespHdr  map[string]string `json:"response_headers,omitempty"`
	Body     string            `json:"response_body,omitempty"`
	Trunc    bool              `json:"response_truncated,omitempty"`
	Masked   bool              `json:"masked,omitempty"`
}

// record writes the request's result: status, bytes, duration, masked
// headers and body excerpts. p is a panic the proxy aborted with.
func (se *session) record(ex *exchange, r *stdhttp.Request, cw *captureWriter, cmd *l7.Command, start time.Time, p any) {
	m := ex.masker
	hdrName := ex.target.Credentials.HTTP.Header
	rec := exchangeRecord{
		Proto: r.Proto, ReqHdr: recordHeaders(r.Header, m, hdrName),
		ReqBody: bodyRecord(ex.reqBody, r.Header.Get("Content-Type"), m), ReqBytes: ex.reqBody.n, ReqTrunc: ex.reqBody.truncated(),
		Status: cw.status, Masked: !m.Empty(),
	}
	if cw.headers != nil {
		rec.RespHdr = recordHeaders(cw.headers, m, "")
		if cw.status != stdhttp.StatusSwitchingProtocols {
			// Masked routes hand the agent masked bodies already; scan
			// again so an excerpt cut mid-document stays masked.
			rec.Body = bodyRecord(&cw.body, cw.headers.Get("Content-Type"), m)
			rec.Trunc = cw.body.truncated()
		}
	}
	params, _ := json.Marshal(rec)
	ev := event.Event{Kind: event.KindResult, Text: ex.text, Params: string(params),
		Tag: strconv.Itoa(cw.status) + " " + stdhttp.StatusText(cw.status), Decision: "allow", RuleID: cmd.Decision.RuleID,
		ApprovalID: cmd.ApprovalID, Duration: time.Since(start), Bytes: cw.body.n}
	switch {
	case ex.maskErr != nil:
		ev.Error = "masking failed, response cut off (fail closed): " + ex.maskErr.Error()
	case ex.upErr != nil:
		ev.Error = "upstream: " + ex.upErr.Error()
	case p != nil:
		ev.Error = fmt.Sprint("response aborted: ", p)
	}
	se.s.RecordAsync(ev)
}

// noteEvent is a note in the session's record.
func noteEvent(text string) event.Event { return event.Event{Kind: event.KindNote, Text: text} }
