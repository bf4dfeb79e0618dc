package policy

import (
	"context"
	"testing"
	"time"
)

// TestRetryAfterStoppedWaiting: a waiter that stops with ErrStoppedWaiting
// leaves its request pending past its session's end; the approval then
// answers one retry of the same command (another session), not a different
// command, and not a second retry.
func TestRetryAfterStoppedWaiting(t *testing.T) {
	t.Parallel()
	b, rec := newBroker(t)
	r := Request{SessionID: "s1", Workload: "w", Target: "api", UID: 5, Command: "POST /merges", ParamsHash: HashParams("body"), Class: "write"}
	ctx, cancel := context.WithCancelCause(context.Background())
	id, wait := ask(t, b, ctx, r)
	cancel(ErrStoppedWaiting)
	if out := wait(); out.Approved || !out.Pending || out.ID != id {
		t.Fatalf("stopped waiting: %+v", out)
	}
	b.EndSession("s1")
	if _, ok := b.Get(id); !ok {
		t.Fatal("request did not outlive its session")
	}
	if _, err := b.Decide(context.Background(), id, alice, true, "", "", 0); err != nil {
		t.Fatal(err)
	}
	other := r
	other.SessionID, other.ParamsHash = "s2", HashParams("other body")
	retry := r
	retry.SessionID = "s3"
	// A different body is a different command: it files a new request.
	octx, ocancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer ocancel()
	if out, _ := b.Ask(octx, other, nil); out.Approved || out.ID == id {
		t.Errorf("other body: %+v", out)
	}
	out, err := b.Ask(context.Background(), retry, nil)
	if err != nil || !out.Approved || out.ID != id {
		t.Fatalf("retry: %+v %v", out, err)
	}
	rctx, rcancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer rcancel()
	if out, _ := b.Ask(rctx, retry, nil); out.Approved {
		t.Errorf("second retry approved by the same approval: %+v", out)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	approved := false
	for _, s := range rec.seen {
		approved = approved || s.ID == id && s.State == StateApproved
	}
	if !approved {
		t.Error("the detached request's approval was not recorded")
	}
}

// TestRetryWhilePending: a retry of a command whose request is still
// pending waits on it rather than filing another.
func TestRetryWhilePending(t *testing.T) {
	t.Parallel()
	b, _ := newBroker(t)
	r := Request{SessionID: "s1", Workload: "w", Target: "api", UID: 5, Command: "DELETE /x", Class: "delete"}
	ctx, cancel := context.WithCancelCause(context.Background())
	id, wait := ask(t, b, ctx, r)
	cancel(ErrStoppedWaiting)
	wait()
	r.SessionID = "s2"
	id2, wait2 := ask(t, b, context.Background(), r)
	if id2 != id || len(b.Pending()) != 1 {
		t.Fatalf("retry filed %s (first %s), %d pending", id2, id, len(b.Pending()))
	}
	b.Decide(context.Background(), id, bob, true, "", "", 0)
	if out := wait2(); !out.Approved || out.ID != id {
		t.Errorf("retry: %+v", out)
	}
}
