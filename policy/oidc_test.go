package policy

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/loopgate/loopgate/tests/lgtest"
)

func b64(v any) string {
	j, _ := json.Marshal(v)
	return base64.RawURLEncoding.EncodeToString(j)
}

// hmacWithPublicKey forges the classic token: HS256, "signed" with the
// issuer's public key as the HMAC secret.
func hmacWithPublicKey(is *lgtest.Issuer, kid, payload string) string {
	key, _ := is.Key()
	der, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	secret := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	signing := b64(map[string]any{"alg": "HS256", "typ": "JWT", "kid": kid}) + "." + payload
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(signing))
	return signing + "." + base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

func TestOIDCVerify(t *testing.T) {
	t.Parallel()
	is := lgtest.StartIssuer(t)
	other := lgtest.StartIssuer(t) // a real issuer we do not trust
	v := NewVerifier([]Issuer{{URL: is.URL, Audience: "loopgate"}}, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	good := lgtest.Claims{Subject: "repo:acme/app:ref:refs/heads/main", Audience: "loopgate",
		Extra: map[string]any{"groups": []string{"dba", "ops"}}}
	wrongKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	_, kid := is.Key()
	mod := func(f func(*lgtest.Claims)) string { c := good; f(&c); return is.Token(t, c) }
	payload := strings.Split(is.Token(t, good), ".")[1]
	tests := []struct {
		name string
		raw  string
		ok   bool
		is   error
	}{
		{"valid", is.Token(t, good), true, nil},
		{"expired", mod(func(c *lgtest.Claims) { c.Expiry = time.Now().Add(-time.Hour) }), false, nil},
		{"not yet valid", mod(func(c *lgtest.Claims) { c.NotBefore = time.Now().Add(time.Hour) }), false, nil},
		{"wrong audience", mod(func(c *lgtest.Claims) { c.Audience = "someone-else" }), false, nil},
		{"wrong issuer", other.Token(t, good), false, ErrUntrustedIssuer},
		{"bad signature", mod(func(c *lgtest.Claims) { c.Key, c.KeyID = wrongKey, kid }), false, nil},
		{"alg none", b64(map[string]any{"alg": "none", "typ": "JWT"}) + "." + payload + ".", false, nil},
		{"hmac with the public key", hmacWithPublicKey(is, kid, payload), false, nil},
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
			if tc.ok && (c.Subject != good.Subject || len(c.Groups) != 2) {
				t.Errorf("claims = %+v", c)
			}
		})
	}

	t.Run("rotated key", func(t *testing.T) {
		old := is.Token(t, good)
		is.Rotate(t)
		// An unknown key id makes go-oidc refetch the JWKS and verify
		// with what it got: the new key verifies at once.
		if _, err := v.Verify(ctx, is.Token(t, good)); err != nil {
			t.Errorf("token signed with the rotated-in key: %v", err)
		}
		// go-oidc's RemoteKeySet hands the fetched keys to the waiting
		// Verify before it replaces its cache, so a Verify just after may
		// still find the old key cached. Once the cache holds the new set,
		// the rotated-out key no longer verifies.
		lgtest.Eventually(t, 10*time.Second, "the rotated-out key to be refused", func() bool {
			_, err := v.Verify(ctx, old)
			return err != nil
		})
	})
}

func TestAuthenticate(t *testing.T) {
	t.Parallel()
	is := lgtest.StartIssuer(t)
	cfg, err := Parse("f.yaml", []byte(`oidc:
  - {issuer: "`+is.URL+`", audience: loopgate}
targets:
  - {name: e, protocol: tcp, address: 1.1.1.1:1}
workloads:
  - {name: w, cgroup: lg/w, token: {issuer: "`+is.URL+`", subject: "repo:acme", claims: {env: prod}}}
  - {name: free, cgroup: lg/free}
`))
	if err != nil {
		t.Fatal(err)
	}
	v := NewVerifier(cfg.OIDC, nil)
	tok := func(sub, env string) string {
		return is.Token(t, lgtest.Claims{Subject: sub, Audience: "loopgate", Extra: map[string]any{"env": env}})
	}
	tests := []struct {
		name, workload, token string
		is                    error
	}{
		{"matching token", "w", tok("repo:acme", "prod"), nil},
		{"no token", "w", "", ErrTokenRequired},
		{"wrong subject", "w", tok("repo:evil", "prod"), ErrTokenMismatch},
		{"wrong claim", "w", tok("repo:acme", "dev"), ErrTokenMismatch},
		{"no token needed", "free", "", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := &Subject{Workload: tc.workload}
			err := cfg.Authenticate(context.Background(), v, s, tc.token)
			if tc.is == nil && err != nil || tc.is != nil && !errors.Is(err, tc.is) {
				t.Fatalf("err = %v, want %v", err, tc.is)
			}
			if tc.is == nil && tc.token != "" && (s.Claims == nil || s.Claims.Subject != "repo:acme") {
				t.Errorf("claims = %+v", s.Claims)
			}
		})
	}
}
