package http

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	stdhttp "net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/loopgate/loopgate/l7"
	"github.com/loopgate/loopgate/policy"
	"github.com/loopgate/loopgate/policy/mask"
)

// maxApprovalBody bounds the body of a request held for approval: it is
// read whole so the approval can name its hash.
const maxApprovalBody = 16 << 20

// session serves the requests of one agent connection.
type session struct {
	h        *Handler
	s        *l7.Session
	sni      string // the name TLS was terminated for ("" for plain HTTP)
	tls      bool
	finish   func()
	hijacked atomic.Bool
}

// stateKey carries a request's *exchange through the reverse proxy.
type stateKey struct{}

// exchange is one request: what was decided and where it goes.
type exchange struct {
	se      *session
	target  *policy.Target
	scheme  string // upstream: https when the agent used TLS
	host    string // upstream URL host: the SNI (or Host) and port; TLS verifies it
	dial    string // the address the agent dialled: where the connection goes
	clean   string // normalised path, decoded
	escaped string // normalised path, as sent upstream
	masker  *mask.Masker
	text    string
	// h2: the agent speaks HTTP/2, and so does the upstream leg; an
	// HTTP/1.1 agent gets HTTP/1.1 upstream (see upstreams).
	h2      bool
	upErr   error
	maskErr error
	reqBody *excerpt
}

// route turns a request into the command policy decides: its text (what
// approvers see and the record keeps) and its class. The generic route
// works by method and path; a kind: kubernetes route (RequestInfo, exec
// argv, risky subresources whatever the verb) is another route and reuses
// everything else of the handler.
type route interface {
	command(r *stdhttp.Request, clean, query string) (text, class string)
}

// genericRoute is the route of every http target today.
type genericRoute struct{}

func (genericRoute) command(r *stdhttp.Request, clean, query string) (string, string) {
	text := r.Method + " " + clean
	if query != "" {
		text += "?" + query
	}
	return text, classify(r)
}

var _ route = genericRoute{}

// classify sorts a request into its class: read (GET, HEAD, OPTIONS
// without a body), write (POST, PUT, PATCH), delete, and unknown for the
// rest (CONNECT, TRACE, made-up methods, a body on a read).
func classify(r *stdhttp.Request) string {
	hasBody := r.Body != nil && r.Body != stdhttp.NoBody && r.ContentLength != 0
	switch r.Method {
	case stdhttp.MethodGet, stdhttp.MethodHead, stdhttp.MethodOptions:
		if hasBody {
			return "unknown"
		}
		return "read"
	case stdhttp.MethodPost, stdhttp.MethodPut, stdhttp.MethodPatch:
		return "write"
	case stdhttp.MethodDelete:
		return "delete"
	}
	return "unknown"
}

