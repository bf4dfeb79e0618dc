package policy

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

const brokerConfig = `approvers:
  - {name: alice, uid: 1000}
  - {name: bob, uid: 1001}
  - {name: dbas, oidc_group: dba}
`

type memApprovals struct {
	mu   sync.Mutex
	seen []Request
}

func (m *memApprovals) RecordApproval(_ context.Context, r Request) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.seen = append(m.seen, r)
	return nil
}

func newBroker(t *testing.T) (*Broker, *memApprovals) {
	cfg, err := Parse("b.yaml", []byte(brokerConfig))
	if err != nil {
		t.Fatal(err)
	}
	rec := &memApprovals{}
	return &Broker{Policy: func() *Config { return cfg }, Recorder: rec, Timeout: 5 * time.Second, MaxPending: 2}, rec
}

// ask files r in the background and returns the id and a wait function.
func ask(t *testing.T, b *Broker, ctx context.Context, r Request) (string, func() Outcome) {
	t.Helper()
	idc := make(chan string, 1)
	outc := make(chan Outcome, 1)
	go func() {
		out, _ := b.Ask(ctx, r, func(q Request) { idc <- q.ID })
		if out.Granted {
			idc <- ""
		}
		outc <- out
	}()
	select {
	case id := <-idc:
		return id, func() Outcome { return <-outc }
	case <-time.After(5 * time.Second):
		t.Fatal("request not filed")
	}
	return "", nil
}

var alice, bob = Identity{UID: 1000}, Identity{UID: 1001}

func TestBrokerDecisions(t *testing.T) {
	t.Parallel()
	req := Request{SessionID: "s1", Workload: "w", Target: "db", UID: 1000, Class: "write", RuleID: "r", Command: "DELETE FROM t"}
	tests := []struct {
		name   string
		req    Request
		decide func(b *Broker, id string) error
		want   bool
		reason string
	}{
		{"approve", withUID(req, 5), func(b *Broker, id string) error {
			_, err := b.Decide(context.Background(), id, alice, true, "", "", 0)
			return err
		}, true, "approved by alice"},
		{"deny with reason", withUID(req, 5), func(b *Broker, id string) error {
			_, err := b.Decide(context.Background(), id, bob, false, "not today", "", 0)
			return err
		}, false, "not today"},
		{"group member", withUID(req, 5), func(b *Broker, id string) error {
			_, err := b.Decide(context.Background(), id, Identity{UID: -1, Subject: "carol", Groups: []string{"dba"}}, true, "", "", 0)
			return err
		}, true, "approved by dbas:carol"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, rec := newBroker(t)
			id, wait := ask(t, b, context.Background(), tc.req)
			if err := tc.decide(b, id); err != nil {
				t.Fatal(err)
			}
			out := wait()
			if out.Approved != tc.want || out.Reason != tc.reason {
				t.Errorf("outcome = %+v", out)
			}
			if n := len(rec.seen); n < 2 || rec.seen[n-1].State == StatePending {
				t.Errorf("records = %+v", rec.seen)
			}
		})
	}
}

func withUID(r Request, uid uint32) Request { r.UID = uid; return r }

func TestBrokerRefusals(t *testing.T) {
	t.Parallel()
	b, _ := newBroker(t)
	id, wait := ask(t, b, context.Background(), Request{SessionID: "s", UID: 1000, Class: "write", Required: 2})
	ctx := context.Background()
	if _, err := b.Decide(ctx, id, alice, true, "", "", 0); !errors.Is(err, ErrSelfApproval) {
		t.Errorf("self approval: %v", err)
	}
	if _, err := b.Decide(ctx, id, Identity{UID: 4242}, true, "", "", 0); !errors.Is(err, ErrNotApprover) {
		t.Errorf("stranger: %v", err)
	}
	if r, err := b.Decide(ctx, id, bob, true, "", "", 0); err != nil || r.State != StatePending || len(r.ApprovedBy) != 1 {
		t.Errorf("first of two: %+v %v", r, err)
	}
	if _, err := b.Decide(ctx, id, bob, true, "", "", 0); !errors.Is(err, ErrAlreadyApproved) {
		t.Errorf("twice: %v", err)
	}
	if _, err := b.Decide(ctx, id, Identity{UID: -1, Subject: "dan", Groups: []string{"dba"}}, true, "", "", 0); err != nil {
		t.Fatal(err)
	}
	if out := wait(); !out.Approved {
		t.Errorf("two-person: %+v", out)
	}
	if _, err := b.Decide(ctx, id, bob, false, "", "", 0); !errors.Is(err, ErrNoSuchRequest) {
		t.Errorf("decided: %v", err)
	}
}

