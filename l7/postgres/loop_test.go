package postgres

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/loopgate/loopgate/l7"
	"github.com/loopgate/loopgate/l7/l7test"
	"github.com/loopgate/loopgate/store/event"
)

// loopHandler's event loop serves every test relay, as a daemon's serves
// every session.
var loopHandler = &Handler{}

// loopRelay is a relay running on an event loop between two sockets the
// test drives: agent (the test is the agent) and server (the test is
// PostgreSQL). Messages here are protocol-valid; what is tested is the
// loop's plumbing, with real sockets.
type loopRelay struct {
	r      *relay
	rec    *l7test.Recorder
	agent  net.Conn
	server net.Conn
	done   chan error
	up     net.Conn // the server connection run gave back
}

// relayPanic is run's panic, caught by the test.
type relayPanic struct{ msg string }

func (p relayPanic) Error() string { return p.msg }

func startLoopRelay(t *testing.T, early []byte) *loopRelay {
	t.Helper()
	return startLoopRelayFor(t, early, nil)
}

// startLoopRelayFor is startLoopRelay, letting edit change the relay
// before it runs.
func startLoopRelayFor(t *testing.T, early []byte, edit func(*relay)) *loopRelay {
	t.Helper()
	return startRelayFor(t, early, true, edit)
}

// startRelayFor starts a relay on the event loop, or (onLoop false) as
// the goroutine relay TLS sessions use.
func startRelayFor(t *testing.T, early []byte, onLoop bool, edit func(*relay)) *loopRelay {
	t.Helper()
	return startRelayWith(t, l7test.NewRecorder(), early, onLoop, edit)
}

// startRelayWith is startRelayFor recording into rec.
func startRelayWith(t *testing.T, rec *l7test.Recorder, early []byte, onLoop bool, edit func(*relay)) *loopRelay {
	t.Helper()
	srv := l7test.Server(t, l7test.Config(t, fuzzPolicy), rec)
	s := l7test.Session(t, srv, "w", "db", "127.0.0.1:5432")
	agent, clientSide := l7test.TCPPair(t)
	upSide, server := l7test.TCPPair(t)
	h := loopHandler
	l := h.loops.pick()
	if l == nil {
		t.Fatal("no event loop")
	}
	ar := newAgentReader(clientSide)
	ar.max = maxMessageBody
	r := newRelay(context.Background(), h, s, pgproto3.NewBackend(nil, clientSide), ar,
		&l7.CountingConn{Conn: clientSide}, &l7.CountingConn{Conn: upSide})
	lr := &loopRelay{r: r, rec: rec, agent: agent, server: server, done: make(chan error, 1)}
	if edit != nil {
		edit(r)
	}
	go func() {
		defer func() {
			if v := recover(); v != nil {
				lr.done <- relayPanic{fmt.Sprint(v)}
			}
		}()
		var tr transport = &goTransport{r: r}
		if onLoop {
			tr = newLoopTransport(r, l, early)
		}
		up, err := r.run(tr)
		lr.up = up // before done: read after wait
		lr.done <- err
	}()
	return lr
}

// wait returns run's answer, failing after d.
func (lr *loopRelay) wait(t *testing.T, d time.Duration) error {
	t.Helper()
	select {
	case err := <-lr.done:
		return err
	case <-time.After(d):
		t.Fatal("the relay did not end")
		return nil
	}
}

