// Package l7test helps test protocol handlers without root or SQLite: an
// in-memory Recorder and sessions built on a policy parsed from YAML.
package l7test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"testing"

	"github.com/loopgate/loopgate/l7"
	"github.com/loopgate/loopgate/policy"
	"github.com/loopgate/loopgate/store/event"
)

// Recorder records in memory. It is safe for concurrent use.
type Recorder struct {
	mu sync.Mutex
	// FailOpen makes OpenSession fail, as a full disk would.
	FailOpen bool
	Opened   map[string]event.Session
	Ended    map[string]event.End
	// Progress holds the byte counts last queued per session.
	Progress map[string][2]int64
	Events   []event.Event
	// Writes counts durable writes (OpenSession, AppendEvents,
	// AppendEventsNow).
	Writes int
	// Waits makes AppendEventsNow decline every write, as a store under
	// sync: full does; Declined counts the writes it declined.
	Waits    bool
	Declined int
	// FailAppend makes AppendEvents and AppendEventsNow fail, as a full
	// disk would.
	FailAppend bool
}

// NewRecorder returns an empty Recorder.
func NewRecorder() *Recorder {
	return &Recorder{Opened: map[string]event.Session{}, Ended: map[string]event.End{}, Progress: map[string][2]int64{}}
}

// OpenSession implements l7.Recorder.
func (m *Recorder) OpenSession(_ context.Context, s event.Session, first ...event.Event) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.FailOpen {
		return errors.New("disk full")
	}
	m.Opened[s.ID] = s
	m.Events = append(m.Events, first...)
	m.Writes++
	return nil
}

// CloseSessionAsync implements l7.Recorder.
func (m *Recorder) CloseSessionAsync(id string, e event.End) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.Ended[id] = e
}

// SessionProgressAsync implements l7.Recorder.
func (m *Recorder) SessionProgressAsync(id string, up, down int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.Progress[id] = [2]int64{up, down}
}

// ProgressOf returns the byte counts last queued for session id.
func (m *Recorder) ProgressOf(id string) (up, down int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p := m.Progress[id]
	return p[0], p[1]
}

// AppendEvents implements l7.Recorder.
func (m *Recorder) AppendEvents(_ context.Context, evs ...event.Event) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.FailAppend {
		return errors.New("disk full")
	}
	m.Events = append(m.Events, evs...)
	m.Writes++
	return nil
}

// AppendEventsNow implements l7.Recorder: in memory nothing waits,
// unless Waits is set.
func (m *Recorder) AppendEventsNow(evs ...event.Event) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.Waits {
		m.Declined++
		return false, nil
	}
	if m.FailAppend {
		return true, errors.New("disk full")
	}
	m.Events = append(m.Events, evs...)
	m.Writes++
	return true, nil
}

// AppendEventsAsync implements l7.Recorder: in memory there is nothing
// to wait for.
func (m *Recorder) AppendEventsAsync(evs ...event.Event) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.Events = append(m.Events, evs...)
}

// DeclinedCount returns Declined.
func (m *Recorder) DeclinedCount() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.Declined
}

// WriteCount returns Writes.
func (m *Recorder) WriteCount() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.Writes
}

// Ends returns the recorded session ends.
func (m *Recorder) Ends() []event.End {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []event.End
	for _, e := range m.Ended {
		out = append(out, e)
	}
	return out
}

// EventsOf returns a copy of the recorded events.
func (m *Recorder) EventsOf() []event.Event {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]event.Event(nil), m.Events...)
}

// Config parses a policy config or fails t.
func Config(t testing.TB, yaml string) *policy.Config {
	t.Helper()
	cfg, err := policy.Parse("test.yaml", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// Server returns a server on cfg recording into rec, logging to t.
func Server(t testing.TB, cfg *policy.Config, rec *Recorder) *l7.Server {
	return &l7.Server{
		Recorder: rec,
		Log:      slog.New(slog.NewTextHandler(t.Output(), nil)),
		Policy:   func() *policy.Config { return cfg },
	}
}

// Session returns a session of workload w on target (by name) whose
// original destination is dst.
func Session(t testing.TB, srv *l7.Server, workload, target, dst string) *l7.Session {
	t.Helper()
	tg, ok := srv.Policy().TargetByName(target)
	if !ok {
		t.Fatalf("no target %q", target)
	}
	sub := &policy.Subject{Workload: workload, Target: tg, KernelFacts: policy.KernelFacts{OrigDst: netip.MustParseAddrPort(dst)}}
	return srv.NewSession("test-session", sub)
}

// TCPPair returns the two ends of a loopback TCP connection, closed when
// the test ends.
func TCPPair(t testing.TB) (client, server net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = ln.Accept()
	if err != nil {
		client.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}
