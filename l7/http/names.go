package http

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"time"
)

// nameTTL is how long a name's addresses are trusted without asking again.
const nameTTL = 30 * time.Second

// nameCache checks that a name the agent gave (SNI, Host) resolves to the
// address it dialled, so an agent cannot reach one target while naming
// another (domain fronting, a shared IP). mu guards m.
type nameCache struct {
	r  Resolver
	mu sync.Mutex
	m  map[string]nameEntry
}

type nameEntry struct {
	addrs []netip.Addr
	until time.Time
}

// check returns nil if name is addr itself (an IP literal) or resolves to
// it.
func (c *nameCache) check(ctx context.Context, name string, addr netip.Addr) error {
	addr = addr.Unmap()
	if ip, err := netip.ParseAddr(name); err == nil {
		if ip.Unmap() == addr {
			return nil
		}
		return fmt.Errorf("name %s is not the address dialled (%s)", name, addr)
	}
	c.mu.Lock()
	e, ok := c.m[name]
	c.mu.Unlock()
	if !ok || time.Now().After(e.until) {
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		addrs, err := c.r.LookupNetIP(ctx, "ip", name)
		if err != nil {
			return fmt.Errorf("name %s does not resolve: %v", name, err)
		}
		e = nameEntry{addrs: addrs, until: time.Now().Add(nameTTL)}
		c.mu.Lock()
		if len(c.m) > 4096 {
			clear(c.m)
		}
		c.m[name] = e
		c.mu.Unlock()
	}
	for _, a := range e.addrs {
		if a.Unmap() == addr {
			return nil
		}
	}
	return fmt.Errorf("name %s does not resolve to the address dialled (%s)", name, addr)
}