func msg(t *testing.T, m interface{ Encode([]byte) ([]byte, error) }) []byte {
	t.Helper()
	b, err := m.Encode(nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// readMsg reads one whole message from c.
func readMsg(t *testing.T, c net.Conn) []byte {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	hdr := make([]byte, 5)
	if _, err := io.ReadFull(c, hdr); err != nil {
		t.Fatal(err)
	}
	body := make([]byte, binary.BigEndian.Uint32(hdr[1:])-4)
	if _, err := io.ReadFull(c, body); err != nil {
		t.Fatal(err)
	}
	return append(hdr, body...)
}

func dataRow(size int, fill byte) []byte {
	b, _ := (&pgproto3.DataRow{Values: [][]byte{bytes.Repeat([]byte{fill}, size)}}).Encode(nil)
	return b
}

// Rows stream through in order, a row bigger than the loop holds included,
// while the agent reads nothing for a while; the loop queues a bounded
// amount meanwhile.
func TestLoopStreamsAndBacksOff(t *testing.T) {
	lr := startLoopRelay(t, nil)
	lr.agent.Write(msg(t, &pgproto3.Query{String: "SELECT v FROM t"}))
	if got := readMsg(t, lr.server); got[0] != 'Q' {
		t.Fatalf("server got %q first", got[0])
	}
	var want bytes.Buffer
	want.Write(msg(t, &pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{{Name: []byte("v"), DataTypeOID: 25, DataTypeSize: -1, Format: 0}}}))
	for i := range 24 {
		want.Write(dataRow(1<<20, byte('a'+i)))
	}
	want.Write(dataRow(3*loopHold, 'z')) // streamed off the loop
	for range 100 {
		want.Write(dataRow(100, 'y'))
	}
	want.Write(msg(t, &pgproto3.CommandComplete{CommandTag: []byte("SELECT 125")}))
	want.Write(msg(t, &pgproto3.ReadyForQuery{TxStatus: 'I'}))
	sent := make(chan error, 1)
	go func() {
		_, err := lr.server.Write(want.Bytes())
		sent <- err
	}()
	time.Sleep(300 * time.Millisecond)
	lr.r.stopMu.Lock()
	lp := lr.r.t.(*loopTransport).s
	lr.r.stopMu.Unlock()
	if n := lp.client.pendingLen(); n > outHigh+2*loopHold {
		t.Errorf("%d bytes queued for an agent that reads nothing (high water %d)", n, outHigh)
	}
	got := make([]byte, want.Len())
	lr.agent.SetReadDeadline(time.Now().Add(20 * time.Second))
	if _, err := io.ReadFull(lr.agent, got); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want.Bytes()) {
		t.Fatal("the agent got different bytes than the server sent")
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	lr.agent.Write(msg(t, &pgproto3.Terminate{}))
	if err := lr.wait(t, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if !lr.r.terminated || !lr.r.cleanEnd || !lr.r.targetIdle {
		t.Errorf("terminated %v cleanEnd %v target idle %v: want a clean end", lr.r.terminated, lr.r.cleanEnd, lr.r.targetIdle)
	}
	// The server socket is Go's again, still connected.
	if _, err := lr.up.Write([]byte("X\x00\x00\x00\x04")); err != nil {
		t.Fatal(err)
	}
	if got := readMsg(t, lr.server); got[0] != 'X' {
		t.Errorf("server got %q through the returned socket", got[0])
	}
	if got, want := lr.r.client.Out.Load(), int64(want.Len()); got != want {
		t.Errorf("counted %d bytes to the agent, sent %d", got, want)
	}
}

// A protocol violation from the agent, while the server side is off the
// loop waiting for an agent that reads nothing, still ends the session:
// the agent side's error to the agent never waits for room.
func TestLoopViolationWhileBackedUp(t *testing.T) {
	lr := startLoopRelay(t, nil)
	lr.agent.Write(msg(t, &pgproto3.Query{String: "SELECT v FROM t"}))
	readMsg(t, lr.server)
	go func() {
		for i := range 8 {
			if _, err := lr.server.Write(dataRow(3*loopHold, byte('a'+i))); err != nil {
				return
			}
		}
	}()
	time.Sleep(300 * time.Millisecond)
	lr.agent.Write([]byte{'?', 0, 0, 0, 4})
	// The agent reads again only now: the session must have ended on its
	// own (no deadlock), and the agent gets told why, last.
	var all bytes.Buffer
	read := make(chan struct{})
	go func() {
		lr.agent.SetReadDeadline(time.Now().Add(20 * time.Second))
		io.Copy(&all, lr.agent)
		close(read)
	}()
	err := lr.wait(t, 15*time.Second)
	if err == nil {
		t.Fatal("no error for an unknown message type")
	}
	lr.up.Close()
	<-read
	if !bytes.Contains(all.Bytes(), []byte("protocol violation")) {
		t.Errorf("the agent was not told (%d bytes read)", all.Len())
	}
}

// Messages the agent sent right behind its startup are handled first.
func TestLoopEarlyMessages(t *testing.T) {
	early := append(msg(t, &pgproto3.Query{String: "SELECT 1"}), msg(t, &pgproto3.Query{String: "SELECT 2"})...)
	lr := startLoopRelay(t, early)
	for _, want := range []string{"SELECT 1", "SELECT 2"} {
		got := readMsg(t, lr.server)
		var q pgproto3.Query
		if err := q.Decode(got[5:]); err != nil || q.String != want {
			t.Errorf("server got %q (%v), want %q", q.String, err, want)
		}
	}
	lr.agent.Close()
	if err := lr.wait(t, 10*time.Second); err != nil {
		t.Errorf("agent hung up: %v, want an ordinary end", err)
	}
}

// A denied statement is answered without the server seeing it, and the
// session goes on.
func TestLoopDenial(t *testing.T) {
	lr := startLoopRelay(t, nil)
	lr.agent.Write(msg(t, &pgproto3.Query{String: "DROP TABLE t"}))
	got := readMsg(t, lr.server)
	var q pgproto3.Query
	if err := q.Decode(got[5:]); err != nil || bytes.Contains([]byte(q.String), []byte("DROP")) {
		t.Fatalf("server got %q", q.String)
	}
	lr.server.Write(msg(t, &pgproto3.ErrorResponse{Severity: "ERROR", Code: "42501", Message: "loopgate: drop denied"}))
	lr.server.Write(msg(t, &pgproto3.ReadyForQuery{TxStatus: 'I'}))
	if e := readMsg(t, lr.agent); e[0] != 'E' {
		t.Fatalf("agent got %q, want an error", e[0])
	}
	if z := readMsg(t, lr.agent); z[0] != 'Z' {
		t.Fatalf("agent got %q, want ReadyForQuery", z[0])
	}
	lr.agent.Write(msg(t, &pgproto3.Terminate{}))
	if err := lr.wait(t, 10*time.Second); err != nil {
		t.Fatal(err)
	}
}

// FuzzLoopAgentStream feeds arbitrary bytes from an agent to a relay on the
// event loop (its own framing): the session must end, never panic or hang.
func FuzzLoopAgentStream(f *testing.F) {
	f.Add(encode(f, &pgproto3.Query{String: "SELECT 1"}, &pgproto3.Terminate{}))
	f.Add(encode(f, &pgproto3.Query{String: "DROP TABLE t"}))
	f.Add(encode(f, &pgproto3.Parse{Name: "s", Query: "SELECT $1"}, &pgproto3.Bind{PreparedStatement: "s", Parameters: [][]byte{[]byte("1")}},
		&pgproto3.Describe{ObjectType: 'P'}, &pgproto3.Execute{}, &pgproto3.Sync{}))
	f.Add(encode(f, &pgproto3.CopyData{Data: []byte("1\tx\n")}, &pgproto3.CopyDone{}))
	f.Add([]byte{'Q', 0, 0, 0, 3})
	f.Add([]byte{'P', 0xff, 0xff, 0xff, 0xff})
	f.Add([]byte{'d', 0, 0x10, 0, 0, 'x'})
	f.Fuzz(func(t *testing.T, data []byte) {
		lr := startLoopRelay(t, nil)
		go io.Copy(io.Discard, lr.server)
		go io.Copy(io.Discard, lr.agent)
		lr.agent.Write(data)
		lr.agent.(*net.TCPConn).CloseWrite()
		lr.wait(t, 10*time.Second)
	})
}

// A statement that takes long to classify does not hold up other sessions
// on the loop: its side leaves the loop while it is parsed.
func TestLoopLongParseLeavesLoop(t *testing.T) {
	a := startLoopRelay(t, nil)
	b := startLoopRelay(t, nil)
	long := "SELECT " + strings.Repeat("a+1, ", 50000) + "1 FROM t" // parsed in ~0.5 s here
	start := time.Now()
	forwarded := make(chan time.Duration, 1)
	go func() {
		readMsg(t, a.server)
		forwarded <- time.Since(start)
	}()
	a.agent.Write(msg(t, &pgproto3.Query{String: long}))
	time.Sleep(20 * time.Millisecond) // a's statement is being parsed
	rtStart := time.Now()
	b.agent.Write(msg(t, &pgproto3.Query{String: "SELECT 1"}))
	readMsg(t, b.server)
	b.server.Write(msg(t, &pgproto3.ReadyForQuery{TxStatus: 'I'}))
	readMsg(t, b.agent)
	rt := time.Since(rtStart)
	slow := <-forwarded
	if rt > slow/2 {
		t.Errorf("a round trip took %v while another session's statement took %v to classify: it waited", rt, slow)
	}
	t.Logf("round trip %v during a %v classification", rt, slow)
}

// Close stops the loops and gives their descriptors back.
func TestLoopClose(t *testing.T) {
	h := &Handler{}
	if h.loops.pick() == nil {
		t.Fatal("no event loop")
	}
	before := countFDs(t)
	h.Close()
	if after := countFDs(t); after >= before {
		t.Errorf("%d descriptors open after Close, %d before", after, before)
	}
	if h.loops.pick() != nil {
		t.Error("a loop handed out after Close")
	}
}

func countFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// A session ending closes its own descriptors only, once: another
// goroutine opening and using files meanwhile never finds one closed.
func TestLoopClosesOnlyItsOwn(t *testing.T) {
	stop := make(chan struct{})
	churnErr := make(chan error, 1)
	go func() {
		defer close(churnErr)
		for {
			select {
			case <-stop:
				return
			default:
			}
			r, w, err := os.Pipe()
			if err != nil {
				churnErr <- err
				return
			}
			_, err = w.Write([]byte{1})
			if err == nil {
				_, err = r.Read(make([]byte, 1))
			}
			r.Close()
			w.Close()
			if err != nil {
				churnErr <- err
				return
			}
		}
	}()
	for range 300 {
		lr := startLoopRelay(t, nil)
		lr.agent.Write(msg(t, &pgproto3.Terminate{}))
		if err := lr.wait(t, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		lr.up.Close()
	}
	close(stop)
	if err := <-churnErr; err != nil {
		t.Fatalf("a file of another goroutine was closed under it: %v", err)
	}
}

// A panic in one session's handler ends that session, as a panic in its
// own goroutine would, and the loop goes on serving the others.
func TestLoopPanicStaysInSession(t *testing.T) {
	broken := startLoopRelayFor(t, nil, func(r *relay) { r.s = nil }) // its first decision dereferences nil
	broken.agent.Write(msg(t, &pgproto3.Query{String: "SELECT 1"}))
	err := broken.wait(t, 10*time.Second)
	var p relayPanic
	if !errors.As(err, &p) || !strings.Contains(p.msg, "nil pointer") || !strings.Contains(p.msg, "agentMessage") {
		t.Fatalf("relay ended with %v, want the handler's panic with its stack", err)
	}
	lr := startLoopRelay(t, nil)
	lr.agent.Write(msg(t, &pgproto3.Query{String: "SELECT 1"}))
	if got := readMsg(t, lr.server); got[0] != 'Q' {
		t.Fatalf("server got %q", got[0])
	}
}

// A session ended from outside (shutdown, revocation) is told why, between
// two whole messages, on the event loop and in the goroutine relay that
// TLS sessions use.
func TestStoppedSessionToldWhy(t *testing.T) {
	for _, onLoop := range []bool{true, false} {
		t.Run(fmt.Sprint("event_loop=", onLoop), func(t *testing.T) {
			ctx, cancel := context.WithCancelCause(context.Background())
			lr := startRelayFor(t, nil, onLoop, func(r *relay) { r.ctx = ctx })
			// A whole message passes first, so the stop comes between two.
			lr.server.Write(msg(t, &pgproto3.NoticeResponse{Severity: "NOTICE", Code: "00000", Message: "hello"}))
			if got := readMsg(t, lr.agent); got[0] != 'N' {
				t.Fatalf("agent got %q first, want the notice", got[0])
			}
			cancel(errors.New("daemon shutting down"))
			lr.r.stop()
			var e pgproto3.ErrorResponse
			got := readMsg(t, lr.agent)
			if got[0] != 'E' || e.Decode(got[5:]) != nil {
				t.Fatalf("agent got %q, want an ErrorResponse", got)
			}
			if e.Severity != "FATAL" || e.Code != codeAdminShutdown || e.Message != "loopgate: session ended: daemon shutting down" {
				t.Errorf("agent told %s %s %q", e.Severity, e.Code, e.Message)
			}
			lr.wait(t, 10*time.Second)
		})
	}
}

// An allowed statement's record is written before the statement is
// forwarded: on the loop when the store takes it at once, after leaving
// the loop when it would wait; a record that fails ends the session and
// nothing is forwarded.
func TestLoopRecordsBeforeForwarding(t *testing.T) {
	tests := []struct {
		name       string
		waits      bool
		fail       bool
		onLoop     int // records written on the loop
		declined   int // records the store declined to write at once
		statements int
	}{
		{name: "on the loop", onLoop: 3, statements: 3},
		{name: "store would wait", waits: true, declined: 3, statements: 3},
		{name: "record fails", fail: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := l7test.NewRecorder()
			rec.Waits, rec.FailAppend = tt.waits, tt.fail
			lr := startRelayWith(t, rec, nil, true, nil)
			for i := range max(tt.statements, 1) {
				text := fmt.Sprintf("SELECT %d", i)
				lr.agent.Write(msg(t, &pgproto3.Query{String: text}))
				if tt.fail {
					if e := readMsg(t, lr.agent); e[0] != 'E' {
						t.Fatalf("agent got %q, want a FATAL error", e[0])
					}
					lr.server.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
					if n, err := lr.server.Read(make([]byte, 64)); n > 0 || err == nil {
						t.Fatalf("server got %d bytes of a statement whose record failed", n)
					}
					if err := lr.wait(t, 10*time.Second); err == nil {
						t.Fatal("relay ended without error after a failed record")
					}
					return
				}
				readMsg(t, lr.server)
				var cmds []string
				for _, ev := range rec.EventsOf() {
					if ev.Kind == event.KindCommand {
						cmds = append(cmds, ev.Text)
					}
				}
				if len(cmds) != i+1 || cmds[i] != text {
					t.Fatalf("server got %q with statements %q recorded, want it recorded first", text, cmds)
				}
				lr.server.Write(msg(t, &pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")}))
				lr.server.Write(msg(t, &pgproto3.ReadyForQuery{TxStatus: 'I'}))
				readMsg(t, lr.agent)
				readMsg(t, lr.agent)
			}
			lr.agent.Write(msg(t, &pgproto3.Terminate{}))
			if err := lr.wait(t, 10*time.Second); err != nil {
				t.Fatal(err)
			}
			if got := rec.DeclinedCount(); got != tt.declined {
				t.Errorf("%d records declined by the store, want %d", got, tt.declined)
			}
			if got := rec.WriteCount() - tt.declined; got != tt.onLoop {
				t.Errorf("%d records written on the loop, want %d", got, tt.onLoop)
			}
		})
	}
}
