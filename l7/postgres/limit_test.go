package postgres

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// writeBig writes a message of type typ whose body is head, then size
// bytes of "SELECT 1;", then a NUL and tail, in chunks from one buffer.
func writeBig(c net.Conn, typ byte, head string, size int, tail []byte) error {
	var hdr [5]byte
	hdr[0] = typ
	binary.BigEndian.PutUint32(hdr[1:], uint32(4+len(head)+size+1+len(tail)))
	if _, err := c.Write(append(hdr[:], head...)); err != nil {
		return err
	}
	chunk := []byte(strings.Repeat("SELECT 1;", 64<<10/9))
	for size > 0 {
		k := min(size, len(chunk))
		if _, err := c.Write(chunk[:k]); err != nil {
			return err
		}
		size -= k
	}
	_, err := c.Write(append([]byte{0}, tail...))
	return err
}

// TestStatementOverLimit: a Query or Parse over max_statement_bytes (1 MiB
// by default) is denied with SQLSTATE 54000, never held whole, and the
// session goes on; on the event loop and in the goroutine relay.
func TestStatementOverLimit(t *testing.T) {
	for _, onLoop := range []bool{true, false} {
		t.Run(fmt.Sprint("event_loop=", onLoop), func(t *testing.T) {
			lr := startRelayFor(t, nil, onLoop, nil)
			const size = 16 << 20
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			errc := make(chan error, 1)
			go func() { errc <- writeBig(lr.agent, 'Q', "", size, nil) }()
			got := readMsg(t, lr.server)
			var q pgproto3.Query
			if got[0] != 'Q' || q.Decode(got[5:]) != nil {
				t.Fatalf("server got %q", got[:min(len(got), 64)])
			}
			if !strings.HasPrefix(q.String, "DO ") || !strings.Contains(q.String, "ERRCODE = '54000'") ||
				!strings.Contains(q.String, fmt.Sprintf("loopgate: statement of %d bytes is over the limit of 1048576 bytes (max_statement_bytes)", size+1)) {
				t.Errorf("server got %.300q", q.String)
			}
			if err := <-errc; err != nil {
				t.Fatal(err)
			}
			runtime.ReadMemStats(&after)
			if grew := after.TotalAlloc - before.TotalAlloc; grew > 4<<20 {
				t.Errorf("relaying a %d MiB statement allocated %d MiB", size>>20, grew>>20)
			}

			// A Parse in a pipeline: replaced in place, the rest skipped
			// to Sync, as after any error.
			go func() {
				err := writeBig(lr.agent, 'P', "big\x00", 2<<20, []byte{0, 0})
				if err == nil {
					_, err = lr.agent.Write(append(append(msg(t, &pgproto3.Bind{PreparedStatement: "big"}),
						msg(t, &pgproto3.Execute{})...), msg(t, &pgproto3.Sync{})...))
				}
				errc <- err
			}()
			var p pgproto3.Parse
			if got := readMsg(t, lr.server); got[0] != 'P' || p.Decode(got[5:]) != nil || !strings.Contains(p.Query, "max_statement_bytes") {
				t.Fatalf("server got %.200q, want the raising Parse", got)
			}
			for _, want := range []byte{'B', 'E', 'S'} {
				if got := readMsg(t, lr.server); got[0] != want {
					t.Fatalf("server got %q, want %q", got[0], want)
				}
			}
			if err := <-errc; err != nil {
				t.Fatal(err)
			}

			// The session goes on.
			lr.agent.Write(msg(t, &pgproto3.Query{String: "SELECT 1"}))
			if got := readMsg(t, lr.server); got[0] != 'Q' || !strings.Contains(string(got), "SELECT 1") {
				t.Fatalf("server got %q", got)
			}
			lr.agent.Write(msg(t, &pgproto3.Terminate{}))
			lr.wait(t, 10*time.Second)
		})
	}
}

// TestRefuse: a session past its budget is told why as PostgreSQL tells a
// client it has too many: after the startup packet (an SSLRequest answered
// 'N'), FATAL 53300.
func TestRefuse(t *testing.T) {
	t.Parallel()
	agent, conn := net.Pipe()
	defer agent.Close()
	go func() {
		(&Handler{}).Refuse(conn, errors.New("loopgate: workload w has 2 sessions (max_sessions)"))
		conn.Close()
	}()
	fe := pgproto3.NewFrontend(agent, agent)
	agent.SetDeadline(time.Now().Add(5 * time.Second))
	fe.Send(&pgproto3.SSLRequest{})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 1)
	if _, err := io.ReadFull(agent, b); err != nil || b[0] != 'N' {
		t.Fatalf("SSLRequest answered %q, %v", b, err)
	}
	fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber, Parameters: map[string]string{"user": "u"}})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	m, err := fe.Receive()
	e, ok := m.(*pgproto3.ErrorResponse)
	if err != nil || !ok || e.Severity != "FATAL" || e.Code != "53300" || e.Message != "loopgate: workload w has 2 sessions (max_sessions)" {
		t.Fatalf("agent got %#v, %v", m, err)
	}
}
