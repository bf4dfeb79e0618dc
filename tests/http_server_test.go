package tests

import (
	"crypto/sha1"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/loopgate/loopgate/tests/lgtest"
)

// apiServer is a Go net/http TLS target with JSON, SSE and WebSocket
// endpoints; it remembers the Authorization headers it was sent.
type apiServer struct {
	Port    int
	CA      *lgtest.CA
	mu      sync.Mutex
	auth    []string
	reached []string      // paths requested
	release chan struct{} // /sse sends its second event once closed
	// sseTimedOut: /sse gave up waiting for release (the first event
	// was not delivered while it waited).
	sseTimedOut bool
}

// bigItems is how many items /big streams (about 10 MB).
const bigItems = 100000

func startAPIServer(t testing.TB, name string) *apiServer {
	t.Helper()
	s := &apiServer{CA: lgtest.NewCA(t, "api test CA"), release: make(chan struct{})}
	crt, key := s.CA.Issue(t, name, "127.0.0.1")
	cert, err := tls.X509KeyPair(crt, key)
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.auth = append(s.auth, r.Header.Get("Authorization"))
		s.reached = append(s.reached, r.Method+" "+r.URL.EscapedPath())
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Alt-Svc", `h3=":443"`)
		fmt.Fprintf(w, `{"method":%q,"path":%q,"proto":%q}`, r.Method, r.URL.EscapedPath(), r.Proto)
	})
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		pad := strings.Repeat("x", 60)
		io.WriteString(w, `{"items":[`)
		for i := range bigItems {
			if i > 0 {
				io.WriteString(w, ",")
			}
			fmt.Fprintf(w, `{"id":%d,"email":"user%d@example.com","pad":"%s"}`, i, i, pad)
		}
		io.WriteString(w, `]}`)
	})
	mux.HandleFunc("/sse", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, "data: {\"n\":1,\"email\":\"ada@example.com\"}\n\n")
		w.(http.Flusher).Flush()
		select {
		case <-s.release:
		case <-time.After(15 * time.Second):
			s.mu.Lock()
			s.sseTimedOut = true
			s.mu.Unlock()
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, "data: {\"n\":2}\n\n")
	})
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		conn, rw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		wsServe(conn, rw, r.Header.Get("Sec-WebSocket-Key"))
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s.Port = ln.Addr().(*net.TCPAddr).Port
	srv := &http.Server{Handler: mux, TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1"}}}
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })
	return s
}

func wsAcceptKey(key string) string {
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h[:])
}

// Auth returns the Authorization headers the server was sent.
func (s *apiServer) Auth() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.auth...)
}

// Reached returns the requests that reached the server.
func (s *apiServer) Reached() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.reached...)
}

// plainServer is a plain http:// target that echoes the x-api-key it got.
type plainServer struct {
	Port int
	mu   sync.Mutex
	seen string
}

// Seen is the last x-api-key the server got.
func (p *plainServer) Seen() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.seen
}

func startPlainServer(t testing.TB) *plainServer {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &plainServer{Port: ln.Addr().(*net.TCPAddr).Port}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.seen = r.Header.Get("X-Api-Key")
		p.mu.Unlock()
		io.WriteString(w, "x-api-key="+r.Header.Get("X-Api-Key"))
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return p
}
