package policy

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// issuer is a real OIDC issuer on loopback: discovery and JWKS over HTTP,
// with keys the test signs tokens with and can rotate.
type issuer struct {
	url string
	srv *http.Server

	mu   sync.Mutex
	keys []*rsa.PrivateKey // published; keys[0] signs
	kids []string
}

func startIssuer(t *testing.T) *issuer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	is := &issuer{url: "http://" + ln.Addr().String()}
	is.rotate(t)
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]any{
			"issuer": is.url, "jwks_uri": is.url + "/keys",
			"authorization_endpoint": is.url + "/auth", "token_endpoint": is.url + "/token",
			"id_token_signing_alg_values_supported": []string{"RS256"},
		})
	})
	mux.HandleFunc("/keys", func(w http.ResponseWriter, r *http.Request) {
		is.mu.Lock()
		defer is.mu.Unlock()
		var set jose.JSONWebKeySet
		for i, k := range is.keys {
			set.Keys = append(set.Keys, jose.JSONWebKey{Key: &k.PublicKey, KeyID: is.kids[i], Algorithm: "RS256", Use: "sig"})
		}
		json.NewEncoder(w).Encode(set)
	})
	is.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go is.srv.Serve(ln)
	t.Cleanup(func() { is.srv.Close() })
	return is
}

// rotate publishes a new signing key and drops the old one.
func (is *issuer) rotate(t *testing.T) {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	is.mu.Lock()
	defer is.mu.Unlock()
	is.keys = []*rsa.PrivateKey{k}
	is.kids = []string{"k" + time.Now().Format("150405.000000")}
}

func (is *issuer) signer(t *testing.T) (*rsa.PrivateKey, string) {
	is.mu.Lock()
	defer is.mu.Unlock()
	return is.keys[0], is.kids[0]
}

type tokenOpts struct {
	iss, sub, aud string
	exp, nbf      time.Time
	key           *rsa.PrivateKey
	kid           string
	extra         map[string]any
}

func sign(t *testing.T, o tokenOpts) string {
	t.Helper()
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: o.key},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", o.kid))
	if err != nil {
		t.Fatal(err)
	}
	claims := jwt.Claims{Issuer: o.iss, Subject: o.sub, Audience: jwt.Audience{o.aud},
		Expiry: jwt.NewNumericDate(o.exp), IssuedAt: jwt.NewNumericDate(time.Now().Add(-time.Minute))}
	if !o.nbf.IsZero() {
		claims.NotBefore = jwt.NewNumericDate(o.nbf)
	}
	b := jwt.Signed(sig).Claims(claims)
	if o.extra != nil {
		b = b.Claims(o.extra)
	}
	raw, err := b.Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func b64(v any) string {
	j, _ := json.Marshal(v)
	return base64.RawURLEncoding.EncodeToString(j)
}

