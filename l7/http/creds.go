package http

import (
	"encoding/base64"
	"errors"
	"fmt"
	stdhttp "net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/loopgate/loopgate/policy"
)

// agentAuthHeaders are stripped from every request: the agent's own
// credentials never reach the target, and only the daemon's are sent.
var agentAuthHeaders = []string{"Authorization", "Proxy-Authorization", "Cookie", "X-Api-Key", "Api-Key",
	"X-Auth-Token", "Private-Token", "X-Goog-Api-Key", "Anthropic-Api-Key"}

// minOwnSecret is the length from which a credential the agent sends is
// taken for a real one (and the request refused).
const minOwnSecret = 8

// secretTTL is how long a credential file's content is used before it is
// read again (rotation).
const secretTTL = 10 * time.Second

// secretCache holds targets' secrets briefly. mu guards m.
type secretCache struct {
	mu sync.Mutex
	m  map[string]cachedSecret
}

type cachedSecret struct {
	v     string
	until time.Time
}

// get returns t's secret ("" when it has none configured).
func (c *secretCache) get(t *policy.Target) (string, error) {
	cr := t.Credentials
	if !cr.Secret() {
		return "", nil
	}
	key := t.Name + "\x00" + cr.PasswordFile + "\x00" + cr.PasswordEnv
	c.mu.Lock()
	e, ok := c.m[key]
	c.mu.Unlock()
	if ok && time.Now().Before(e.until) {
		return e.v, nil
	}
	var v string
	if cr.PasswordFile != "" {
		b, err := os.ReadFile(cr.PasswordFile)
		if err != nil {
			return "", fmt.Errorf("read password_file: %w", err)
		}
		v = strings.TrimRight(string(b), "\r\n")
	} else {
		v = os.Getenv(cr.PasswordEnv)
	}
	if v == "" {
		return "", errors.New("the target's credential is empty")
	}
	c.mu.Lock()
	c.m[key] = cachedSecret{v: v, until: time.Now().Add(secretTTL)}
	c.mu.Unlock()
	return v, nil
}

// ownSecret says why a request is refused for carrying a credential of
// its own ("" if it does not): a value in an auth header that is not the
// placeholder, or the target's real secret anywhere in the request line
// or headers (an agent that found it).
func ownSecret(r *stdhttp.Request, t *policy.Target, real string) string {
	if real != "" {
		if strings.Contains(r.RequestURI, real) {
			return "the request carries the target's credential; agents send the placeholder"
		}
		for name, vs := range r.Header {
			for _, v := range vs {
				if strings.Contains(v, real) {
					return "header " + name + " carries the target's credential; agents send the placeholder"
				}
			}
		}
	}
	names := agentAuthHeaders
	if h := t.Credentials.HTTP.Header; h != "" {
		names = append(names[:len(names):len(names)], h)
	}
	for _, name := range names {
		if name == "Cookie" {
			continue // stripped, not judged: cookies are session state
		}
		for _, v := range r.Header.Values(name) {
			if tok := credentialOf(v); len(tok) >= minOwnSecret && !strings.Contains(tok, policy.Placeholder) {
				return "header " + name + " carries a credential of the agent's own; send " + policy.Placeholder + " (loopgate injects the real one)"
			}
		}
	}
	return ""
}

// credentialOf returns the secret part of an auth header value: the token
// after a scheme, the password of Basic.
func credentialOf(v string) string {
	v = strings.TrimSpace(v)
	scheme, rest, ok := strings.Cut(v, " ")
	if !ok {
		return v
	}
	rest = strings.TrimSpace(rest)
	if strings.EqualFold(scheme, "basic") {
		b, err := base64.StdEncoding.DecodeString(rest)
		if err != nil {
			return rest
		}
		user, pass, _ := strings.Cut(string(b), ":")
		if strings.Contains(user, policy.Placeholder) && pass == "" {
			return user
		}
		return pass
	}
	return rest
}

// injectCredentials strips the agent's auth headers from h and sets the
// target's credential.
func injectCredentials(h stdhttp.Header, t *policy.Target, secret string) {
	for _, name := range agentAuthHeaders {
		h.Del(name)
	}
	c := t.Credentials.HTTP
	if c.Header != "" {
		h.Del(c.Header)
	}
	if secret == "" {
		return
	}
	switch c.Scheme {
	case policy.SchemeBasic:
		h.Set(c.Header, "Basic "+base64.StdEncoding.EncodeToString([]byte(t.Credentials.User+":"+secret)))
	case policy.SchemeRaw:
		h.Set(c.Header, secret)
	default:
		h.Set(c.Header, "Bearer "+secret)
	}
}