func TestBrokerTimeoutAbandonAndCapacity(t *testing.T) {
	t.Parallel()
	b, _ := newBroker(t)
	b.Timeout = 100 * time.Millisecond
	out, _ := b.Ask(context.Background(), Request{SessionID: "s", Class: "write"}, nil)
	if out.Approved || out.Reason == "" {
		t.Errorf("timeout: %+v", out)
	}
	b.Timeout = time.Minute
	ctx, cancel := context.WithCancel(context.Background())
	_, wait := ask(t, b, ctx, Request{SessionID: "s2", Class: "write"})
	_, wait2 := ask(t, b, context.Background(), Request{SessionID: "s3", Class: "write"})
	if _, err := b.Ask(context.Background(), Request{SessionID: "s4", Class: "write"}, nil); !errors.Is(err, ErrTooManyPending) {
		t.Errorf("capacity: %v", err)
	}
	cancel()
	if out := wait(); out.Approved || out.Reason != "the session ended while waiting" {
		t.Errorf("abandoned: %+v", out)
	}
	for _, p := range b.Pending() {
		b.Decide(context.Background(), p.ID, alice, false, "", "", 0)
	}
	wait2()
}

func TestBrokerScopes(t *testing.T) {
	t.Parallel()
	b, _ := newBroker(t)
	ctx := context.Background()
	r := Request{SessionID: "s", Workload: "w", Target: "db", Class: "write"}
	id, wait := ask(t, b, ctx, r)
	b.Decide(ctx, id, alice, true, "", ScopeSession, 0)
	wait()
	if out, _ := b.Ask(ctx, r, nil); !out.Approved || !out.Granted {
		t.Errorf("session scope: %+v", out)
	}
	other := r
	other.SessionID = "s-other"
	id, wait = ask(t, b, ctx, other)
	if id == "" {
		t.Fatal("session grant leaked to another session")
	}
	b.Decide(ctx, id, alice, true, "", ScopeWindow, time.Minute)
	wait()
	third := r
	third.SessionID = "s-third"
	if out, _ := b.Ask(ctx, third, nil); !out.Granted {
		t.Errorf("window scope: %+v", out)
	}
	ddl := third
	ddl.Class = "ddl"
	id, wait = ask(t, b, ctx, ddl)
	if id == "" {
		t.Error("window granted another class")
	}
	b.Decide(ctx, id, alice, false, "", "", 0)
	wait()
}

// TestBrokerEndSession: a request whose session ended is abandoned,
// recorded so, and cannot be approved; the session's grants go with it.
func TestBrokerEndSession(t *testing.T) {
	t.Parallel()
	b, rec := newBroker(t)
	ctx := context.Background() // the asker's context outlives the session
	req := Request{SessionID: "s1", Workload: "w", Target: "db", UID: 5, Class: "write", RuleID: "r"}
	other := req
	other.SessionID = "s2"
	id, wait := ask(t, b, ctx, req)
	otherID, otherWait := ask(t, b, ctx, other)
	b.EndSession("s1")
	out := wait()
	if out.Approved || out.ID != id || out.Reason != "the session ended while waiting" {
		t.Errorf("outcome %+v", out)
	}
	if _, err := b.Decide(ctx, id, alice, true, "", "", 0); !errors.Is(err, ErrNoSuchRequest) {
		t.Errorf("approving an abandoned request: err %v, want ErrNoSuchRequest", err)
	}
	rec.mu.Lock()
	last := rec.seen[len(rec.seen)-1]
	rec.mu.Unlock()
	if last.ID != id || last.State != StateAbandoned {
		t.Errorf("last recorded %s %s, want %s abandoned", last.ID, last.State, id)
	}
	// Another session's request is untouched; a session grant ends
	// with its session.
	if _, err := b.Decide(ctx, otherID, alice, true, "", ScopeSession, 0); err != nil {
		t.Fatal(err)
	}
	if !otherWait().Approved {
		t.Fatal("other session's request not approved")
	}
	if out, _ := b.Ask(ctx, other, nil); !out.Granted {
		t.Fatalf("session grant not applied: %+v", out)
	}
	b.EndSession("s2")
	again, againWait := ask(t, b, ctx, other)
	if again == "" {
		t.Fatal("session grant outlived its session")
	}
	b.EndSession("s2")
	againWait()
}

// TestBrokerAbandonCause: a session cancelled with a cause says why.
func TestBrokerAbandonCause(t *testing.T) {
	t.Parallel()
	b, _ := newBroker(t)
	ctx, cancel := context.WithCancelCause(context.Background())
	_, wait := ask(t, b, ctx, Request{SessionID: "s1", UID: 5, Class: "write"})
	cancel(errors.New("the client closed its connection"))
	out := wait()
	if out.Approved || out.Reason != "the session ended while waiting: the client closed its connection" {
		t.Errorf("outcome %+v", out)
	}
}
