package tests

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/loopgate/loopgate/tests/lgtest"
)

// churnResult is what many short TLS sessions saw: each logs in, runs one
// statement and says goodbye.
type churnResult struct {
	OK     int      `json:"ok"`
	Hung   int      `json:"hung"`   // no answer within the session's time
	Failed []string `json:"failed"` // other errors and wrong answers (first few)
	Err    string   `json:"err,omitempty"`
}

// churnScenario runs par goroutines, each opening rounds sessions one
// after the other, as database/sql does under load (pgx's stdlib
// TestConnConcurrency).
func churnScenario(dsn string, par, rounds int) (r churnResult) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	for g := range par {
		wg.Go(func() {
			for i := range rounds {
				want := g*1000 + i
				err := func() error {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					defer cancel()
					c, err := pgx.Connect(ctx, dsn)
					if err != nil {
						return err
					}
					defer c.Close(context.Background())
					var got int
					if err := c.QueryRow(ctx, "SELECT $1::int", want).Scan(&got); err != nil {
						return err
					}
					if got != want {
						return fmt.Errorf("asked for %d, got %d", want, got)
					}
					return nil
				}()
				mu.Lock()
				switch {
				case err == nil:
					r.OK++
				case errors.Is(err, context.DeadlineExceeded):
					r.Hung++
				case len(r.Failed) < 5:
					r.Failed = append(r.Failed, err.Error())
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return r
}

func churnClient(args []string) churnResult {
	par, err1 := strconv.Atoi(args[1])
	rounds, err2 := strconv.Atoi(args[2])
	if err1 != nil || err2 != nil {
		return churnResult{Err: "usage: pgchurn DSN PAR ROUNDS"}
	}
	return churnScenario(args[0], par, rounds)
}

// TestPostgresAgentTLSChurn: many concurrent short sessions over TLS (the
// goroutine relay), each on a fresh or pooled server connection, all get
// the answer to their statement. A login whose write was slow used to
// leave pgconn's background reader on the hijacked socket, which took the
// answer to the session's first statement: the agent hung.
func TestPostgresAgentTLSChurn(t *testing.T) {
	lgtest.RequireRoot(t)
	pg := lgtest.StartPostgres(t)
	dir := t.TempDir()
	pass := filepath.Join(dir, "pass")
	os.WriteFile(pass, []byte(pg.SuperPassword), 0o600)
	cfg := lgtest.WriteConfig(t, fmt.Sprintf(`listen: 127.0.0.1:%d
store: %s
bpffs: %s
daemon_cgroup: %s
targets:
  - {name: db, protocol: postgres, address: %s, credentials: {user: postgres, password_file: %s}, tls: {agent: true}}
workloads:
  - {name: agent, cgroup: %s}
rules:
  - {id: r, workloads: [agent], targets: [db], allow: [read, session, transaction]}
`, lgtest.FreePort(t), filepath.Join(dir, "state", "lg.db"), lgtest.PinDir(t), lgtest.CgroupName(t)+"-daemon",
		pg.Addr(), pass, lgtest.CgroupName(t)))
	lgtest.StartDaemon(t, cfg)
	dsn := "postgres://agent@" + pg.Addr() + "/postgres?sslmode=require&connect_timeout=10"
	var r churnResult
	client(t, cfg, "agent", "", &r, "pgchurn", dsn, "40", "25")
	t.Logf("%+v", r)
	if r.Err != "" || r.Hung != 0 || len(r.Failed) != 0 || r.OK != 40*25 {
		t.Errorf("1000 TLS sessions: %d answered, %d hung, failed: %q %s", r.OK, r.Hung, r.Failed, r.Err)
	}
}
