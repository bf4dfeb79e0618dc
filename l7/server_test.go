package l7_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/loopgate/loopgate/l7"
	"github.com/loopgate/loopgate/l7/l7test"
	"github.com/loopgate/loopgate/policy"
	"github.com/loopgate/loopgate/store/event"
)

// chanAccepter hands out queued connections.
type chanAccepter struct {
	ch     chan l7.Accepted
	closed chan struct{}
	once   sync.Once
}

func newChanAccepter() *chanAccepter {
	return &chanAccepter{ch: make(chan l7.Accepted, 8), closed: make(chan struct{})}
}

func (a *chanAccepter) Accept() (l7.Accepted, error) {
	select {
	case acc := <-a.ch:
		return acc, nil
	case <-a.closed:
		return l7.Accepted{}, net.ErrClosed
	}
}

func (a *chanAccepter) Close() error { a.once.Do(func() { close(a.closed) }); return nil }

type handlerFunc func(ctx context.Context, c net.Conn, s *l7.Session) (l7.Result, error)

func (f handlerFunc) Serve(ctx context.Context, c net.Conn, s *l7.Session) (l7.Result, error) {
	return f(ctx, c, s)
}

func subject() *policy.Subject {
	return &policy.Subject{
		Workload: "w",
		Target:   &policy.Target{Name: "t", Protocol: "tcp"},
		KernelFacts: policy.KernelFacts{
			OrigDst: netip.MustParseAddrPort("127.0.0.2:7000"), PID: 1234, UID: 1000,
		},
	}
}

func TestServerOutcomes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		acc      func(net.Conn) l7.Accepted
		handler  handlerFunc
		failOpen bool
		want     event.Outcome
		called   bool
	}{
		{
			name:    "closed",
			acc:     func(c net.Conn) l7.Accepted { return l7.Accepted{Conn: c, Subject: subject()} },
			handler: func(context.Context, net.Conn, *l7.Session) (l7.Result, error) { return l7.Result{BytesUp: 3}, nil },
			want:    event.OutcomeClosed, called: true,
		},
		{
			name: "handler error",
			acc:  func(c net.Conn) l7.Accepted { return l7.Accepted{Conn: c, Subject: subject()} },
			handler: func(context.Context, net.Conn, *l7.Session) (l7.Result, error) {
				return l7.Result{}, errors.New("dial upstream: refused")
			},
			want: event.OutcomeError, called: true,
		},
		{
			name:    "panic is recorded and contained",
			acc:     func(c net.Conn) l7.Accepted { return l7.Accepted{Conn: c, Subject: subject()} },
			handler: func(context.Context, net.Conn, *l7.Session) (l7.Result, error) { panic("boom") },
			want:    event.OutcomeInternalError, called: true,
		},
		{
			name: "no origin is refused",
			acc:  func(c net.Conn) l7.Accepted { return l7.Accepted{Conn: c, Err: errors.New("no redirect record")} },
			want: event.OutcomeRefused,
		},
		{
			name:     "no record no forward",
			acc:      func(c net.Conn) l7.Accepted { return l7.Accepted{Conn: c, Subject: subject()} },
			failOpen: true,
			// The session's start goes with its first record: that fails,
			// so the handler forwards nothing, and no end is recorded.
			handler: func(ctx context.Context, c net.Conn, s *l7.Session) (l7.Result, error) {
				err := s.Record(ctx, event.Event{Kind: event.KindDecision, Text: "connect", Decision: "allow"})
				if err == nil {
					c.Write([]byte("forwarded"))
				}
				return l7.Result{}, err
			},
			want: "", called: true,
		},
		{
			name: "start written with the first record",
			acc:  func(c net.Conn) l7.Accepted { return l7.Accepted{Conn: c, Subject: subject()} },
			handler: func(ctx context.Context, c net.Conn, s *l7.Session) (l7.Result, error) {
				return l7.Result{}, s.Record(ctx, event.Event{Kind: event.KindDecision, Text: "connect", Decision: "allow"})
			},
			want: event.OutcomeClosed, called: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rec := l7test.NewRecorder()
			rec.FailOpen = tc.failOpen
			acc := newChanAccepter()
			called := make(chan bool, 1)
			h := handlerFunc(func(ctx context.Context, c net.Conn, s *l7.Session) (l7.Result, error) {
				called <- true
				return tc.handler(ctx, c, s)
			})
			srv := &l7.Server{
				Accepters: []l7.Accepter{acc},
				Handlers:  map[string]l7.Handler{"tcp": h},
				Recorder:  rec,
				Log:       slog.New(slog.NewTextHandler(t.Output(), nil)),
				Drain:     time.Second,
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error)
			go func() { done <- srv.Run(ctx) }()
			a, b := net.Pipe()
			defer b.Close()
			acc.ch <- tc.acc(a)
			// The server closes its end when the session is over.
			b.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := b.Read(make([]byte, 1)); err == nil {
				t.Fatal("read data from a session that should have ended")
			}
			cancel()
			if err := <-done; err != nil {
				t.Fatalf("Run: %v", err)
			}
			select {
			case <-called:
				if !tc.called {
					t.Error("handler ran")
				}
			default:
				if tc.called {
					t.Error("handler did not run")
				}
			}
			ends := rec.Ends()
			if tc.want == "" {
				if len(ends) != 0 {
					t.Errorf("ends = %v", ends)
				}
				return
			}
			if len(ends) != 1 || ends[0].Outcome != tc.want {
				t.Errorf("ends = %+v, want one %q", ends, tc.want)
			}
			// The start rides with the first record, if any, and the end
			// is queued: a session costs one durable write.
			if n := rec.WriteCount(); n != 1 {
				t.Errorf("%d durable writes, want 1", n)
			}
		})
	}
}

