package l7_test

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/loopgate/loopgate/l7"
	"github.com/loopgate/loopgate/l7/l7test"
	"github.com/loopgate/loopgate/policy"
	"github.com/loopgate/loopgate/store/event"
)

const authzBase = "targets:\n  - {name: t, protocol: postgres, address: 127.0.0.2:7000}\nworkloads:\n  - {name: w, cgroup: lg/w}\n"

// TestAuthorize: the one decision path decides, stops a batch at its
// first refusal, and records each decided command once, with its
// decision, before it returns.
func TestAuthorize(t *testing.T) {
	t.Parallel()
	cfg := l7test.Config(t, authzBase+"rules:\n  - {id: r, workloads: [w], targets: [t], allow: [read], deny: [ddl], record: async}\n"+
		"")
	for _, tc := range []struct {
		name    string
		classes [][]string
		fail    bool
		// want: the decisions after Authorize; recorded: how many events
		// are written durably; async: how many queued.
		want            []policy.Action
		recorded, async int
	}{
		{name: "allowed async", classes: [][]string{{"read"}, {"read"}}, want: []policy.Action{"allow", "allow"}, async: 2},
		{name: "denied stops the batch", classes: [][]string{{"read"}, {"ddl"}, {"read"}}, want: []policy.Action{"allow", "deny", "deny"}, recorded: 2},
		{name: "no class", classes: [][]string{{}}, want: []policy.Action{"deny"}, recorded: 1},
		{name: "unlisted class", classes: [][]string{{"dml"}}, want: []policy.Action{"deny"}, recorded: 1},
		{name: "record fails", classes: [][]string{{"ddl"}}, fail: true, want: []policy.Action{"deny"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := l7test.NewRecorder()
			rec.FailAppend = tc.fail
			srv := l7test.Server(t, cfg, rec)
			s := l7test.Session(t, srv, "w", "t", "127.0.0.2:7000")
			var cmds []*l7.Command
			for i, cl := range tc.classes {
				cmds = append(cmds, &l7.Command{Text: "cmd" + string(rune('0'+i)), Classes: cl})
			}
			err := s.Authorize(context.Background(), cmds...)
			if (err != nil) != tc.fail {
				t.Fatalf("err = %v", err)
			}
			for i, c := range cmds {
				if c.Decision.Action != tc.want[i] {
					t.Errorf("cmd %d: %s (%s), want %s", i, c.Decision.Action, c.Decision.Reason, tc.want[i])
				}
			}
			evs := rec.EventsOf()
			if tc.async > 0 {
				// Queued: the recorder stores async events too.
				if len(evs) != tc.async {
					t.Errorf("%d events, want %d queued", len(evs), tc.async)
				}
				return
			}
			if len(evs) != tc.recorded {
				t.Fatalf("%d events recorded, want %d: %+v", len(evs), tc.recorded, evs)
			}
			for i, ev := range evs {
				if ev.Text != cmds[i].Text || ev.Decision != string(cmds[i].Decision.Action) || ev.SessionID != s.ID || ev.Kind != event.KindCommand {
					t.Errorf("event %d = %+v", i, ev)
				}
				if cmds[i].Decision.Action != policy.Allow && ev.Error == "" {
					t.Errorf("event %d: a refusal without its reason", i)
				}
			}
		})
	}
}

// TestRecheckAdmittedWithoutClasses: a session that holds only its
// admission (a postgres session: statements are decided one by one) is
// still cut off by a reload that leaves no rule covering it; one still
// logging in is left to its own admission.
func TestRecheckAdmittedWithoutClasses(t *testing.T) {
	t.Parallel()
	allow := l7test.Config(t, authzBase+"rules:\n  - {id: r, workloads: [w], targets: [t], allow: [read]}\n")
	none := l7test.Config(t, authzBase)
	rec := l7test.NewRecorder()
	acc := newChanAccepter()
	srv := l7test.Server(t, allow, rec)
	srv.Accepters = []l7.Accepter{acc}
	srv.Drain = time.Second
	admitted := make(chan struct{}, 2)
	srv.Handlers = map[string]l7.Handler{"postgres": handlerFunc(func(ctx context.Context, _ net.Conn, s *l7.Session) (l7.Result, error) {
		if s.Subject.PID == 1 {
			c := &l7.Command{Kind: event.KindDecision, Text: "connect", Decision: s.Policy().Admit(s.Subject), Hold: true}
			if err := s.Authorize(ctx, c); err != nil || c.Decision.Action != policy.Allow {
				t.Errorf("authorize: %v %+v", err, c.Decision)
			}
		}
		admitted <- struct{}{}
		<-ctx.Done()
		return l7.Result{}, context.Cause(ctx)
	})}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- srv.Run(ctx) }()
	defer func() { cancel(); <-done }()
	for pid := 1; pid <= 2; pid++ {
		a, b := net.Pipe()
		defer b.Close()
		sub := subject()
		sub.PID = pid
		sub.Target, _ = allow.TargetByName("t")
		acc.ch <- l7.Accepted{Conn: a, Subject: sub}
		<-admitted
	}
	if n := srv.Recheck(context.Background(), allow); n != 0 {
		t.Errorf("recheck under the same policy revoked %d", n)
	}
	if n := srv.Recheck(context.Background(), none); n != 1 {
		t.Errorf("recheck revoked %d, want 1 (the admitted session only)", n)
	}
}
