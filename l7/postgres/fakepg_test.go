package postgres

import (
	"context"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/loopgate/loopgate/l7/l7test"
)

// fakePG plays a PostgreSQL server for tests of Serve that need no real
// one: it logs anyone in (backend PID pid, secret 1 2 3 4), answers every
// Query with CommandComplete and ReadyForQuery, and reports the cancel
// requests and startup parameters it receives. Behaviour a real server
// decides (errors, cancels taking effect) is tested in tests/ instead.
type fakePG struct {
	ln      net.Listener
	pid     uint32
	cancels chan *pgproto3.CancelRequest
	mu      sync.Mutex
	params  []map[string]string // of each login
}

var fakeSecret = []byte{1, 2, 3, 4}

func startFakePG(t *testing.T) *fakePG {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakePG{ln: ln, pid: 4242, cancels: make(chan *pgproto3.CancelRequest, 16)}
	var wg sync.WaitGroup
	var conns []net.Conn
	t.Cleanup(func() {
		ln.Close()
		f.mu.Lock()
		for _, c := range conns {
			c.Close() // pooled ones too
		}
		f.mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			f.mu.Lock()
			conns = append(conns, c)
			f.mu.Unlock()
			wg.Go(func() { f.serve(c) })
		}
	})
	return f
}

func (f *fakePG) addr() string { return f.ln.Addr().String() }

func (f *fakePG) serve(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	be := pgproto3.NewBackend(c, c)
	for {
		msg, err := be.ReceiveStartupMessage()
		if err != nil {
			return
		}
		switch m := msg.(type) {
		case *pgproto3.SSLRequest, *pgproto3.GSSEncRequest:
			c.Write([]byte{'N'})
			continue
		case *pgproto3.CancelRequest:
			f.cancels <- &pgproto3.CancelRequest{ProcessID: m.ProcessID, SecretKey: append([]byte(nil), m.SecretKey...)}
			return
		case *pgproto3.StartupMessage:
			p := map[string]string{}
			for k, v := range m.Parameters {
				p[k] = v
			}
			f.mu.Lock()
			f.params = append(f.params, p)
			f.mu.Unlock()
		}
		break
	}
	be.Send(&pgproto3.AuthenticationOk{})
	be.Send(&pgproto3.ParameterStatus{Name: "server_version", Value: "15.0"})
	be.Send(&pgproto3.BackendKeyData{ProcessID: f.pid, SecretKey: fakeSecret})
	be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
	if be.Flush() != nil {
		return
	}
	for {
		msg, err := be.Receive()
		if err != nil {
			return
		}
		switch m := msg.(type) {
		case *pgproto3.Query:
			tag := "SELECT 0"
			if m.String == "DISCARD ALL" {
				tag = "DISCARD ALL"
			}
			be.Send(&pgproto3.CommandComplete{CommandTag: []byte(tag)})
			be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
			if be.Flush() != nil {
				return
			}
		case *pgproto3.Terminate:
			return
		}
	}
}

// fakeSession runs Serve for one agent connection of workload w against f.
type fakeSession struct {
	agent net.Conn
	fe    *pgproto3.Frontend
	key   *pgproto3.BackendKeyData
	// negotiated is the NegotiateProtocolVersion the agent got, if any.
	negotiated *pgproto3.NegotiateProtocolVersion
	done       chan error
}

func fakePolicy(addr string) string {
	return fmt.Sprintf(`targets:
  - {name: db, protocol: postgres, address: %s, credentials: {user: app}}
workloads:
  - {name: w, cgroup: lg/w}
  - {name: v, cgroup: lg/v}
rules:
  - {id: r, workloads: [w, v], targets: [db], allow: [read, write, session, transaction]}
`, addr)
}

// startFakeSession logs an agent of workload in through h to f with the
// startup parameters params, and reads up to its first ReadyForQuery (or
// the error that ended the login, returned).
func startFakeSession(t *testing.T, h *Handler, f *fakePG, workload string, params map[string]string) (*fakeSession, *pgproto3.ErrorResponse) {
	t.Helper()
	return startFakeSessionWith(t, h, f, workload, &pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber, Parameters: params})
}

// startFakeSessionWith is startFakeSession with the agent's own startup
// message.
func startFakeSessionWith(t *testing.T, h *Handler, f *fakePG, workload string, sm *pgproto3.StartupMessage) (*fakeSession, *pgproto3.ErrorResponse) {
	t.Helper()
	srv := l7test.Server(t, l7test.Config(t, fakePolicy(f.addr())), l7test.NewRecorder())
	s := l7test.Session(t, srv, workload, "db", f.addr())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	if err := s.Open(ctx); err != nil {
		t.Fatal(err)
	}
	agent, conn := l7test.TCPPair(t)
	fs := &fakeSession{agent: agent, fe: pgproto3.NewFrontend(agent, agent), done: make(chan error, 1)}
	go func() {
		_, err := h.Serve(ctx, conn, s)
		conn.Close()
		fs.done <- err
	}()
	agent.SetDeadline(time.Now().Add(20 * time.Second))
	fs.fe.Send(sm)
	if err := fs.fe.Flush(); err != nil {
		t.Fatal(err)
	}
	for {
		msg, err := fs.fe.Receive()
		if err != nil {
			t.Fatalf("login: %v", err)
		}
		switch m := msg.(type) {
		case *pgproto3.NegotiateProtocolVersion:
			fs.negotiated = &pgproto3.NegotiateProtocolVersion{NewestMinorProtocol: m.NewestMinorProtocol, UnrecognizedOptions: append([]string(nil), m.UnrecognizedOptions...)}
		case *pgproto3.BackendKeyData:
			fs.key = &pgproto3.BackendKeyData{ProcessID: m.ProcessID, SecretKey: append([]byte(nil), m.SecretKey...)}
		case *pgproto3.ErrorResponse:
			e := *m
			return fs, &e
		case *pgproto3.ReadyForQuery:
			return fs, nil
		}
	}
}

// end says goodbye and waits for Serve.
func (fs *fakeSession) end(t *testing.T) error {
	t.Helper()
	fs.fe.Send(&pgproto3.Terminate{})
	fs.fe.Flush()
	select {
	case err := <-fs.done:
		return err
	case <-time.After(20 * time.Second):
		t.Fatal("Serve did not return")
		return nil
	}
}
