package tests

import (
	"context"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgproto3"
	_ "github.com/lib/pq"
)

// compatResult is what real clients saw of the wire as they sent it.
type compatResult struct {
	Settings   string `json:"settings"`   // the startup parameters asked for, as the session has them
	Next       string `json:"next"`       // the same settings in the next session without them
	Again      string `json:"again"`      // and in the next with them (a pooled connection)
	ReadWrite  string `json:"read_write"` // target_session_attrs=read-write on a read-only login
	Unknown    string `json:"unknown"`    // pgx with DOESNOTEXIST=foo
	UnknownPQ  string `json:"unknown_pq"` // lib/pq with DOESNOTEXIST=foo
	Role       string `json:"role"`       // role=postgres
	Options    string `json:"options"`    // options=-c statement_timeout=2345 (PGOPTIONS)
	OptRole    string `json:"opt_role"`   // options=-c role=postgres
	Proto32    string `json:"proto32"`    // pgx with max_protocol_version=3.2
	Negotiate  string `json:"negotiate"`  // the NegotiateProtocolVersion for a raw 3.2 startup with an option
	PID        string `json:"pid"`        // pgx's PID() against pg_backend_pid() and pg_stat_activity
	Terminated string `json:"terminated"` // what the session saw after pg_terminate_backend(its PID)
	Pipeline   string `json:"pipeline"`   // message types of a pipeline with a denied Execute
	Err        string `json:"err,omitempty"`
}

func compatScenario(dsn, addr string) (r compatResult) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if addr == "pipeline" { // compatScenario(ADDR, "pipeline"): as a workload that denies DROP
		r.Pipeline = pipelineTypes(dsn)
		return r
	}
	errText := func(err error) string {
		if err == nil {
			return "ok"
		}
		return err.Error()
	}
	c, err := pgx.Connect(ctx, dsn+"&default_transaction_read_only=on&statement_timeout=1234&lock_timeout=4321")
	if err != nil {
		r.Err = err.Error()
		return r
	}
	var a, b, d string
	err = c.QueryRow(ctx, "SELECT current_setting('default_transaction_read_only'), current_setting('statement_timeout'), current_setting('lock_timeout')").Scan(&a, &b, &d)
	r.Settings = errText(err)
	if err == nil {
		r.Settings = a + " " + b + " " + d
	}
	c.Close(ctx) // between transactions: the server connection is kept
	// A session without them must not get them from the pool; one with
	// them gets them back after DISCARD ALL.
	settings := func(dsn string) string {
		c, err := pgx.Connect(ctx, dsn)
		if err != nil {
			return err.Error()
		}
		defer c.Close(ctx)
		var a, b, d string
		if err := c.QueryRow(ctx, "SELECT current_setting('default_transaction_read_only'), current_setting('statement_timeout'), current_setting('lock_timeout')").Scan(&a, &b, &d); err != nil {
			return err.Error()
		}
		return a + " " + b + " " + d
	}
	r.Next = settings(dsn)
	r.Again = settings(dsn + "&default_transaction_read_only=on&statement_timeout=1234&lock_timeout=4321")
	_, err = pgx.Connect(ctx, dsn+"&default_transaction_read_only=on&target_session_attrs=read-write")
	r.ReadWrite = errText(err)
	_, err = pgx.Connect(ctx, dsn+"&DOESNOTEXIST=foo")
	r.Unknown = errText(err)
	if db, err := sql.Open("postgres", dsn+"&DOESNOTEXIST=foo"); err == nil {
		r.UnknownPQ = errText(db.PingContext(ctx))
		db.Close()
	}
	_, err = pgx.Connect(ctx, dsn+"&role=postgres")
	r.Role = errText(err)
	if co, err := pgx.Connect(ctx, dsn+"&options="+strings.ReplaceAll(url.PathEscape("-c statement_timeout=2345 --lock-timeout=5432"), "=", "%3D")); err != nil {
		r.Options = err.Error()
	} else {
		var b, d string
		r.Options = errText(co.QueryRow(ctx, "SELECT current_setting('statement_timeout'), current_setting('lock_timeout')").Scan(&b, &d))
		if b != "" {
			r.Options = b + " " + d
		}
		co.Close(ctx)
	}
	_, err = pgx.Connect(ctx, dsn+"&options="+strings.ReplaceAll(url.PathEscape("-c role=postgres"), "=", "%3D"))
	r.OptRole = errText(err)

	c32, err := pgx.Connect(ctx, dsn+"&max_protocol_version=3.2")
	r.Proto32 = errText(err)
	if err == nil {
		var v string
		r.Proto32 = errText(c32.QueryRow(ctx, "SHOW server_version_num").Scan(&v))
		c32.Close(ctx)
	}
	r.Negotiate = negotiateMessage(addr)

	c1, err := pgx.Connect(ctx, dsn)
	if err != nil {
		r.Err = err.Error()
		return r
	}
	defer c1.Close(ctx)
	c2, err := pgx.Connect(ctx, dsn)
	if err != nil {
		r.Err = err.Error()
		return r
	}
	defer c2.Close(ctx)
	var pid uint32
	var n int
	err = c2.QueryRow(ctx, "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", int64(c1.PgConn().PID())).Scan(&n)
	if err2 := c1.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid); err2 != nil {
		err = err2
	}
	r.PID = fmt.Sprintf("pid=%v activity=%d %s", pid == c1.PgConn().PID(), n, errText(err))
	var ok bool
	if err := c2.QueryRow(ctx, "SELECT pg_terminate_backend($1)", int64(c1.PgConn().PID())).Scan(&ok); err != nil || !ok {
		r.Terminated = fmt.Sprintf("pg_terminate_backend: %v %v", ok, err)
		return r
	}
	_, err = c1.Exec(ctx, "SELECT 1")
	r.Terminated = errText(err)
	return r
}

