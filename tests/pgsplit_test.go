package tests

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/loopgate/loopgate/l7/l7test"
	"github.com/loopgate/loopgate/l7/postgres"
	"github.com/loopgate/loopgate/policy"
	"github.com/loopgate/loopgate/tests/lgtest"
)

// byteConn delivers every write one byte at a time, so the handler reads
// every message split at every byte boundary.
type byteConn struct{ net.Conn }

func (c byteConn) Write(p []byte) (int, error) {
	for i := range p {
		if _, err := c.Conn.Write(p[i : i+1]); err != nil {
			return i, err
		}
	}
	return len(p), nil
}

// TestPostgresSplitMessages runs the handler in process (no kernel needed)
// between a real pgx client writing one byte at a time and a real server.
func TestPostgresSplitMessages(t *testing.T) {
	pg := lgtest.StartPostgres(t)
	pass := "split-secret"
	pg.MustExec(t, "CREATE ROLE app LOGIN PASSWORD '"+pass+"'")
	pg.MustExec(t, "CREATE DATABASE app OWNER app")
	passFile := filepath.Join(t.TempDir(), "pass")
	os.WriteFile(passFile, []byte(pass), 0o600)
	cfg := l7test.Config(t, fmt.Sprintf(`targets:
  - {name: db, protocol: postgres, address: %s, credentials: {user: app, password_file: %s}}
workloads:
  - {name: w, cgroup: lg/w}
rules:
  - {id: r, workloads: [w], targets: [db], allow: [read, write, ddl, session, transaction, copy], deny: [drop]}
`, pg.Addr(), passFile))
	rec := l7test.NewRecorder()
	srv := l7test.Server(t, cfg, rec)
	tg, _ := cfg.TargetByName("db")
	h := &postgres.Handler{}
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		a, b := net.Pipe()
		sess := srv.NewSession("split", &policy.Subject{Workload: "w", Target: tg,
			KernelFacts: policy.KernelFacts{OrigDst: netip.MustParseAddrPort(pg.Addr())}})
		go func() {
			defer b.Close()
			if _, err := h.Serve(context.Background(), b, sess); err != nil && !strings.Contains(err.Error(), "closed") {
				t.Logf("serve: %v", err)
			}
		}()
		return byteConn{a}, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	ccfg, err := pgx.ParseConfig("postgres://agent@127.0.0.1:1/app?sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	ccfg.DialFunc = dial
	ccfg.LookupFunc = func(ctx context.Context, host string) ([]string, error) { return []string{host}, nil }
	conn, err := pgx.ConnectConfig(ctx, ccfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE TABLE s (id int, v text)"); err != nil {
		t.Fatal(err)
	}
	b := &pgx.Batch{}
	b.Queue("INSERT INTO s VALUES ($1, $2)", 1, "one")
	b.Queue("INSERT INTO s VALUES ($1, $2)", 2, strings.Repeat("é", 5000))
	b.Queue("SELECT id, v FROM s ORDER BY id")
	br := conn.SendBatch(ctx, b)
	for range 2 {
		if _, err := br.Exec(); err != nil {
			t.Fatal(err)
		}
	}
	rows, _ := br.Query()
	n := 0
	for rows.Next() {
		n++
	}
	rows.Close()
	br.Close()
	if n != 2 {
		t.Errorf("rows = %d", n)
	}
	_, err = conn.Exec(ctx, "DROP TABLE s")
	if pe, ok := err.(*pgconn.PgError); !ok || pe.Code != "42501" {
		t.Errorf("drop: %v", err)
	}
	var one int
	if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil || one != 1 {
		t.Errorf("after deny: %v", err)
	}
}

// TestPostgresLargeData moves a 64 MB value both ways and 100 MB through
// COPY, through the kernel redirect and the daemon.
func TestPostgresLargeData(t *testing.T) {
	s := newPGSetup(t)
	s.psqlOK(t, "admin", "CREATE TABLE big (id int, v text); CREATE TABLE bulk (id int, v text)")

	t.Run("64MB value", func(t *testing.T) {
		var r bigResult
		client(t, s.cfg, "agent", "", &r, "bigrow", "postgres://agent@127.0.0.1:"+s.port+"/app?sslmode=disable")
		if r.Err != "" || r.Sent != r.Got || r.Len != 64<<20 {
			t.Errorf("big row: %+v", r)
		}
	})

	t.Run("100MB copy", func(t *testing.T) {
		dir := t.TempDir()
		in := filepath.Join(dir, "in.tsv")
		f, _ := os.Create(in)
		row := strings.Repeat("x", 90)
		size := 0
		for i := 0; size < 100<<20; i++ {
			n, _ := fmt.Fprintf(f, "%d\t%s\n", i, row)
			size += n
		}
		f.Close()
		// admin: no masks, so rows stream untouched (agent's column masks
		// refuse COPY TO).
		s.psqlOK(t, "admin", `\copy bulk FROM '`+in+`'`)
		out := filepath.Join(dir, "out.tsv")
		os.Chmod(dir, 0o777)
		s.psqlOK(t, "admin", `\copy (SELECT * FROM bulk ORDER BY id) TO '`+out+`'`)
		a, _ := os.ReadFile(in)
		b, _ := os.ReadFile(out)
		if len(b) != len(a) || sha256.Sum256(a) != sha256.Sum256(b) {
			t.Errorf("copied %d bytes in, %d out", len(a), len(b))
		}
	})
}