func TestShutdownCancelsSessions(t *testing.T) {
	t.Parallel()
	rec := l7test.NewRecorder()
	acc := newChanAccepter()
	started := make(chan struct{})
	srv := &l7.Server{
		Accepters: []l7.Accepter{acc},
		Handlers: map[string]l7.Handler{"tcp": handlerFunc(func(ctx context.Context, _ net.Conn, _ *l7.Session) (l7.Result, error) {
			close(started)
			<-ctx.Done()
			return l7.Result{}, context.Cause(ctx)
		})},
		Recorder: rec,
		Log:      slog.New(slog.NewTextHandler(t.Output(), nil)),
		Drain:    50 * time.Millisecond,
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- srv.Run(ctx) }()
	a, b := net.Pipe()
	defer b.Close()
	acc.ch <- l7.Accepted{Conn: a, Subject: subject()}
	<-started
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	ends := rec.Ends()
	if len(ends) != 1 || ends[0].Outcome != event.OutcomeShutdown {
		t.Errorf("ends = %+v", ends)
	}
}

func TestNewIDSorts(t *testing.T) {
	t.Parallel()
	a := l7.NewID()
	time.Sleep(2 * time.Millisecond)
	b := l7.NewID()
	if len(a) != 24 || a >= b {
		t.Errorf("ids %q, %q", a, b)
	}
}

func TestRecheckRevokes(t *testing.T) {
	t.Parallel()
	const base = "targets:\n  - {name: t, protocol: tcp, address: 127.0.0.2:7000}\nworkloads:\n  - {name: w, cgroup: lg/w}\n"
	allow := l7test.Config(t, base+"rules:\n  - {id: r, workloads: [w], targets: [t], allow: [connect]}\n")
	deny := l7test.Config(t, base)
	rec := l7test.NewRecorder()
	acc := newChanAccepter()
	admitted := make(chan struct{})
	srv := l7test.Server(t, allow, rec)
	srv.Accepters = []l7.Accepter{acc}
	srv.Drain = time.Second
	srv.Handlers = map[string]l7.Handler{"tcp": handlerFunc(func(ctx context.Context, _ net.Conn, s *l7.Session) (l7.Result, error) {
		c := &l7.Command{Text: "connect", Classes: []string{"connect"}, Hold: true}
		if err := s.Authorize(ctx, c); err != nil || c.Decision.Action != policy.Allow {
			t.Errorf("authorize: %v %+v", err, c.Decision)
		}
		close(admitted)
		<-ctx.Done()
		return l7.Result{}, context.Cause(ctx)
	})}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- srv.Run(ctx) }()
	a, b := net.Pipe()
	defer b.Close()
	sub := subject()
	sub.Target, _ = allow.TargetByName("t")
	acc.ch <- l7.Accepted{Conn: a, Subject: sub}
	<-admitted
	if n := srv.Recheck(context.Background(), allow); n != 0 {
		t.Errorf("recheck under the same policy revoked %d", n)
	}
	if n := srv.Recheck(context.Background(), deny); n != 1 {
		t.Errorf("recheck revoked %d, want 1", n)
	}
	b.SetReadDeadline(time.Now().Add(5 * time.Second))
	b.Read(make([]byte, 1)) // returns when the session closes its conn
	cancel()
	<-done
	ends := rec.Ends()
	if len(ends) != 1 || ends[0].Outcome != event.OutcomeRevoked {
		t.Errorf("ends = %+v", ends)
	}
}