// negotiateMessage sends a protocol 3.2 startup packet with an option to
// addr and returns the NegotiateProtocolVersion it got, in hex.
func negotiateMessage(addr string) string {
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return err.Error()
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	fe := pgproto3.NewFrontend(conn, conn)
	fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion32,
		Parameters: map[string]string{"user": "app", "database": "app", "_pq_.loopgate_test": "1"}})
	if err := fe.Flush(); err != nil {
		return err.Error()
	}
	msg, err := fe.Receive()
	if err != nil {
		return err.Error()
	}
	m, ok := msg.(*pgproto3.NegotiateProtocolVersion)
	if !ok {
		return fmt.Sprintf("got %T", msg)
	}
	b, _ := m.Encode(nil)
	return hex.EncodeToString(b)
}

// pipelineTypes sends P/B/D/E SELECT 1, P/B/D/E DROP TABLE t, S and returns
// the types of the messages that came back, up to ReadyForQuery.
func pipelineTypes(addr string) string {
	conn, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return err.Error()
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	fe := pgproto3.NewFrontend(conn, conn)
	fe.Send(&pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30, Parameters: map[string]string{"user": "app", "database": "app"}})
	if err := fe.Flush(); err != nil {
		return err.Error()
	}
	if err := readUntilReady(fe, nil); err != nil {
		return err.Error()
	}
	for _, q := range []string{"SELECT 1", "DROP TABLE t"} {
		fe.Send(&pgproto3.Parse{Query: q})
		fe.Send(&pgproto3.Bind{})
		fe.Send(&pgproto3.Describe{ObjectType: 'P'}) // rows under masks need it
		fe.Send(&pgproto3.Execute{})
	}
	fe.Send(&pgproto3.Sync{})
	if err := fe.Flush(); err != nil {
		return err.Error()
	}
	var types []byte
	for {
		msg, err := fe.Receive()
		if err != nil {
			return string(types) + " " + err.Error()
		}
		b, _ := msg.(interface{ Encode([]byte) ([]byte, error) }).Encode(nil)
		types = append(types, b[0])
		if _, ok := msg.(*pgproto3.ReadyForQuery); ok {
			return string(types)
		}
	}
}

// TestPostgresCompat: the wire as the client sent it. Startup parameters
// are forwarded or refused, never dropped; protocol 3.2 is negotiated
// down as PostgreSQL 15 does; the agent sees its backend's real PID; a
// pipeline with a denied Execute answers in the server's order.
func TestPostgresCompat(t *testing.T) {
	s := newPGSetup(t)
	addr := "127.0.0.1:" + s.port
	dsn := "postgres://agent@" + addr + "/app?sslmode=disable&connect_timeout=10"
	var r compatResult
	client(t, s.cfg, "admin", "", &r, "pgcompat", dsn, addr)
	if r.Err != "" {
		t.Fatal(r.Err)
	}
	t.Logf("%+v", r)
	if r.Settings != "on 1234ms 4321ms" {
		t.Errorf("settings %q, want on 1234ms 4321ms", r.Settings)
	}
	if r.Next != "off 0 0" || r.Again != "on 1234ms 4321ms" {
		t.Errorf("next sessions: without the parameters %q (want off 0 0), with them %q", r.Next, r.Again)
	}
	if !strings.Contains(r.ReadWrite, "read only") {
		t.Errorf("target_session_attrs=read-write on a read-only login: %q, want refused", r.ReadWrite)
	}
	if !strings.Contains(r.Unknown, "unrecognized configuration parameter") || !strings.Contains(r.UnknownPQ, "unrecognized configuration parameter") {
		t.Errorf("DOESNOTEXIST=foo: pgx %q, lib/pq %q", r.Unknown, r.UnknownPQ)
	}
	if !strings.Contains(r.Role, "FATAL") || !strings.Contains(r.Role, "change the role") {
		t.Errorf("role=postgres: %q, want FATAL", r.Role)
	}
	if r.Options != "2345ms 5432ms" {
		t.Errorf("options=-c statement_timeout=2345 --lock-timeout=5432: session has %q", r.Options)
	}
	if !strings.Contains(r.OptRole, "FATAL") || !strings.Contains(r.OptRole, "change the role") {
		t.Errorf("options=-c role=postgres: %q, want FATAL", r.OptRole)
	}
	if r.Proto32 != "ok" {
		t.Errorf("max_protocol_version=3.2: %s", r.Proto32)
	}
	if want := negotiateMessage(s.pg.Addr()); r.Negotiate != want {
		t.Errorf("NegotiateProtocolVersion %s, PostgreSQL sends %s", r.Negotiate, want)
	}
	if r.PID != "pid=true activity=1 ok" {
		t.Errorf("PID: %s", r.PID)
	}
	if !strings.Contains(r.Terminated, "terminating connection due to administrator command") {
		t.Errorf("after pg_terminate_backend: %q", r.Terminated)
	}
	var p compatResult
	client(t, s.cfg, "agent", "", &p, "pgcompat", addr, "pipeline")
	if p.Pipeline != "12TDC12nEZ" {
		t.Errorf("pipeline with a denied Execute: %q, PostgreSQL sends 12TDC12nEZ", p.Pipeline)
	}
}
