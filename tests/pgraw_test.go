package tests

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// rawResult is what a hand-driven extended-protocol client saw: the text
// of every DataRow value and every error, per case.
type rawResult struct {
	Cases map[string][]string `json:"cases"`
	Err   string              `json:"err,omitempty"`
}

// rawScenario drives the extended protocol the way no driver does, to check
// that masks never rely on a driver's habits: rows with no Describe, a
// portal's description arriving before another portal's rows, a statement
// re-parsed after it was described.
func rawScenario(addr string) (r rawResult) {
	r.Cases = map[string][]string{}
	cases := []struct {
		name string
		msgs []pgproto3.FrontendMessage
	}{
		{"no describe", []pgproto3.FrontendMessage{
			&pgproto3.Parse{Query: "SELECT ssn FROM users WHERE id = 1"},
			&pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{}}},
		{"other portal described first", []pgproto3.FrontendMessage{
			&pgproto3.Parse{Name: "s1", Query: "SELECT id, ssn FROM users WHERE id = 1"},
			&pgproto3.Parse{Name: "s2", Query: "SELECT ssn, id FROM users WHERE id = 2"},
			&pgproto3.Describe{ObjectType: 'S', Name: "s2"},
			&pgproto3.Bind{DestinationPortal: "p1", PreparedStatement: "s1"},
			&pgproto3.Bind{DestinationPortal: "p2", PreparedStatement: "s2"},
			&pgproto3.Describe{ObjectType: 'P', Name: "p2"},
			&pgproto3.Execute{Portal: "p1"}, &pgproto3.Execute{Portal: "p2"}, &pgproto3.Sync{}}},
		{"re-parsed after describe", []pgproto3.FrontendMessage{
			&pgproto3.Parse{Name: "s3", Query: "SELECT id, email FROM users WHERE id = 1"},
			&pgproto3.Describe{ObjectType: 'S', Name: "s3"}, &pgproto3.Sync{},
			&pgproto3.Close{ObjectType: 'S', Name: "s3"},
			&pgproto3.Parse{Name: "s3", Query: "SELECT id, ssn FROM users WHERE id = 1"},
			&pgproto3.Bind{PreparedStatement: "s3"}, &pgproto3.Execute{}, &pgproto3.Sync{}}},
		{"portal keeps what it was bound to", []pgproto3.FrontendMessage{
			&pgproto3.Parse{Query: "DROP TABLE t"},
			&pgproto3.Bind{DestinationPortal: "p1"},
			&pgproto3.Parse{Query: "SELECT 1"},
			&pgproto3.Execute{Portal: "p1"}, &pgproto3.Sync{}}},
		{"described portal", []pgproto3.FrontendMessage{
			&pgproto3.Parse{Query: "SELECT ssn, id FROM users WHERE id = 3"},
			&pgproto3.Bind{}, &pgproto3.Describe{ObjectType: 'P'}, &pgproto3.Execute{}, &pgproto3.Sync{}}},
	}
	for _, c := range cases {
		seen, err := rawSession(addr, c.msgs)
		if err != nil {
			seen = append(seen, "error: "+err.Error())
		}
		r.Cases[c.name] = seen
	}
	return r
}

// rawSession logs in, sends msgs, and collects DataRow values and errors
// up to the last ReadyForQuery or the end of the connection.
func rawSession(addr string, msgs []pgproto3.FrontendMessage) ([]string, error) {
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	fe := pgproto3.NewFrontend(conn, conn)
	fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber, Parameters: map[string]string{"user": "agent", "database": "app"}})
	if err := fe.Flush(); err != nil {
		return nil, err
	}
	if err := readUntilReady(fe, nil); err != nil {
		return nil, fmt.Errorf("login: %w", err)
	}
	syncs := 0
	for _, m := range msgs {
		fe.Send(m)
		if _, ok := m.(*pgproto3.Sync); ok {
			syncs++
		}
	}
	if err := fe.Flush(); err != nil {
		return nil, err
	}
	var seen []string
	for range syncs {
		if err := readUntilReady(fe, &seen); err != nil {
			return seen, nil // the session ended: what it sent is in seen
		}
	}
	return seen, nil
}

func readUntilReady(fe *pgproto3.Frontend, seen *[]string) error {
	for {
		msg, err := fe.Receive()
		if err != nil {
			return err
		}
		switch m := msg.(type) {
		case *pgproto3.DataRow:
			if seen != nil {
				var vals []string
				for _, v := range m.Values {
					vals = append(vals, string(v))
				}
				*seen = append(*seen, strings.Join(vals, "|"))
			}
		case *pgproto3.ErrorResponse:
			if seen != nil {
				*seen = append(*seen, m.Severity+" "+m.Code+" "+m.Message)
			}
		case *pgproto3.ReadyForQuery:
			return nil
		}
	}
}

// reloadResult is what one session saw of the same query before and after
// its workload's rule changed.
type reloadResult struct {
	Before, After []string
	Err           string `json:"err,omitempty"`
}

// reloadScenario runs a query, says so in DIR/ready, waits for DIR/go
// (the test reloads the daemon meanwhile) and runs it again on the same
// connection.
func reloadScenario(addr, dir string) (r reloadResult) {
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		r.Err = err.Error()
		return r
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(60 * time.Second))
	fe := pgproto3.NewFrontend(conn, conn)
	fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersionNumber, Parameters: map[string]string{"user": "agent", "database": "app"}})
	if err := fe.Flush(); err != nil {
		r.Err = err.Error()
		return r
	}
	if err := readUntilReady(fe, nil); err != nil {
		r.Err = "login: " + err.Error()
		return r
	}
	query := func(seen *[]string) error {
		fe.Send(&pgproto3.Query{String: "SELECT ssn FROM users WHERE id = 1"})
		if err := fe.Flush(); err != nil {
			return err
		}
		return readUntilReady(fe, seen)
	}
	if err := query(&r.Before); err != nil {
		r.Err = "before: " + err.Error()
		return r
	}
	os.WriteFile(filepath.Join(dir, "ready"), nil, 0o644)
	for i := 0; ; i++ {
		if _, err := os.Stat(filepath.Join(dir, "go")); err == nil {
			break
		}
		if i > 3000 {
			r.Err = "no go"
			return r
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := query(&r.After); err != nil {
		r.Err = "after: " + err.Error()
	}
	return r
}
