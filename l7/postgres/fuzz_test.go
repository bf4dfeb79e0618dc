package postgres

import (
	"bytes"
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/loopgate/loopgate/l7"
	"github.com/loopgate/loopgate/l7/l7test"
)

const fuzzPolicy = `targets:
  - {name: db, protocol: postgres, address: 127.0.0.1:5432}
workloads:
  - {name: w, cgroup: lg/w}
rules:
  - {id: r, workloads: [w], targets: [db], allow: [read, write, session, transaction], deny: [drop]}
`

// sinkConn is a net.Conn that swallows writes and reads EOF: the far end of
// a relay under fuzzing, not a stand-in for PostgreSQL.
type sinkConn struct{ net.Conn }

func (sinkConn) Write(p []byte) (int, error)      { return len(p), nil }
func (sinkConn) Read([]byte) (int, error)         { return 0, io.EOF }
func (sinkConn) Close() error                     { return nil }
func (sinkConn) SetDeadline(time.Time) error      { return nil }
func (sinkConn) SetReadDeadline(time.Time) error  { return nil }
func (sinkConn) SetWriteDeadline(time.Time) error { return nil }
func (sinkConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (sinkConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }

func encode(t testing.TB, msgs ...pgproto3.FrontendMessage) []byte {
	var out []byte
	for _, m := range msgs {
		b, err := m.Encode(nil)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b...)
	}
	return out
}

// FuzzAgentStream feeds arbitrary bytes to the agent side of a session
// after login: it must end with an error or EOF, never panic or hang.
func FuzzAgentStream(f *testing.F) {
	f.Add(encode(f, &pgproto3.Query{String: "SELECT 1"}, &pgproto3.Terminate{}))
	f.Add(encode(f, &pgproto3.Query{String: "DROP TABLE t"}))
	f.Add(encode(f, &pgproto3.Parse{Name: "s", Query: "SELECT $1"}, &pgproto3.Bind{PreparedStatement: "s", Parameters: [][]byte{[]byte("1")}},
		&pgproto3.Describe{ObjectType: 'P'}, &pgproto3.Execute{}, &pgproto3.Sync{}))
	f.Add(encode(f, &pgproto3.Parse{Query: "DROP TABLE t"}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Flush{}, &pgproto3.Sync{}))
	f.Add(encode(f, &pgproto3.CopyData{Data: []byte("1\tx\n")}, &pgproto3.CopyDone{}))
	f.Add(encode(f, &pgproto3.FunctionCall{Function: 1}))
	f.Add([]byte{'Q', 0, 0, 0, 3})
	f.Add([]byte{'P', 0xff, 0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		rec := l7test.NewRecorder()
		srv := l7test.Server(t, l7test.Config(t, fuzzPolicy), rec)
		s := l7test.Session(t, srv, "w", "db", "127.0.0.1:5432")
		var out bytes.Buffer
		be := pgproto3.NewBackend(nil, &out)
		ar := newAgentReader(bytes.NewReader(data))
		ar.max = 1 << 20
		h := &Handler{}
		r := newRelay(context.Background(), h, s, be, ar, &l7.CountingConn{Conn: sinkConn{}}, &l7.CountingConn{Conn: sinkConn{}})
		done := make(chan error, 1)
		go func() { done <- r.fromAgent() }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("fromAgent did not return on a finite stream")
		}
	})
}

// FuzzStartup feeds arbitrary bytes as the first messages of a connection.
func FuzzStartup(f *testing.F) {
	f.Add(encode(f, &pgproto3.SSLRequest{}, &pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber, Parameters: map[string]string{"user": "a"}}))
	f.Add(encode(f, &pgproto3.GSSEncRequest{}, &pgproto3.SSLRequest{}, &pgproto3.SSLRequest{}))
	f.Add(encode(f, &pgproto3.CancelRequest{ProcessID: 1, SecretKey: []byte{1, 2, 3, 4}}))
	f.Add([]byte{0, 0, 0, 8, 4, 210, 22, 47})
	f.Add(encode(f, &pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion32, Parameters: map[string]string{"user": "a", "_pq_.x": "1"}}))
	f.Add(encode(f, &pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30, Parameters: map[string]string{"user": "a", "statement_timeout": "1234", "Role": "postgres"}}))
	f.Fuzz(func(t *testing.T, data []byte) {
		st, err := readStartup(newAgentReader(bytes.NewReader(data)), sinkConn{}, nil)
		if (st == nil) == (err == nil) {
			t.Fatalf("startup %+v, err %v: want exactly one", st, err)
		}
	})
}