// ServeHTTP decides one request, then proxies it or answers why not.
func (se *session) ServeHTTP(w stdhttp.ResponseWriter, r *stdhttp.Request) {
	start := time.Now()
	s := se.s
	t := s.Subject.Target
	ctx := r.Context()
	orig := s.Subject.OrigDst

	raw := r.RequestURI
	if u, err := url.ParseRequestURI(raw); err == nil && u.IsAbs() {
		raw = u.EscapedPath()
		if u.RawQuery != "" {
			raw += "?" + u.RawQuery
		}
	}
	rawPath, query, _ := strings.Cut(raw, "?")
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.ToLower(strings.Trim(host, "[]")), ".")

	// The name the request is for must be the name TLS was set up for
	// (no fronting, no HTTP/2 coalescing onto another host), and, on
	// plain HTTP, resolve to the address dialled.
	if host == "" {
		se.refuse(w, r, r.Method+" "+rawPath, "request without a Host", stdhttp.StatusBadRequest)
		return
	}
	if se.tls && host != se.sni {
		se.refuse(w, r, r.Method+" "+rawPath, "Host "+host+" is not the TLS server name "+se.sni, stdhttp.StatusMisdirectedRequest)
		return
	}
	if !se.tls {
		if err := se.h.names.check(ctx, host, orig.Addr()); err != nil {
			se.refuse(w, r, r.Method+" "+rawPath, err.Error(), stdhttp.StatusMisdirectedRequest)
			return
		}
	}
	clean, escaped, err := normalizePath(rawPath)
	if err != nil {
		se.refuse(w, r, r.Method+" "+rawPath, "path refused: "+err.Error(), stdhttp.StatusBadRequest)
		return
	}

	text, class := genericRoute{}.command(r, clean, query)
	d := s.Check(class)
	d = s.Policy().DecideRequest(d, r.Method, clean)
	m, err := mask.New(s.Policy(), d.Masks, se.h.MaskKey)
	if err != nil {
		d = policy.Decision{Action: policy.Deny, RuleID: d.RuleID, Reason: "masks: " + err.Error()}
	}
	if !m.Empty() {
		text = m.String(text)
	}

	secret, secretErr := se.h.secrets.get(t)
	if secretErr != nil && d.Action != policy.Deny {
		d = policy.Decision{Action: policy.Deny, RuleID: d.RuleID, Reason: "credential unavailable: " + secretErr.Error()}
	}
	if reason := ownSecret(r, t, secret); reason != "" && d.Action != policy.Deny {
		d = policy.Decision{Action: policy.Deny, RuleID: d.RuleID, Class: class, Reason: reason}
	}

	var params string
	if d.Action == policy.Approve && r.Body != nil && r.Body != stdhttp.NoBody {
		body, err := io.ReadAll(io.LimitReader(r.Body, maxApprovalBody+1))
		if err != nil {
			return // the client went away
		}
		if len(body) > maxApprovalBody {
			d = policy.Decision{Action: policy.Deny, RuleID: d.RuleID, Class: class,
				Reason: "a request held for approval may carry at most 16 MiB"}
		}
		sum := sha256.Sum256(body)
		params = "sha256:" + hex.EncodeToString(sum[:])
		r.Body = io.NopCloser(bytes.NewReader(body))
		text += approvalBody(body, r.Header.Get("Content-Type"), m)
	}

	cmd := &l7.Command{Text: text, Params: params, Classes: []string{class}, Decision: d}
	var pending string
	cmd.Notify = func(q policy.Request) { pending = q.ID }
	wait := s.Policy().Approvals.HTTPWait
	if wait <= 0 {
		wait = se.h.ApprovalWait
	}
	if wait <= 0 {
		wait = DefaultApprovalWait
	}
	wctx, cancel := context.WithTimeoutCause(ctx, wait, policy.ErrStoppedWaiting)
	err = s.Authorize(wctx, cmd)
	stopped := errors.Is(context.Cause(wctx), policy.ErrStoppedWaiting)
	cancel()
	if err != nil || cmd.Decision.Action != policy.Allow {
		reason := cmd.Decision.Reason
		id := cmd.ApprovalID
		if id == "" {
			id = pending
		}
		if stopped && id != "" {
			w.Header().Set("Retry-After", "10")
			writeJSON(w, stdhttp.StatusForbidden, map[string]any{
				"error":    "loopgate: approval " + id + " is pending; retry the same request once it is approved",
				"approval": id, "state": policy.StatePending, "rule": cmd.Decision.RuleID})
			return
		}
		body := map[string]any{"error": "loopgate: " + reason, "rule": cmd.Decision.RuleID}
		if id != "" {
			body["approval"] = id
		}
		writeJSON(w, stdhttp.StatusForbidden, body)
		return
	}

	ex := &exchange{se: se, target: t, clean: clean, escaped: escaped, masker: m, text: text, h2: r.ProtoMajor == 2}
	ex.dial = orig.String()
	if se.tls {
		ex.scheme = "https"
		ex.host = net.JoinHostPort(se.sni, strconv.Itoa(int(orig.Port())))
	} else {
		ex.scheme = "http"
		ex.host = net.JoinHostPort(host, strconv.Itoa(int(orig.Port())))
	}
	ex.reqBody = &excerpt{}
	if r.Body != nil && r.Body != stdhttp.NoBody {
		r.Body = &teeBody{ReadCloser: r.Body, x: ex.reqBody}
	}
	cw := &captureWriter{ResponseWriter: w, status: stdhttp.StatusOK}
	r = r.WithContext(context.WithValue(ctx, stateKey{}, ex))
	defer func() {
		p := recover()
		se.record(ex, r, cw, cmd, start, p)
		if se.hijacked.Load() {
			se.finish()
		}
		if p != nil {
			panic(p)
		}
	}()
	se.h.rp.ServeHTTP(cw, r)
}

// refuse answers a request refused before policy could weigh it, and
// records the refusal through the decision path.
func (se *session) refuse(w stdhttp.ResponseWriter, r *stdhttp.Request, text, reason string, status int) {
	d := policy.Decision{Action: policy.Deny, Reason: reason}
	cmd := &l7.Command{Text: text, Classes: []string{classify(r)}, Decision: d}
	se.s.Authorize(r.Context(), cmd)
	writeJSON(w, status, map[string]any{"error": "loopgate: " + reason})
}

func writeJSON(w stdhttp.ResponseWriter, status int, v any) {
	b, _ := json.Marshal(v)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)+1))
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

// maxApprovalExcerpt is how much of a held request's body approvers see.
const maxApprovalExcerpt = 4 << 10

// approvalBody is what approvers see of a held request's body: its type
// and a masked excerpt. It is part of the command text, so it is the same
// for the agent's retry of the same request.
func approvalBody(body []byte, ct string, m *mask.Masker) string {
	if len(body) == 0 {
		return ""
	}
	x := &excerpt{}
	x.add(body[:min(len(body), maxApprovalExcerpt)])
	x.n = int64(len(body))
	out := "\n\nContent-Type: " + ct + "\n\n" + bodyRecord(x, ct, m)
	if len(body) > maxApprovalExcerpt {
		out += fmt.Sprintf("\n[%d bytes in all; sha256 bound]", len(body))
	}
	return out
}