func TestOIDCVerify(t *testing.T) {
	t.Parallel()
	is := startIssuer(t)
	other := startIssuer(t) // a real issuer we do not trust
	v := NewVerifier([]Issuer{{URL: is.url, Audience: "loopgate"}}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	key, kid := is.signer(t)
	good := tokenOpts{iss: is.url, sub: "repo:acme/app:ref:refs/heads/main", aud: "loopgate", exp: time.Now().Add(time.Hour),
		key: key, kid: kid, extra: map[string]any{"groups": []string{"dba", "ops"}}}
	wrongKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	otherKey, otherKid := other.signer(t)

	mod := func(f func(*tokenOpts)) string { o := good; f(&o); return sign(t, o) }
	header := func(h map[string]any) string {
		parts := strings.Split(sign(t, good), ".")
		return b64(h) + "." + parts[1] + "." + parts[2]
	}
	noneToken := b64(map[string]any{"alg": "none", "typ": "JWT"}) + "." + strings.Split(sign(t, good), ".")[1] + "."
	tests := []struct {
		name string
		raw  string
		ok   bool
		is   error
	}{
		{"valid", sign(t, good), true, nil},
		{"expired", mod(func(o *tokenOpts) { o.exp = time.Now().Add(-time.Hour) }), false, nil},
		{"not yet valid", mod(func(o *tokenOpts) { o.nbf = time.Now().Add(time.Hour) }), false, nil},
		{"wrong audience", mod(func(o *tokenOpts) { o.aud = "someone-else" }), false, nil},
		{"wrong issuer", mod(func(o *tokenOpts) { o.iss = other.url; o.key, o.kid = otherKey, otherKid }), false, ErrUntrustedIssuer},
		{"bad signature", mod(func(o *tokenOpts) { o.key = wrongKey }), false, nil},
		{"alg none", noneToken, false, nil},
		{"hmac with the public key", header(map[string]any{"alg": "HS256", "typ": "JWT", "kid": kid}), false, nil},
		{"garbage", "not.a.jwt", false, nil},
		{"empty", "", false, ErrTokenRequired},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := v.Verify(ctx, tc.raw)
			if (err == nil) != tc.ok {
				t.Fatalf("Verify: claims %+v, err %v; want ok=%v", c, err, tc.ok)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("err = %v, want %v", err, tc.is)
			}
			if tc.ok && (c.Subject != good.sub || len(c.Groups) != 2) {
				t.Errorf("claims = %+v", c)
			}
		})
	}

	t.Run("rotated key", func(t *testing.T) {
		old := sign(t, good)
		is.rotate(t)
		nk, nkid := is.signer(t)
		fresh := mod(func(o *tokenOpts) { o.key, o.kid = nk, nkid })
		if _, err := v.Verify(ctx, fresh); err != nil {
			t.Errorf("token signed with the rotated-in key: %v", err)
		}
		if _, err := v.Verify(ctx, old); err == nil {
			t.Error("token signed with the rotated-out key still verifies")
		}
	})
}

func TestAuthenticate(t *testing.T) {
	t.Parallel()
	is := startIssuer(t)
	cfg, err := Parse("f.yaml", []byte(`oidc:
  - {issuer: "`+is.url+`", audience: loopgate}
targets:
  - {name: e, protocol: tcp, address: 1.1.1.1:1}
workloads:
  - {name: w, cgroup: lg/w, token: {issuer: "`+is.url+`", subject: "repo:acme", claims: {env: prod}}}
  - {name: free, cgroup: lg/free}
`))
	if err != nil {
		t.Fatal(err)
	}
	v := NewVerifier(cfg.OIDC, nil)
	key, kid := is.signer(t)
	base := tokenOpts{iss: is.url, sub: "repo:acme", aud: "loopgate", exp: time.Now().Add(time.Hour), key: key, kid: kid,
		extra: map[string]any{"env": "prod"}}
	ctx := context.Background()
	tests := []struct {
		name, workload, token string
		is                    error
	}{
		{"matching token", "w", sign(t, base), nil},
		{"no token", "w", "", ErrTokenRequired},
		{"wrong subject", "w", sign(t, tokenOpts{iss: is.url, sub: "repo:evil", aud: "loopgate", exp: base.exp, key: key, kid: kid, extra: base.extra}), ErrTokenMismatch},
		{"wrong claim", "w", sign(t, tokenOpts{iss: is.url, sub: "repo:acme", aud: "loopgate", exp: base.exp, key: key, kid: kid, extra: map[string]any{"env": "dev"}}), ErrTokenMismatch},
		{"no token needed", "free", "", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := &Subject{Workload: tc.workload}
			err := cfg.Authenticate(ctx, v, s, tc.token)
			if tc.is == nil && err != nil || tc.is != nil && !errors.Is(err, tc.is) {
				t.Fatalf("err = %v, want %v", err, tc.is)
			}
			if tc.is == nil && tc.token != "" && (s.Claims == nil || s.Claims.Subject != "repo:acme") {
				t.Errorf("claims = %+v", s.Claims)
			}
		})
	}
}
