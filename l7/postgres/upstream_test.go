package postgres

import (
	"context"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// slowWrites makes every write of the login outlast pgconn's slow-write
// timer (15 ms), which starts pgconn's background reader: a read of the
// socket on a goroutine of pgconn's.
type slowWrites struct{ net.Conn }

func (c slowWrites) Write(p []byte) (int, error) {
	time.Sleep(30 * time.Millisecond)
	return c.Conn.Write(p)
}

// A hijacked server connection is loopgate's alone: pgconn's background
// reader must not be left reading it, or the server's answer to the
// agent's first statement goes to pgconn and the agent waits forever (the
// goroutine relay, used for TLS, read the socket itself and hung).
func TestDialHijackLeavesNoReaderBehind(t *testing.T) {
	f := startFakePG(t)
	host, port, err := net.SplitHostPort(f.addr())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i := range 5 {
		cfg, err := pgconn.ParseConfig("sslmode=disable")
		if err != nil {
			t.Fatal(err)
		}
		p, _ := strconv.ParseUint(port, 10, 16)
		cfg.Host, cfg.Port, cfg.User, cfg.Database = host, uint16(p), "app", "app"
		cfg.DialFunc = func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return slowWrites{c}, nil
		}
		hj, err := dialHijack(ctx, cfg, f.addr())
		if err != nil {
			t.Fatal(err)
		}
		// The server answers only after loopgate has the connection.
		hj.Conn.SetDeadline(time.Now().Add(5 * time.Second))
		fe := pgproto3.NewFrontend(hj.Conn, hj.Conn)
		fe.Send(&pgproto3.Query{String: "SELECT 1"})
		if err := fe.Flush(); err != nil {
			t.Fatal(err)
		}
		for {
			msg, err := fe.Receive()
			if err != nil {
				t.Fatalf("login %d: the answer to the first statement after login did not reach loopgate: %v", i, err)
			}
			if _, ok := msg.(*pgproto3.ReadyForQuery); ok {
				break
			}
		}
		hj.Conn.Close()
	}
}
