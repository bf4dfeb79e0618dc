package policy

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
)

// Claims are the verified claims of a workload's or approver's OIDC token.
type Claims struct {
	Issuer  string
	Subject string
	Groups  []string
	Expiry  time.Time
	// All holds every claim, for claim requirements.
	All map[string]any
}

// Errors a token verification can end in. Verify wraps them; callers
// branch with errors.Is.
var (
	ErrTokenRequired   = errors.New("an OIDC token is required")
	ErrUntrustedIssuer = errors.New("token issuer is not trusted")
	ErrTokenMismatch   = errors.New("token does not match the workload")
)

// signingAlgs are the asymmetric algorithms accepted. "none" and every HMAC
// algorithm are refused, so a token "signed" with the issuer's public key
// as an HMAC secret cannot pass.
var signingAlgs = []string{
	oidc.RS256, oidc.RS384, oidc.RS512, oidc.ES256, oidc.ES384, oidc.ES512,
	oidc.PS256, oidc.PS384, oidc.PS512, oidc.EdDSA,
}

// Verifier verifies OIDC tokens from the configured issuers with go-oidc:
// discovery, JWKS (refetched when an unknown key id appears, so key rotation
// works), signature, issuer, audience, expiry and not-before. It is safe for
// concurrent use; providers are discovered lazily and a failed discovery is
// retried on the next token.
type Verifier struct {
	client  *http.Client
	issuers []Issuer

	mu        sync.Mutex // guards verifiers
	verifiers map[string]*oidc.IDTokenVerifier
}

// NewVerifier returns a verifier for issuers. client may be nil (a default
// with a 10 s timeout is used). It does no network I/O.
func NewVerifier(issuers []Issuer, client *http.Client) *Verifier {
	if client == nil {
		client = &http.Client{Timeout: 10 * time.Second}
	}
	return &Verifier{client: client, issuers: issuers, verifiers: map[string]*oidc.IDTokenVerifier{}}
}

// Verify checks raw and returns its claims.
func (v *Verifier) Verify(ctx context.Context, raw string) (*Claims, error) {
	if raw == "" {
		return nil, ErrTokenRequired
	}
	iss, err := unverifiedIssuer(raw)
	if err != nil {
		return nil, fmt.Errorf("verify token: %w", err)
	}
	idx := slices.IndexFunc(v.issuers, func(i Issuer) bool { return i.URL == iss })
	if idx < 0 {
		return nil, fmt.Errorf("verify token from %q: %w", iss, ErrUntrustedIssuer)
	}
	is := v.issuers[idx]
	ver, err := v.verifier(ctx, is)
	if err != nil {
		return nil, err
	}
	tok, err := ver.Verify(ctx, raw)
	if err != nil {
		return nil, fmt.Errorf("verify token: %w", err)
	}
	c := &Claims{Issuer: tok.Issuer, Subject: tok.Subject, Expiry: tok.Expiry}
	if err := tok.Claims(&c.All); err != nil {
		return nil, fmt.Errorf("verify token: claims: %w", err)
	}
	c.Groups = stringsClaim(c.All["groups"])
	for k, want := range is.Claims {
		if !claimMatches(c.All[k], want) {
			return nil, fmt.Errorf("verify token: claim %q does not match the issuer's requirement: %w", k, ErrTokenMismatch)
		}
	}
	return c, nil
}

func (v *Verifier) verifier(ctx context.Context, is Issuer) (*oidc.IDTokenVerifier, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if ver, ok := v.verifiers[is.URL]; ok {
		return ver, nil
	}
	// The provider keeps this context for later JWKS fetches, so it must
	// outlive the request: the client's timeout bounds each fetch.
	pctx := oidc.ClientContext(context.WithoutCancel(ctx), v.client)
	p, err := oidc.NewProvider(pctx, is.URL)
	if err != nil {
		return nil, fmt.Errorf("discover issuer %s: %w", is.URL, err)
	}
	ver := p.Verifier(&oidc.Config{ClientID: is.Audience, SupportedSigningAlgs: signingAlgs})
	v.verifiers[is.URL] = ver
	return ver, nil
}

// unverifiedIssuer reads "iss" from a JWT without verifying it, only to pick
// the issuer whose keys then verify it.
func unverifiedIssuer(raw string) (string, error) {
	parts := strings.Split(raw, ".")
	if len(parts) != 3 {
		return "", errors.New("malformed token: want three dot-separated parts")
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return "", fmt.Errorf("malformed token payload: %w", err)
	}
	var c struct {
		Iss string `json:"iss"`
	}
	if err := json.Unmarshal(payload, &c); err != nil {
		return "", fmt.Errorf("malformed token payload: %w", err)
	}
	return c.Iss, nil
}

func stringsClaim(v any) []string {
	switch x := v.(type) {
	case string:
		return []string{x}
	case []any:
		var out []string
		for _, e := range x {
			if s, ok := e.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

func claimMatches(v any, want string) bool {
	switch x := v.(type) {
	case string:
		return x == want
	case bool, float64:
		return fmt.Sprint(x) == want
	case []any:
		return slices.Contains(stringsClaim(x), want)
	}
	return false
}

// CheckToken checks verified claims against what workload w requires.
func (w *Workload) CheckToken(c *Claims) error {
	if w.Token == nil {
		return nil
	}
	if c == nil {
		return fmt.Errorf("workload %s: %w", w.Name, ErrTokenRequired)
	}
	if c.Issuer != w.Token.Issuer {
		return fmt.Errorf("workload %s: token from %s, want %s: %w", w.Name, c.Issuer, w.Token.Issuer, ErrTokenMismatch)
	}
	if w.Token.Subject != "" && c.Subject != w.Token.Subject {
		return fmt.Errorf("workload %s: token subject %q: %w", w.Name, c.Subject, ErrTokenMismatch)
	}
	for k, want := range w.Token.Claims {
		if !claimMatches(c.All[k], want) {
			return fmt.Errorf("workload %s: token claim %q: %w", w.Name, k, ErrTokenMismatch)
		}
	}
	return nil
}
