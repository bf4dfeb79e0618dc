package l7_test

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/loopgate/loopgate/l7"
	"github.com/loopgate/loopgate/l7/l7test"
	"github.com/loopgate/loopgate/policy"
)

// TestApprovalAbandonedWhenClientLeaves: a client killed while its
// command waits for approval leaves nothing to approve: the request is
// abandoned at once, not when it expires, and approving it fails.
func TestApprovalAbandonedWhenClientLeaves(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// leave ends the client's side of the connection.
		leave func(c *net.TCPConn)
		// gone: the request is abandoned (else it waits on).
		gone bool
	}{
		{"closed", func(c *net.TCPConn) { c.Close() }, true},
		{"reset", func(c *net.TCPConn) { c.SetLinger(0); c.Close() }, true},
		{"half-closed with nothing sent", func(c *net.TCPConn) { c.CloseWrite() }, true},
		// nc -N: a request, then a FIN; it waits for the answer.
		{"half-closed after a request", func(c *net.TCPConn) { c.Write([]byte("GET /\n")); c.CloseWrite() }, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg := l7test.Config(t, "approvers:\n  - {name: alice, uid: 1000}\n")
			broker := &policy.Broker{Policy: func() *policy.Config { return cfg }, Timeout: time.Minute}
			rec := l7test.NewRecorder()
			srv := l7test.Server(t, cfg, rec)
			acc := newChanAccepter()
			srv.Accepters = []l7.Accepter{acc}
			srv.Broker = broker
			srv.Drain = time.Second
			filed := make(chan string, 1)
			outc := make(chan *l7.Command, 1)
			srv.Handlers = map[string]l7.Handler{"tcp": handlerFunc(func(ctx context.Context, _ net.Conn, s *l7.Session) (l7.Result, error) {
				c := &l7.Command{Text: "connect", Classes: []string{"connect"},
					Decision: policy.Decision{Action: policy.Approve, Class: "connect", RuleID: "r"},
					Notify:   func(r policy.Request) { filed <- r.ID }}
				err := s.Authorize(ctx, c)
				outc <- c
				return l7.Result{}, err
			})}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- srv.Run(ctx) }()
			defer func() { cancel(); <-done }()
			client, server := l7test.TCPPair(t)
			sub := subject()
			sub.UID = 5
			acc.ch <- l7.Accepted{Conn: server, Subject: sub}
			var id string
			select {
			case id = <-filed:
			case <-time.After(5 * time.Second):
				t.Fatal("request not filed")
			}
			tc.leave(client.(*net.TCPConn))
			if !tc.gone {
				// Still pending a while later, and approvable.
				time.Sleep(200 * time.Millisecond)
				if _, ok := broker.Get(id); !ok {
					t.Fatal("request of a half-closed client was abandoned")
				}
				if _, err := broker.Decide(context.Background(), id, policy.Identity{UID: 1000}, true, "", "", 0); err != nil {
					t.Fatal(err)
				}
				if out := <-outc; out.Decision.Action != policy.Allow || out.ApprovalID != id {
					t.Errorf("outcome %+v", out)
				}
				return
			}
			var out *l7.Command
			select {
			case out = <-outc:
			case <-time.After(5 * time.Second):
				t.Fatal("request still waiting after its client left")
			}
			if out.Decision.Action != policy.Deny || out.ApprovalID != id || out.Decision.Reason != "not approved: the session ended while waiting: "+l7.ErrClientGone.Error() {
				t.Errorf("outcome %+v", out)
			}
			if _, err := broker.Decide(context.Background(), id, policy.Identity{UID: 1000}, true, "", "", 0); !errors.Is(err, policy.ErrNoSuchRequest) {
				t.Errorf("approving the abandoned request: err %v, want ErrNoSuchRequest", err)
			}
		})
	}
}
