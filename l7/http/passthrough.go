package http

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/loopgate/loopgate/l7"
	"github.com/loopgate/loopgate/policy"
	"github.com/loopgate/loopgate/store/event"
)

// errHelloRead stops the handshake once the ClientHello is read.
var errHelloRead = errors.New("client hello read")

// recordingReader keeps what is read through it (the ClientHello, replayed
// upstream).
type recordingReader struct {
	r   io.Reader
	buf []byte
}

func (r *recordingReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.buf = append(r.buf, p[:n]...)
	if len(r.buf) > 64<<10 {
		return n, errors.New("client hello over 64 KiB")
	}
	return n, err
}

// helloConn lets crypto/tls parse a ClientHello without answering: writes
// are dropped (no alert reaches the agent).
type helloConn struct {
	net.Conn
	r io.Reader
}

func (c helloConn) Read(p []byte) (int, error)  { return c.r.Read(p) }
func (c helloConn) Write(p []byte) (int, error) { return len(p), nil }

// passthrough splices a tls: passthrough target's connection unopened: the
// decision is made on the SNI (which must resolve to the address dialled),
// the ClientHello is replayed upstream, and only bytes and timing are
// recorded.
func (h *Handler) passthrough(ctx context.Context, pc *peekConn, s *l7.Session, isTLS bool) error {
	orig := s.Subject.OrigDst
	var first []byte
	name := orig.Addr().Unmap().String()
	if isTLS {
		rec := &recordingReader{r: pc}
		var sni string
		srv := tls.Server(helloConn{Conn: pc, r: rec}, &tls.Config{
			GetConfigForClient: func(hi *tls.ClientHelloInfo) (*tls.Config, error) {
				sni = strings.TrimSuffix(strings.ToLower(hi.ServerName), ".")
				return nil, errHelloRead
			},
		})
		hctx, cancel := context.WithTimeout(ctx, defaultHandshake)
		err := srv.HandshakeContext(hctx)
		cancel()
		if !errors.Is(err, errHelloRead) {
			return fmt.Errorf("read client hello: %w", err)
		}
		first = rec.buf
		if sni != "" {
			if err := h.names.check(ctx, sni, orig.Addr()); err != nil {
				return h.refuse(ctx, s, "TLS passthrough "+sni, err.Error())
			}
			name = sni
		}
	}
	pc.SetReadDeadline(time.Time{})
	text := "TLS passthrough " + name
	if !isTLS {
		text = "passthrough " + orig.String() + " (not TLS)"
	}
	cmd := &l7.Command{Text: text, Classes: []string{"connect"}, Hold: true}
	if err := s.Authorize(ctx, cmd); err != nil {
		return err
	}
	if cmd.Decision.Action != policy.Allow {
		return &l7.DeniedError{Decision: cmd.Decision}
	}
	start := time.Now()
	d := net.Dialer{Timeout: 10 * time.Second}
	up, err := d.DialContext(ctx, "tcp", orig.String())
	if err != nil {
		return fmt.Errorf("dial upstream %s: %w", orig, err)
	}
	defer up.Close()
	stop := context.AfterFunc(ctx, func() {
		pc.SetDeadline(time.Unix(1, 0))
		up.SetDeadline(time.Unix(1, 0))
	})
	defer stop()
	var upN, downN int64
	if _, err := up.Write(first); err != nil {
		return fmt.Errorf("replay client hello: %w", err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		upN, _ = io.Copy(up, pc)
		if cw, ok := up.(interface{ CloseWrite() error }); ok {
			cw.CloseWrite()
		}
	})
	downN, _ = io.Copy(pc, up)
	if cw, ok := pc.Conn.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	wg.Wait()
	s.RecordAsync(event.Event{Kind: event.KindResult, Text: text, Tag: "spliced", Decision: "allow",
		RuleID: cmd.Decision.RuleID, Bytes: upN + downN + int64(len(first)), Duration: time.Since(start),
		Params: fmt.Sprintf(`{"bytes_agent_to_target":%d,"bytes_target_to_agent":%d}`, upN+int64(len(first)), downN)})
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	return nil
}
