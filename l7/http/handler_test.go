package http

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	stdhttp "net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/loopgate/loopgate/l7"
	"github.com/loopgate/loopgate/l7/l7test"
	"github.com/loopgate/loopgate/policy"
	"github.com/loopgate/loopgate/store/event"
)

// testCA is a throwaway CA.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestCA(t testing.TB) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

func (ca *testCA) leaf(t testing.TB, hosts ...string) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: hosts[0]},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// leafPEM is a client certificate and key, PEM.
func (ca *testCA) leafPEM(t testing.TB, name string) (crt, key []byte) {
	t.Helper()
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &k.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kd, _ := x509.MarshalECPrivateKey(k)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd})
}

func (ca *testCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

type fakeResolver map[string][]netip.Addr

func (f fakeResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	if a, ok := f[host]; ok {
		return a, nil
	}
	return nil, fmt.Errorf("no such host %s", host)
}

// rig is a handler between a test client and a TLS upstream.
type rig struct {
	t        testing.TB
	upCA     *testCA
	h        *Handler
	srv      *l7.Server
	rec      *l7test.Recorder
	upstream *httptest.Server
	port     string
	lgCA     *testCA
	client   *stdhttp.Client
	seen     chan stdhttp.Header
	mu       sync.Mutex
	serving  sync.WaitGroup
}

const rigSecret = "s3cret-token-value"

func newRig(t *testing.T, rules string) *rig { return newRigTB(t, rules) }

// newRigTB builds a rig; with mtls, the upstream requires a client
// certificate, which the target's credentials name.
func newRigTB(t testing.TB, rules string, mtls ...bool) *rig {
	t.Helper()
	up := newTestCA(t)
	r := &rig{t: t, upCA: up, rec: l7test.NewRecorder(), lgCA: newTestCA(t), seen: make(chan stdhttp.Header, 16)}
	mux := stdhttp.NewServeMux()
	mux.HandleFunc("/", func(w stdhttp.ResponseWriter, q *stdhttp.Request) {
		select {
		case r.seen <- q.Header.Clone():
		default:
		}
		w.Header().Set("Alt-Svc", `h3=":443"`)
		fmt.Fprintf(w, "path=%s auth=%s", q.URL.EscapedPath(), q.Header.Get("Authorization"))
	})
	mux.HandleFunc("/users", func(w stdhttp.ResponseWriter, q *stdhttp.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"items":[{"name":"ada","email":"ada@example.com"},{"name":"bob","email":"bob@example.com"}]}`)
	})
	mux.HandleFunc("/long", func(w stdhttp.ResponseWriter, q *stdhttp.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `"`+strings.Repeat("a", 256<<10)+` ada@example.com"`)
	})
	mux.HandleFunc("/events", func(w stdhttp.ResponseWriter, q *stdhttp.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprintf(w, "data: {\"email\":\"ada@example.com\"}\n\n")
		w.(stdhttp.Flusher).Flush()
		<-q.Context().Done()
	})
	mux.HandleFunc("/ws", func(w stdhttp.ResponseWriter, q *stdhttp.Request) {
		c, brw, err := w.(stdhttp.Hijacker).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		fmt.Fprintf(brw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
		brw.Flush()
		// Echo one client frame back unmasked.
		hdr := make([]byte, 6)
		io.ReadFull(brw, hdr)
		n := int(hdr[1] & 0x7f)
		p := make([]byte, n)
		io.ReadFull(brw, p)
		for i := range p {
			p[i] ^= hdr[2+i%4]
		}
		c.Write(append([]byte{0x81, byte(n)}, p...))
		io.Copy(io.Discard, brw)
	})
	r.upstream = httptest.NewUnstartedServer(mux)
	r.upstream.TLS = &tls.Config{Certificates: []tls.Certificate{up.leaf(t, "api.test", "127.0.0.1")}}
	clientCreds := ""
	if len(mtls) > 0 && mtls[0] {
		clientCA := newTestCA(t)
		r.upstream.TLS.ClientAuth = tls.RequireAndVerifyClientCert
		r.upstream.TLS.ClientCAs = clientCA.pool()
		crt, key := clientCA.leafPEM(t, "loopgate")
		dir := t.TempDir()
		cf, kf := filepath.Join(dir, "client.crt"), filepath.Join(dir, "client.key")
		os.WriteFile(cf, crt, 0o600)
		os.WriteFile(kf, key, 0o600)
		clientCreds = ", cert_file: " + cf + ", key_file: " + kf
	}
	r.upstream.EnableHTTP2 = true
	r.upstream.StartTLS()
	t.Cleanup(r.upstream.Close)
	_, r.port, _ = net.SplitHostPort(r.upstream.Listener.Addr().String())
	dir := t.TempDir()
	caFile := filepath.Join(dir, "up.pem")
	os.WriteFile(caFile, up.pem, 0o600)
	secretFile := filepath.Join(dir, "secret")
	os.WriteFile(secretFile, []byte(rigSecret+"\n"), 0o600)
	cfg := l7test.Config(t, fmt.Sprintf(`targets:
  - {name: api, protocol: http, address: "127.0.0.1:%s", tls: {ca_file: %s}, credentials: {password_file: %s%s}, placeholders: [API_KEY]}
workloads:
  - {name: w, cgroup: w}
approvers:
  - {name: alice, uid: 1000}
masks:
  - {name: emails, paths: ["$.items[*].email"]}
  - {name: detect, detect: email}
rules:
%s`, r.port, caFile, secretFile, clientCreds, rules))
	r.srv = l7test.Server(t, cfg, r.rec)
	r.srv.Broker = &policy.Broker{Policy: func() *policy.Config { return cfg }, Timeout: 10 * time.Second}
	m, err := NewMinter(r.lgCA.cert, r.lgCA.key, "")
	if err != nil {
		t.Fatal(err)
	}
	r.h = &Handler{Minter: m, ApprovalWait: 300 * time.Millisecond,
		Resolver: fakeResolver{"api.test": {netip.MustParseAddr("127.0.0.1")}, "other.test": {netip.MustParseAddr("10.1.2.3")}}}
	t.Cleanup(func() { r.h.Close(); r.serving.Wait() })
	r.client = r.newClient(r.lgCA.pool(), "")
	return r
}

// dial opens a session to the handler as if the kernel had redirected a
// connection to the upstream's address.
func (r *rig) dial(_ context.Context, _, _ string) (net.Conn, error) {
	c, s := l7test.TCPPair(r.t)
	sess := l7test.Session(r.t, r.srv, "w", "api", "127.0.0.1:"+r.port)
	r.serving.Go(func() {
		defer s.Close()
		r.h.Serve(context.Background(), s, sess)
	})
	return c, nil
}

func (r *rig) newClient(roots *x509.CertPool, serverName string) *stdhttp.Client {
	return &stdhttp.Client{Timeout: 10 * time.Second, Transport: &stdhttp.Transport{
		DialContext: r.dial, ForceAttemptHTTP2: true,
		TLSClientConfig: &tls.Config{RootCAs: roots, ServerName: serverName},
	}}
}

func (r *rig) url(path string) string { return "https://api.test:" + r.port + path }

func (r *rig) do(method, path, body string, hdr ...string) (*stdhttp.Response, string) {
	r.t.Helper()
	q, _ := stdhttp.NewRequest(method, r.url(path), strings.NewReader(body))
	if body == "" {
		q.Body = nil
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		q.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := r.client.Do(q)
	if err != nil {
		r.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func (r *rig) events() []event.Event { return r.rec.EventsOf() }

const baseRule = `  - id: r
    workloads: [w]
    targets: [api]
    allow: [read, connect]
    approve: [write]
    deny: [delete]
    mask: [emails, detect]
    requests:
      deny: ["* /admin/**"]
`

func TestRequests(t *testing.T) {
	r := newRig(t, baseRule)
	t.Run("GET allowed, credential injected, Alt-Svc stripped, h2", func(t *testing.T) {
		resp, body := r.do("GET", "/hello", "", "Authorization", "Bearer "+policy.Placeholder)
		if resp.StatusCode != 200 || body != "path=/hello auth=Bearer [redacted]" || resp.Header.Get("Alt-Svc") != "" || resp.ProtoMajor != 2 {
			t.Errorf("%d %q alt-svc %q proto %s", resp.StatusCode, body, resp.Header.Get("Alt-Svc"), resp.Proto)
		}
	})
	t.Run("an echoed credential never reaches the agent", func(t *testing.T) {
		<-r.seen
		r.do("GET", "/hello", "")
		if h := <-r.seen; h.Get("Authorization") != "Bearer "+rigSecret {
			t.Errorf("upstream saw %q", h.Get("Authorization"))
		}
	})
	t.Run("DELETE denied with a JSON reason", func(t *testing.T) {
		resp, body := r.do("DELETE", "/x", "")
		var v map[string]string
		if resp.StatusCode != 403 || json.Unmarshal([]byte(body), &v) != nil || !strings.Contains(v["error"], "delete denied by rule r") {
			t.Errorf("%d %q", resp.StatusCode, body)
		}
	})
	t.Run("paths normalised before matching", func(t *testing.T) {
		for _, p := range []string{"/a/../admin/x", "//admin/x", "/./admin/x"} {
			if resp, body := r.do("GET", p, ""); resp.StatusCode != 403 || !strings.Contains(body, "pattern") {
				t.Errorf("%s: %d %q", p, resp.StatusCode, body)
			}
		}
		for _, p := range []string{"/a/%2e%2e/admin/x", "/admin%2fx", "/a\\..\\admin", "/admin;x/y"} {
			q, _ := stdhttp.NewRequest("GET", r.url("/"), nil)
			q.URL.Opaque = p
			resp, err := r.client.Do(q)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 400 || !strings.Contains(string(b), "ambiguous") {
				t.Errorf("%s: %d %q", p, resp.StatusCode, b)
			}
		}
	})
	t.Run("the agent's own credential is refused", func(t *testing.T) {
		if resp, body := r.do("GET", "/x", "", "Authorization", "Bearer sk-live-1234567890abcdef"); resp.StatusCode != 403 || !strings.Contains(body, "own") {
			t.Errorf("%d %q", resp.StatusCode, body)
		}
		if resp, body := r.do("GET", "/x?k="+rigSecret, ""); resp.StatusCode != 403 {
			t.Errorf("real secret in the query: %d %q", resp.StatusCode, body)
		}
	})
	t.Run("JSON masked by path", func(t *testing.T) {
		resp, body := r.do("GET", "/users", "")
		if resp.StatusCode != 200 || strings.Contains(body, "@example.com") || !strings.Contains(body, `"name":"ada"`) {
			t.Errorf("%d %q", resp.StatusCode, body)
		}
	})
	t.Run("SSE masked and streamed", func(t *testing.T) {
		q, _ := stdhttp.NewRequest("GET", r.url("/events"), nil)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		resp, err := r.client.Do(q.WithContext(ctx))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		line, err := bufio.NewReader(resp.Body).ReadString('\n')
		if err != nil || line != "data: {\"email\":\"[redacted]\"}\n" {
			t.Errorf("first event %q %v", line, err)
		}
	})
	t.Run("Host must be the SNI", func(t *testing.T) {
		q, _ := stdhttp.NewRequest("GET", r.url("/x"), nil)
		q.Host = "other.test"
		resp, err := r.client.Do(q)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != stdhttp.StatusMisdirectedRequest {
			t.Errorf("status %d", resp.StatusCode)
		}
	})
	t.Run("SNI must resolve to the address dialled", func(t *testing.T) {
		c := r.newClient(r.lgCA.pool(), "other.test")
		if _, err := c.Get(r.url("/x")); err == nil {
			t.Error("handshake for other.test passed")
		}
	})
	t.Run("a client with its own roots fails and is recorded", func(t *testing.T) {
		c := r.newClient(x509.NewCertPool(), "")
		if _, err := c.Get(r.url("/x")); err == nil {
			t.Error("untrusted leaf accepted")
		}
		eventually(t, 5*time.Second, "handshake failure recorded", func() bool {
			for _, e := range r.events() {
				if e.Kind == event.KindNote && strings.Contains(e.Text, "tls handshake failed") {
					return true
				}
			}
			return false
		})
	})
	t.Run("POST held: 403 pending, approved, retry passes", func(t *testing.T) {
		resp, body := r.do("POST", "/repos/x/merges", `{"sha":"abc"}`, "Content-Type", "application/json")
		var v map[string]string
		json.Unmarshal([]byte(body), &v)
		if resp.StatusCode != 403 || v["state"] != "pending" || v["approval"] == "" || resp.Header.Get("Retry-After") == "" {
			t.Fatalf("%d %q", resp.StatusCode, body)
		}
		if _, err := r.srv.Broker.Decide(context.Background(), v["approval"], policy.Identity{UID: 1000}, true, "", "", 0); err != nil {
			t.Fatal(err)
		}
		if resp, body := r.do("POST", "/repos/x/merges", `{"sha":"other"}`, "Content-Type", "application/json"); resp.StatusCode != 403 {
			t.Errorf("another body passed on the approval: %d %q", resp.StatusCode, body)
		}
		if resp, body := r.do("POST", "/repos/x/merges", `{"sha":"abc"}`, "Content-Type", "application/json"); resp.StatusCode != 200 {
			t.Errorf("retry: %d %q", resp.StatusCode, body)
		}
	})
	t.Run("WebSocket frames recorded", func(t *testing.T) {
		c := r.newClient(r.lgCA.pool(), "")
		c.Timeout = 0
		c.Transport.(*stdhttp.Transport).ForceAttemptHTTP2 = false
		c.Transport.(*stdhttp.Transport).TLSClientConfig.NextProtos = []string{"http/1.1"}
		q, _ := stdhttp.NewRequest("GET", r.url("/ws"), nil)
		q.Header.Set("Connection", "Upgrade")
		q.Header.Set("Upgrade", "websocket")
		resp, err := c.Do(q)
		if err != nil || resp.StatusCode != 101 {
			t.Fatalf("upgrade: %v %v", resp, err)
		}
		rw := resp.Body.(io.ReadWriteCloser)
		msg := []byte("hello ada@example.com")
		frame := append([]byte{0x81, 0x80 | byte(len(msg)), 1, 2, 3, 4}, msg...)
		for i := range msg {
			frame[6+i] ^= []byte{1, 2, 3, 4}[i%4]
		}
		rw.Write(frame)
		back := make([]byte, 2+len(msg))
		if _, err := io.ReadFull(rw, back); err != nil || string(back[2:]) != string(msg) {
			t.Errorf("echo %q %v", back, err)
		}
		rw.Close()
		eventually(t, 5*time.Second, "frames recorded", func() bool {
			n := 0
			for _, e := range r.events() {
				if strings.HasPrefix(e.Text, "ws ") && strings.Contains(e.Text, "text 21 bytes: hello [redacted]") {
					n++
				}
			}
			return n == 2
		})
	})
	// Every request has a decision; allowed ones a result with status.
	var results int
	for _, e := range r.events() {
		if e.Kind == event.KindResult && strings.HasPrefix(e.Tag, "200") {
			results++
			if strings.Contains(e.Params, rigSecret) || strings.Contains(e.Params, "ada@example.com") {
				t.Errorf("record holds a secret or unmasked data: %s", e.Params)
			}
		}
	}
	if results < 3 {
		t.Errorf("%d results recorded", results)
	}
}

func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestClientCertificate: a target's credentials may be a client
// certificate, which the daemon presents upstream (mTLS).
func TestClientCertificate(t *testing.T) {
	r := newRigTB(t, baseRule, true)
	if resp, body := r.do("GET", "/hello", ""); resp.StatusCode != 200 || !strings.HasPrefix(body, "path=/hello") {
		t.Errorf("%d %q", resp.StatusCode, body)
	}
}

// TestMaskFailsClosed: a JSON body that cannot be masked within the cap is
// never passed: 502, recorded.
func TestMaskFailsClosed(t *testing.T) {
	r := newRig(t, baseRule)
	r.h.MaxJSONToken = 4096
	resp, body := r.do("GET", "/long", "")
	if resp.StatusCode != stdhttp.StatusBadGateway || strings.Contains(body, "@example.com") || !strings.Contains(body, "could not be masked") {
		t.Fatalf("%d %q", resp.StatusCode, body)
	}
	eventually(t, 5*time.Second, "failure recorded", func() bool {
		for _, e := range r.events() {
			if e.Kind == event.KindResult && strings.Contains(e.Error, "masking failed") && strings.HasPrefix(e.Tag, "502") {
				return true
			}
		}
		return false
	})
}
