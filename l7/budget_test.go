package l7_test

import (
	"context"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/loopgate/loopgate/l7"
	"github.com/loopgate/loopgate/l7/l7test"
	"github.com/loopgate/loopgate/policy"
	"github.com/loopgate/loopgate/store/event"
)

// refusingHandler holds sessions until release is closed and notes the
// refusals it is asked to tell.
type refusingHandler struct {
	release chan struct{}
	serving sync.WaitGroup
	mu      sync.Mutex
	refused []string
}

func (h *refusingHandler) Serve(ctx context.Context, c net.Conn, s *l7.Session) (l7.Result, error) {
	h.serving.Done()
	select {
	case <-h.release:
	case <-ctx.Done():
	}
	return l7.Result{}, nil
}

func (h *refusingHandler) Refuse(c net.Conn, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.refused = append(h.refused, err.Error())
}

// TestSessionBudgets: past a workload's max_sessions, or the daemon's,
// sessions are refused (told through the handler, recorded, logged at a
// limited rate) while other workloads are served; a session that ends
// gives its place back.
func TestSessionBudgets(t *testing.T) {
	t.Parallel()
	cfg := l7test.Config(t, `limits: {max_sessions: 5}
targets:
  - {name: t, protocol: tcp, address: 127.0.0.2:7000}
workloads:
  - {name: w, cgroup: lg/w, max_sessions: 2}
  - {name: other, cgroup: lg/other}
`)
	rec := l7test.NewRecorder()
	var logs strings.Builder
	var logMu sync.Mutex
	h := &refusingHandler{release: make(chan struct{})}
	acc := newChanAccepter()
	srv := &l7.Server{
		Accepters: []l7.Accepter{acc},
		Handlers:  map[string]l7.Handler{"tcp": h},
		Recorder:  rec,
		Log:       slog.New(slog.NewTextHandler(lockedWriter{&logMu, &logs}, nil)),
		Policy:    func() *policy.Config { return cfg },
		Drain:     time.Second,
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- srv.Run(ctx) }()
	conn := func(workload string) l7.Accepted {
		a, b := net.Pipe()
		t.Cleanup(func() { a.Close(); b.Close() })
		sub := subject()
		sub.Workload = workload
		return l7.Accepted{Conn: a, Subject: sub}
	}
	h.serving.Add(2)
	for range 2 {
		acc.ch <- conn("w")
	}
	h.serving.Wait()
	for range 10 {
		acc.ch <- conn("w") // over w's budget
	}
	h.serving.Add(3)
	for range 3 {
		acc.ch <- conn("other") // fills the daemon's budget of 5
	}
	h.serving.Wait()
	acc.ch <- conn("other") // over the daemon's
	waitFor(t, func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return len(h.refused) == 11
	})
	h.mu.Lock()
	told := map[string]int{}
	for _, r := range h.refused {
		told[r]++
	}
	h.mu.Unlock()
	if told["loopgate: workload w has 2 sessions (max_sessions)"] != 10 || told["loopgate: the daemon has 5 sessions (limits: max_sessions)"] != 1 {
		t.Errorf("refusals told: %v", told)
	}
	close(h.release)
	waitFor(t, func() bool { return len(rec.Ends()) == 16 })
	refused := 0
	for _, e := range rec.Ends() {
		if e.Outcome == event.OutcomeRefused {
			refused++
		}
	}
	if refused != 11 {
		t.Errorf("%d refusals recorded, want 11", refused)
	}
	logMu.Lock()
	if n := strings.Count(logs.String(), "budget full"); n != 2 {
		t.Errorf("%d log lines about full budgets, want 2 (one a second per budget):\n%s", n, logs.String())
	}
	logMu.Unlock()

	// Places are given back: w is served again.
	h.serving.Add(1)
	acc.ch <- conn("w")
	h.serving.Wait()
	cancel()
	<-done
}

type lockedWriter struct {
	mu *sync.Mutex
	b  *strings.Builder
}

func (w lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}
