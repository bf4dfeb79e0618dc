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
	"github.com/loopgate/loopgate/policy"
	"github.com/loopgate/loopgate/store/event"
)

// memRecorder is an in-memory Recorder.
type memRecorder struct {
	mu       sync.Mutex
	failOpen bool
	opened   map[string]event.Session
	ended    map[string]event.End
}

func newMemRecorder() *memRecorder {
	return &memRecorder{opened: map[string]event.Session{}, ended: map[string]event.End{}}
}

func (m *memRecorder) OpenSession(_ context.Context, s event.Session) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failOpen {
		return errors.New("disk full")
	}
	m.opened[s.ID] = s
	return nil
}

func (m *memRecorder) CloseSession(_ context.Context, id string, e event.End) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.ended[id] = e
	return nil
}

func (m *memRecorder) ends() []event.End {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []event.End
	for _, e := range m.ended {
		out = append(out, e)
	}
	return out
}

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
			want:     "", // nothing can be recorded; the handler must not run
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rec := newMemRecorder()
			rec.failOpen = tc.failOpen
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
			ends := rec.ends()
			if tc.want == "" {
				if len(ends) != 0 {
					t.Errorf("ends = %v", ends)
				}
				return
			}
			if len(ends) != 1 || ends[0].Outcome != tc.want {
				t.Errorf("ends = %+v, want one %q", ends, tc.want)
			}
		})
	}
}

func TestShutdownCancelsSessions(t *testing.T) {
	t.Parallel()
	rec := newMemRecorder()
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
	ends := rec.ends()
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
