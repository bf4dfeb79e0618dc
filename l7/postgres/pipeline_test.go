package postgres

import (
	"bytes"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// TestPipelineDenialOrder: a denied Execute in a pipeline is replaced in
// place, and the agent gets every response in the order PostgreSQL sends
// it: the ParseComplete and BindComplete swallowed are loopgate's own, not
// those of the statements before the denied one (in this batch or in an
// earlier one still in flight). The test plays the server and answers as
// PostgreSQL does; on the event loop and in the goroutine relay.
func TestPipelineDenialOrder(t *testing.T) {
	allowed := func(q string) []pgproto3.FrontendMessage {
		return []pgproto3.FrontendMessage{&pgproto3.Parse{Query: q}, &pgproto3.Bind{}, &pgproto3.Execute{}}
	}
	denied := allowed("DROP TABLE t")
	sync := []pgproto3.FrontendMessage{&pgproto3.Sync{}}
	cat := func(parts ...[]pgproto3.FrontendMessage) (all []pgproto3.FrontendMessage) {
		for _, p := range parts {
			all = append(all, p...)
		}
		return all
	}
	// Server answers: '1' ParseComplete, '2' BindComplete, 'D' a row,
	// 'C' CommandComplete, 'n' NoData, 'E' the denial's error, 'Z'.
	tests := []struct {
		name   string
		agent  []pgproto3.FrontendMessage
		server string // what the server receives, by type
		answer string // what the server sends back
		want   string // what the agent must get
	}{
		{"allowed then denied",
			cat(allowed("SELECT 1"), denied, sync),
			"PBEPBPBES", "12DC1212EZ", "12DC12EZ"},
		{"earlier batch in flight",
			cat(allowed("SELECT 1"), sync, denied, sync),
			"PBESPBPBES", "12DCZ1212EZ", "12DCZ12EZ"},
		{"described portal before the denial",
			cat(allowed("SELECT 1"), denied[:2], []pgproto3.FrontendMessage{&pgproto3.Describe{ObjectType: 'P'}}, denied[2:], sync),
			"PBEPBDPBES", "12DC12n12EZ", "12DC12nEZ"},
		{"denied first",
			cat(denied, allowed("SELECT 1"), sync),
			"PBPBES", "1212EZ", "12EZ"},
		{"denial skipped after an earlier error",
			cat(allowed("SELECT 1/0"), denied, sync, allowed("SELECT 1"), sync),
			"PBEPBPBESPBES", "12EZ12DCZ", "12EZ12DCZ"},
	}
	for _, onLoop := range []bool{true, false} {
		for _, tt := range tests {
			name := tt.name + " (goroutines)"
			if onLoop {
				name = tt.name + " (event loop)"
			}
			t.Run(name, func(t *testing.T) {
				lr := startRelayFor(t, nil, onLoop, nil)
				var out []byte
				for _, m := range tt.agent {
					out = append(out, msg(t, m)...)
				}
				lr.agent.Write(out)
				var got []byte
				for len(got) < len(tt.server) {
					got = append(got, readMsg(t, lr.server)[0])
				}
				if string(got) != tt.server {
					t.Fatalf("server got %q, want %q", got, tt.server)
				}
				var ans []byte
				for _, typ := range []byte(tt.answer) {
					var m interface{ Encode([]byte) ([]byte, error) }
					switch typ {
					case '1':
						m = &pgproto3.ParseComplete{}
					case '2':
						m = &pgproto3.BindComplete{}
					case 'D':
						m = &pgproto3.DataRow{Values: [][]byte{[]byte("1")}}
					case 'C':
						m = &pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")}
					case 'n':
						m = &pgproto3.NoData{}
					case 'E':
						m = &pgproto3.ErrorResponse{Severity: "ERROR", Code: "42501", Message: "denied"}
					case 'Z':
						m = &pgproto3.ReadyForQuery{TxStatus: 'I'}
					}
					ans = append(ans, msg(t, m)...)
				}
				lr.server.Write(ans)
				var seen []byte
				for len(seen) < len(tt.want) {
					seen = append(seen, readMsg(t, lr.agent)[0])
				}
				if !bytes.Equal(seen, []byte(tt.want)) {
					t.Errorf("agent got %q, want %q", seen, tt.want)
				}
				lr.agent.Write(msg(t, &pgproto3.Terminate{}))
				if err := lr.wait(t, 10*time.Second); err != nil {
					t.Fatal(err)
				}
				if len(lr.r.drop) != 0 {
					t.Errorf("left waiting to swallow %v", lr.r.drop)
				}
			})
		}
	}
}
