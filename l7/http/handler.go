package http

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	stdhttp "net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/loopgate/loopgate/l7"
	"github.com/loopgate/loopgate/policy"
)

// Defaults for the Handler's knobs.
const (
	DefaultApprovalWait = 30 * time.Second
	defaultHandshake    = 30 * time.Second
	defaultIdle         = 90 * time.Second
	maxHeaderBytes      = 64 << 10
)

// Resolver looks host names up; *net.Resolver satisfies it.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Handler serves http targets. Configure it before the first session; it
// is safe for concurrent use. Close releases its upstream connections.
type Handler struct {
	// Minter mints the certificates agents are shown; nil refuses TLS
	// (except tls: passthrough targets).
	Minter *Minter
	// MaskKey keys the hash mask mode.
	MaskKey []byte
	// ApprovalWait is how long a request held for approval waits before
	// it is answered 403 with the approval's id (the approval stays
	// pending for the agent's retry); 0 means DefaultApprovalWait.
	ApprovalWait time.Duration
	// MaxJSONToken caps one token of a masked JSON body (0: 8 MiB).
	MaxJSONToken int
	// Resolver checks that an SNI or Host names the address the agent
	// dialled; nil means net.DefaultResolver.
	Resolver Resolver
	// DialTimeout bounds upstream dials; 0 means 10 seconds.
	DialTimeout time.Duration

	once    sync.Once
	up      *upstreams
	names   *nameCache
	secrets *secretCache
	rp      stdhttp.Handler
}

func (h *Handler) init() {
	h.once.Do(func() {
		r := h.Resolver
		if r == nil {
			r = net.DefaultResolver
		}
		h.names = &nameCache{r: r, m: map[string]nameEntry{}}
		h.secrets = &secretCache{m: map[string]cachedSecret{}}
		h.up = &upstreams{dialTimeout: h.DialTimeout, m: map[transportKey]*stdhttp.Transport{}}
		h.rp = h.reverseProxy()
	})
}

// Close drops idle upstream connections.
func (h *Handler) Close() error {
	h.init()
	h.up.close()
	return nil
}

// peekConn is a conn whose first bytes come from a bufio.Reader that
// peeked them.
type peekConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// Serve runs one agent connection: TLS (terminated with a minted leaf, or
// spliced for tls: passthrough) or plain HTTP, then every request on it.
func (h *Handler) Serve(ctx context.Context, conn net.Conn, s *l7.Session) (l7.Result, error) {
	h.init()
	cc := &l7.CountingConn{Conn: conn}
	result := cc.Result
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	conn.SetReadDeadline(time.Now().Add(defaultHandshake))
	br := bufio.NewReaderSize(cc, 4<<10)
	first, err := br.Peek(1)
	if err != nil {
		if errors.Is(err, io.EOF) {
			return result(), nil
		}
		return result(), fmt.Errorf("read first byte: %w", err)
	}
	pc := &peekConn{Conn: cc, r: br}
	t := s.Subject.Target
	if t.TLS.Passthrough {
		err := h.passthrough(ctx, pc, s, first[0] == 0x16)
		return result(), err
	}
	if first[0] != 0x16 {
		conn.SetReadDeadline(time.Time{})
		return result(), h.serveHTTP(ctx, pc, conn, s, "", false)
	}
	if h.Minter == nil {
		return result(), errors.New("no CA to terminate TLS with")
	}
	var sni, asked string
	var nameErr error
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"h2", "http/1.1"},
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			name := strings.TrimSuffix(strings.ToLower(hello.ServerName), ".")
			asked = name
			if name == "" {
				name = s.Subject.OrigDst.Addr().Unmap().String()
			} else if err := h.names.check(hello.Context(), name, s.Subject.OrigDst.Addr()); err != nil {
				nameErr = err
				return nil, err
			}
			sni = name
			return h.Minter.Leaf(name)
		},
	}
	tc := tls.Server(pc, cfg)
	hctx, cancel := context.WithTimeout(ctx, defaultHandshake)
	err = tc.HandshakeContext(hctx)
	cancel()
	if nameErr != nil {
		return result(), h.refuse(ctx, s, "TLS "+asked, nameErr.Error())
	}
	if err != nil {
		// A client that does not trust loopgate's CA (pinned roots, its
		// own bundle) ends up here: recorded, never bypassed.
		s.Record(ctx, noteEvent("tls handshake failed for "+sniOr(tc, s)+": "+err.Error()+trustHint(err)))
		return result(), fmt.Errorf("tls handshake: %w", err)
	}
	conn.SetReadDeadline(time.Time{})
	return result(), h.serveHTTP(ctx, tc, conn, s, sni, true)
}

