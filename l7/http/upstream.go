package http

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	stdhttp "net/http"
	"net/http/httputil"
	"os"
	"sync"
	"time"

	"github.com/loopgate/loopgate/policy"
)

// upstreams holds http.Transports per target (its roots and client
// certificate), so connections to a target are kept alive and shared by
// the target's sessions. Each target has two: an agent that speaks
// HTTP/2 is relayed over HTTP/2, one that speaks HTTP/1.1 over a pool of
// HTTP/1.1 connections, as it would have used direct. (Relaying every
// agent over HTTP/2 put 64 agents' connections on one upstream
// connection, served by one nginx worker: 0.12 of direct throughput; see
// BenchmarkHTTP.) Every dial goes to the address the agent
// dialled (carried in the request's exchange), never to what a name
// resolves to now. mu guards m.
type upstreams struct {
	dialTimeout time.Duration
	mu          sync.Mutex
	m           map[transportKey]*stdhttp.Transport
}

// transportKey names a target's transport: what it verifies and presents
// upstream, and the protocol it speaks (a map key looked up per request,
// so a struct, not a string built each time).
type transportKey struct {
	target, caFile, certFile, keyFile string
	h2                                bool
}

func keyOf(t *policy.Target, h2 bool) transportKey {
	c := t.Credentials.HTTP
	return transportKey{t.Name, t.TLS.CAFile, c.CertFile, c.KeyFile, h2}
}

func (u *upstreams) transport(t *policy.Target, h2 bool) (*stdhttp.Transport, error) {
	key := keyOf(t, h2)
	u.mu.Lock()
	defer u.mu.Unlock()
	if tr, ok := u.m[key]; ok {
		return tr, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if t.TLS.CAFile != "" {
		pem, err := os.ReadFile(t.TLS.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ca_file %s holds no PEM certificate", t.TLS.CAFile)
		}
		cfg.RootCAs = pool
	}
	if c := t.Credentials.HTTP; c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	timeout := u.dialTimeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	d := &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}
	tr := &stdhttp.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			ex, ok := ctx.Value(stateKey{}).(*exchange)
			if !ok {
				return nil, errors.New("upstream dial without an exchange")
			}
			return d.DialContext(ctx, network, ex.dial)
		},
		TLSClientConfig:        cfg,
		ForceAttemptHTTP2:      h2,
		MaxIdleConnsPerHost:    256,
		IdleConnTimeout:        90 * time.Second,
		TLSHandshakeTimeout:    timeout,
		ExpectContinueTimeout:  time.Second,
		MaxResponseHeaderBytes: 1 << 20,
	}
	if !h2 {
		// A non-nil empty map: never negotiate HTTP/2.
		tr.TLSNextProto = map[string]func(string, *tls.Conn) stdhttp.RoundTripper{}
		cfg.NextProtos = []string{"http/1.1"}
	}
	// Old transports of a target whose settings changed are left to idle
	// out; bound the map all the same.
	if len(u.m) > 1024 {
		for k, old := range u.m {
			old.CloseIdleConnections()
			delete(u.m, k)
		}
	}
	u.m[key] = tr
	return tr, nil
}

// RoundTrip sends a request through its target's transport.
func (u *upstreams) RoundTrip(r *stdhttp.Request) (*stdhttp.Response, error) {
	ex, ok := r.Context().Value(stateKey{}).(*exchange)
	if !ok {
		return nil, errors.New("request without an exchange")
	}
	tr, err := u.transport(ex.target, ex.h2)
	if err != nil {
		return nil, err
	}
	return tr.RoundTrip(r)
}

func (u *upstreams) close() {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, tr := range u.m {
		tr.CloseIdleConnections()
	}
}

type bufPool struct{ p sync.Pool }

func (b *bufPool) Get() []byte {
	if v := b.p.Get(); v != nil {
		return *v.(*[]byte)
	}
	return make([]byte, 32<<10)
}

func (b *bufPool) Put(p []byte) { b.p.Put(&p) }

// reverseProxy is the stdlib proxy with loopgate's rewrite: the
// normalised path, the agent's Host, the agent's credentials stripped and
// the target's injected, Accept-Encoding dropped on masked routes (Go's
// transport then asks for gzip and decodes it), Alt-Svc stripped (QUIC is
// refused anyway), bodies masked, upgrades recorded frame by frame.
// Streaming responses (SSE, chunked, no length) are flushed as they come.
func (h *Handler) reverseProxy() stdhttp.Handler {
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			ex := pr.In.Context().Value(stateKey{}).(*exchange)
			out := pr.Out
			out.URL.Scheme, out.URL.Host = ex.scheme, ex.host
			out.URL.Path, out.URL.RawPath = ex.clean, ""
			if ex.escaped != ex.clean {
				out.URL.RawPath = ex.escaped
			}
			out.URL.RawQuery = pr.In.URL.RawQuery
			out.Host = pr.In.Host
			secret, _ := h.secrets.get(ex.target)
			injectCredentials(out.Header, ex.target, secret)
			if !ex.masker.Empty() {
				out.Header.Del("Accept-Encoding")
			}
		},
		Transport:      h.up,
		ModifyResponse: h.modifyResponse,
		ErrorHandler: func(w stdhttp.ResponseWriter, r *stdhttp.Request, err error) {
			ex := r.Context().Value(stateKey{}).(*exchange)
			if ex.maskErr == nil {
				ex.upErr = err
			}
			msg := "loopgate: upstream: " + err.Error()
			if ex.maskErr != nil {
				msg = "loopgate: the response could not be masked; not passed (" + ex.maskErr.Error() + ")"
			}
			writeJSON(w, stdhttp.StatusBadGateway, map[string]any{"error": msg})
		},
		ErrorLog:   log.New(io.Discard, "", 0), // errors are recorded per request
		BufferPool: &bufPool{},
	}
}
