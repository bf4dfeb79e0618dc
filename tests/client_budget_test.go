package tests

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"golang.org/x/sys/unix"
)

// Client modes of the budget attacks (attack_budget_test.go).

// budgetClient runs one of the budget modes.
func budgetClient(mode string, args []string) any {
	switch mode {
	case "flood":
		return flood(args)
	case "probe":
		return probe(args)
	case "bigquery":
		return bigQuery(args)
	case "pgcap":
		return pgCap(args)
	}
	return clientResult{Err: "unknown budget mode " + mode}
}

// floodResult is what one flood of sessions saw.
type floodResult struct {
	Served  int    `json:"served"`  // got the echo target's greeting
	Refused int    `json:"refused"` // closed by loopgate before any byte
	Failed  int    `json:"failed"`  // anything else
	Error   string `json:"error,omitempty"`
}

// flood N ADDR: open N sessions to ADDR, at most 256 connecting at once,
// and keep the served ones open. Prints the counts as one JSON line, then
// holds the sessions until stdin closes.
func flood(args []string) floodResult {
	n, _ := strconv.Atoi(args[0])
	raiseNoFile(n + 256)
	var (
		mu   sync.Mutex
		r    floodResult
		held []net.Conn
		wg   sync.WaitGroup
	)
	slots := make(chan struct{}, 256)
	for range n {
		slots <- struct{}{}
		wg.Go(func() {
			defer func() { <-slots }()
			c, err := net.DialTimeout("tcp", args[1], 10*time.Second)
			if err != nil {
				mu.Lock()
				r.Failed++
				r.Error = err.Error()
				mu.Unlock()
				return
			}
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			line, err := bufio.NewReader(c).ReadString('\n')
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil && strings.HasPrefix(line, "peer "):
				r.Served++
				held = append(held, c)
				return
			case len(line) == 0 && (errors.Is(err, io.EOF) || errors.Is(err, unix.ECONNRESET)):
				r.Refused++
			default:
				r.Failed++
				r.Error = fmt.Sprintf("read %q: %v", line, err)
			}
			c.Close()
		})
	}
	wg.Wait()
	json.NewEncoder(os.Stdout).Encode(r)
	io.Copy(io.Discard, os.Stdin)
	for _, c := range held {
		c.Close()
	}
	return r
}

// probeResult is the latency of each connect + round trip, in order.
type probeResult struct {
	NS  []int64 `json:"ns"`
	Err string  `json:"err,omitempty"`
}

// probe N ADDR: N times connect, read the greeting, echo a line and
// close, 10 ms apart.
func probe(args []string) probeResult {
	n, _ := strconv.Atoi(args[0])
	var r probeResult
	for range n {
		start := time.Now()
		if err := roundTrip(args[1]); err != nil {
			r.Err = err.Error()
			return r
		}
		r.NS = append(r.NS, int64(time.Since(start)))
		time.Sleep(10 * time.Millisecond)
	}
	return r
}

// bigQueryResult is what a session saw of statements over the limit.
type bigQueryResult struct {
	Query string `json:"query"` // SQLSTATE and message of the big simple Query
	Parse string `json:"parse"` // of the big Parse (extended protocol)
	After string `json:"after"` // SELECT 1 afterwards, in the same session
	Err   string `json:"err,omitempty"`
}

// bigquery DSN BYTES: a simple Query of BYTES bytes of "SELECT 1;", then
// a Parse of 2 MiB, then SELECT 1, in one session.
func bigQuery(args []string) (r bigQueryResult) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	size, _ := strconv.Atoi(args[1])
	conn, err := pgconn.Connect(ctx, args[0])
	if err != nil {
		r.Err = err.Error()
		return r
	}
	defer conn.Close(ctx)
	big := strings.Repeat("SELECT 1;", size/9)
	_, err = conn.Exec(ctx, big).ReadAll()
	r.Query = pgErrText(err)
	big = ""
	_, err = conn.Prepare(ctx, "big", "SELECT "+strings.Repeat("1 + ", 2<<20/4)+"1", nil)
	r.Parse = pgErrText(err)
	res, err := conn.Exec(ctx, "SELECT 1").ReadAll()
	switch {
	case err != nil:
		r.After = pgErrText(err)
	case len(res) == 1 && len(res[0].Rows) == 1:
		r.After = string(res[0].Rows[0][0])
	}
	return r
}

// pgCapResult is the outcome of each of several concurrent sessions.
type pgCapResult struct {
	Outcomes []string `json:"outcomes"` // "ok", or SQLSTATE and message
}

// pgcap N DSN: open N sessions at once and hold them until all are tried.
func pgCap(args []string) pgCapResult {
	n, _ := strconv.Atoi(args[0])
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r := pgCapResult{Outcomes: make([]string, n)}
	conns := make([]*pgconn.PgConn, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			c, err := pgconn.Connect(ctx, args[1])
			if err != nil {
				r.Outcomes[i] = pgErrText(err)
				return
			}
			if _, err := c.Exec(ctx, "SELECT 1").ReadAll(); err != nil {
				r.Outcomes[i] = pgErrText(err)
			} else {
				r.Outcomes[i] = "ok"
			}
			conns[i] = c
		})
	}
	wg.Wait()
	for _, c := range conns {
		if c != nil {
			c.Close(ctx)
		}
	}
	return r
}

func pgErrText(err error) string {
	var pe *pgconn.PgError
	switch {
	case err == nil:
		return "ok"
	case errors.As(err, &pe):
		return pe.Code + " " + pe.Message
	}
	return err.Error()
}

// raiseNoFile raises the soft RLIMIT_NOFILE to at least n (within the
// hard limit).
func raiseNoFile(n int) {
	var lim unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &lim) == nil && lim.Cur < uint64(n) {
		lim.Cur = min(uint64(n), lim.Max)
		unix.Setrlimit(unix.RLIMIT_NOFILE, &lim)
	}
}