func sniOr(tc *tls.Conn, s *l7.Session) string {
	if n := tc.ConnectionState().ServerName; n != "" {
		return n
	}
	return s.Subject.OrigDst.String()
}

func trustHint(err error) string {
	msg := err.Error()
	if strings.Contains(msg, "unknown certificate authority") || strings.Contains(msg, "bad certificate") || strings.Contains(msg, "certificate unknown") {
		return " (the client does not trust loopgate's CA: pinned or embedded roots)"
	}
	return ""
}

// refuse records a refusal of the whole connection through the decision
// path and returns the error that ends the session as denied.
func (h *Handler) refuse(ctx context.Context, s *l7.Session, text, reason string) error {
	d := policy.Decision{Action: policy.Deny, Reason: reason}
	cmd := &l7.Command{Text: text, Classes: []string{"connect"}, Decision: d}
	if err := s.Authorize(ctx, cmd); err != nil {
		return err
	}
	return &l7.DeniedError{Decision: cmd.Decision}
}

// oneConn is a listener that yields one conn, then blocks until closed.
type oneConn struct {
	c      net.Conn
	once   sync.Once
	closed chan struct{}
	addr   net.Addr
}

func (l *oneConn) Accept() (net.Conn, error) {
	var c net.Conn
	l.once.Do(func() { c = l.c })
	if c != nil {
		return c, nil
	}
	<-l.closed
	return nil, net.ErrClosed
}

func (l *oneConn) Close() error {
	select {
	case <-l.closed:
	default:
		close(l.closed)
	}
	return nil
}

func (l *oneConn) Addr() net.Addr { return l.addr }

// serveHTTP runs an http.Server over one agent conn (c: the conn HTTP is
// read from, *tls.Conn when terminated; raw: the socket, closed to end a
// hijacked exchange) until the agent closes it or ctx ends.
func (h *Handler) serveHTTP(ctx context.Context, c, raw net.Conn, s *l7.Session, sni string, isTLS bool) error {
	done := make(chan struct{})
	var doneOnce sync.Once
	finish := func() { doneOnce.Do(func() { close(done) }) }
	ln := &oneConn{c: c, closed: make(chan struct{}), addr: raw.LocalAddr()}
	sess := &session{h: h, s: s, sni: sni, tls: isTLS, finish: finish}
	srv := &stdhttp.Server{
		Handler:           sess,
		ReadHeaderTimeout: defaultHandshake,
		IdleTimeout:       defaultIdle,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.Log.Handler(), slog.LevelDebug),
		ConnState: func(_ net.Conn, st stdhttp.ConnState) {
			switch st {
			case stdhttp.StateClosed:
				finish()
			case stdhttp.StateHijacked:
				sess.hijacked.Store(true)
			}
		},
		BaseContext: func(net.Listener) context.Context { return ctx },
	}
	var p stdhttp.Protocols
	p.SetHTTP1(true)
	p.SetHTTP2(isTLS)
	srv.Protocols = &p
	var wg sync.WaitGroup
	wg.Go(func() { srv.Serve(ln) })
	select {
	case <-done:
	case <-ctx.Done():
	}
	ln.Close()
	srv.Close()
	raw.Close() // a hijacked conn is not the server's to close
	wg.Wait()
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	return nil
}
