package lgtest

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Issuer is a real OIDC issuer on loopback: discovery and JWKS over HTTP,
// with keys the test signs tokens with and can rotate.
type Issuer struct {
	URL string

	mu  sync.Mutex
	key *rsa.PrivateKey
	kid string
	seq int
}

// StartIssuer starts an issuer, stopped when t ends.
func StartIssuer(t testing.TB) *Issuer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	is := &Issuer{URL: "http://" + ln.Addr().String()}
	is.Rotate(t)
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(map[string]any{
			"issuer": is.URL, "jwks_uri": is.URL + "/keys",
			"authorization_endpoint": is.URL + "/auth", "token_endpoint": is.URL + "/token",
			"id_token_signing_alg_values_supported": []string{"RS256"},
		})
	})
	mux.HandleFunc("/keys", func(w http.ResponseWriter, r *http.Request) {
		is.mu.Lock()
		defer is.mu.Unlock()
		set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &is.key.PublicKey, KeyID: is.kid, Algorithm: "RS256", Use: "sig"}}}
		json.NewEncoder(w).Encode(set)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return is
}

// Rotate publishes a new signing key and drops the old one.
func (is *Issuer) Rotate(t testing.TB) {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	is.mu.Lock()
	defer is.mu.Unlock()
	is.seq++
	is.key, is.kid = k, "k"+time.Now().Format("150405")+string(rune('a'+is.seq%26))
}

// Key returns the current signing key and its key id.
func (is *Issuer) Key() (*rsa.PrivateKey, string) {
	is.mu.Lock()
	defer is.mu.Unlock()
	return is.key, is.kid
}

// Claims describe a token to sign. Zero Expiry means in an hour; Key nil
// means the issuer's current key.
type Claims struct {
	Issuer, Subject, Audience string
	Expiry, NotBefore         time.Time
	Extra                     map[string]any
	Key                       *rsa.PrivateKey
	KeyID                     string
}

// Token signs c (RS256).
func (is *Issuer) Token(t testing.TB, c Claims) string {
	t.Helper()
	if c.Key == nil {
		c.Key, c.KeyID = is.Key()
	}
	if c.Issuer == "" {
		c.Issuer = is.URL
	}
	if c.Expiry.IsZero() {
		c.Expiry = time.Now().Add(time.Hour)
	}
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: c.Key},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", c.KeyID))
	if err != nil {
		t.Fatal(err)
	}
	std := jwt.Claims{Issuer: c.Issuer, Subject: c.Subject, Audience: jwt.Audience{c.Audience},
		Expiry: jwt.NewNumericDate(c.Expiry), IssuedAt: jwt.NewNumericDate(time.Now().Add(-time.Minute))}
	if !c.NotBefore.IsZero() {
		std.NotBefore = jwt.NewNumericDate(c.NotBefore)
	}
	b := jwt.Signed(sig).Claims(std)
	if c.Extra != nil {
		b = b.Claims(c.Extra)
	}
	raw, err := b.Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return raw
}
