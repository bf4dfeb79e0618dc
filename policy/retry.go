package policy

import (
	"context"
	"time"
)

// An HTTP agent cannot be held for minutes: its request waits a while,
// then gets 403 naming the approval, and the agent retries the same
// request later, on a new connection (a new session). So a waiter that
// stops with ErrStoppedWaiting detaches from its request instead of
// abandoning it: the request stays pending until its own expiry, outlives
// its session, and once decided its decision is kept (until the broker's
// timeout passes again) for one retry of the same command: same workload,
// target, command text and parameters hash. A retry that comes while it is
// still pending waits on it again instead of filing another.

// retryGrant is the decision of a detached request, kept for one retry.
type retryGrant struct {
	id       string
	approved bool
	reason   string
	until    time.Time
}

func retryKey(r Request) string {
	return r.Workload + "\x00" + r.Target + "\x00" + r.Command + "\x00" + r.ParamsHash
}

func (b *Broker) timeout() time.Duration {
	if b.Timeout == 0 {
		return 5 * time.Minute
	}
	return b.Timeout
}

// retryLocked answers r from a detached request of the same command: its
// decision (consumed), or the request itself to wait on again. b.mu is
// held.
func (b *Broker) retryLocked(r Request) (Outcome, *pendingRequest, bool) {
	key := retryKey(r)
	if g, ok := b.retries[key]; ok {
		delete(b.retries, key)
		if time.Now().Before(g.until) {
			return Outcome{Approved: g.approved, ID: g.id, Reason: g.reason}, nil, true
		}
	}
	for _, p := range b.pending {
		if p.detached && retryKey(p.req) == key {
			p.detached = false
			return Outcome{}, p, true
		}
	}
	return Outcome{}, nil, false
}

// detach leaves p pending after its waiter stopped waiting; the broker
// expires it itself. It reports false if p was decided meanwhile.
func (b *Broker) detach(p *pendingRequest) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if p.req.State != StatePending {
		return false
	}
	p.detached = true
	id := p.req.ID
	time.AfterFunc(time.Until(p.req.Expires), func() {
		if final, ok := b.finish(id, StateExpired, "", "approval timed out after "+b.timeout().String(), ""); ok {
			b.broadcast(final)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			b.record(ctx, final)
		}
	})
	return true
}

// settleLocked keeps the decision of detached p for a retry. b.mu is held.
func (b *Broker) settleLocked(p *pendingRequest) {
	if p.req.State != StateApproved && p.req.State != StateDenied {
		return
	}
	b.retries[retryKey(p.req)] = retryGrant{id: p.req.ID, approved: p.req.State == StateApproved,
		reason: p.req.Reason, until: time.Now().Add(b.timeout())}
	for k, g := range b.retries { // bounded: drop what expired
		if time.Now().After(g.until) {
			delete(b.retries, k)
		}
	}
}

// recordDetached records final if its request had no waiter (Decide's
// caller records what a waiter would have).
func (b *Broker) recordDetached(ctx context.Context, final Request) {
	b.mu.Lock()
	g, ok := b.retries[retryKey(final)]
	b.mu.Unlock()
	if ok && g.id == final.ID {
		b.record(ctx, final)
	}
}
