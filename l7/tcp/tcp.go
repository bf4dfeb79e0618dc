// Package tcp is loopgate's plain TCP handler: a byte relay between the
// redirected client and the target it dialled, with bytes counted.
//
// It relays with io.Copy between *net.TCPConn values so Linux splices the
// bytes without copying them through user space. A half-close on one side is
// passed on (CloseWrite), so request/response protocols that signal the end
// of a request with a FIN keep working.
package tcp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/loopgate/loopgate/l7"
	"github.com/loopgate/loopgate/policy"
	"github.com/loopgate/loopgate/store/event"
)

// Handler relays TCP sessions. Its zero value is ready to use; it is safe
// for concurrent use.
type Handler struct {
	// DialTimeout bounds the upstream dial; 0 means 10 seconds.
	DialTimeout time.Duration
}

// Serve dials the subject's original destination and relays until both
// directions end or ctx is cancelled.
func (h *Handler) Serve(ctx context.Context, client net.Conn, s *l7.Session) (l7.Result, error) {
	// A TCP session is one command: "connect". Nothing can carry an OIDC
	// token, so a workload that needs one is denied here by policy.
	switch d := s.Decide(ctx, "connect", "connect"); d.Action {
	case policy.Allow:
		s.Admit("connect")
	case policy.Approve:
		out, err := s.Approve(ctx, d, "connect to "+s.Subject.OrigDst.String(), "", nil)
		if err != nil || !out.Approved {
			d.Action, d.Reason = policy.Deny, "not approved: "+out.Reason
			return l7.Result{}, &l7.DeniedError{Decision: d}
		}
		s.Record(ctx, event.Event{Kind: event.KindDecision, Text: "connect", Decision: "allow", RuleID: d.RuleID, ApprovalID: out.ID})
		s.Admit("connect")
	default:
		return l7.Result{}, &l7.DeniedError{Decision: d}
	}
	timeout := h.DialTimeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	d := net.Dialer{Timeout: timeout}
	addr := s.Subject.OrigDst.String()
	up, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return l7.Result{}, fmt.Errorf("dial upstream %s: %w", addr, err)
	}
	defer up.Close()
	// Unblock both copies when the session is cancelled.
	stop := context.AfterFunc(ctx, func() {
		past := time.Unix(1, 0)
		client.SetDeadline(past)
		up.SetDeadline(past)
	})
	defer stop()

	var res l7.Result
	var upErr, downErr error
	var wg sync.WaitGroup
	wg.Go(func() { res.BytesUp, upErr = pipe(up, client) })
	res.BytesDown, downErr = pipe(client, up)
	wg.Wait()
	if ctx.Err() != nil {
		return res, context.Cause(ctx)
	}
	return res, errors.Join(upErr, downErr)
}

// pipe copies src to dst, then half-closes dst. Reset or closed connections
// at the end of a session are normal endings, not errors.
func pipe(dst, src net.Conn) (int64, error) {
	n, err := io.Copy(dst, src)
	if cw, ok := dst.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	if err != nil && (errors.Is(err, net.ErrClosed) || isReset(err)) {
		err = nil
	}
	return n, err
}
