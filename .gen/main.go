// Command gen fills a store with N events through the public API (a
// throwaway tool for the RSS measurement; not committed).
package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/loopgate/loopgate/store"
	"github.com/loopgate/loopgate/store/event"
)

func main() {
	path := os.Args[1]
	n, _ := strconv.ParseInt(os.Args[2], 10, 64)
	ctx := context.Background()
	db, err := store.Open(ctx, path)
	if err != nil {
		panic(err)
	}
	if err := db.EnableCheckpoints(ctx, path+".key"); err != nil {
		panic(err)
	}
	const perSession = 101
	sessions := (n + perSession - 1) / perSession
	var next, done atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for w := 0; w < 16; w++ {
		wg.Go(func() {
			batch := make([]event.Event, 33)
			for {
				i := next.Add(1) - 1
				if i >= sessions {
					return
				}
				id := fmt.Sprintf("ses_%08d", i)
				now := time.Now()
				if err := db.OpenSession(ctx, event.Session{ID: id, Workload: "ci-bot", Target: "appdb", Protocol: "postgres",
					OrigDst: "10.0.0.5:5432", PID: int(1000 + i%30000), UID: 1000, Exe: "/usr/bin/psql", Started: now}); err != nil {
					panic(err)
				}
				for k := 0; k < 3; k++ {
					for j := range batch {
						batch[j] = event.Event{SessionID: id, Kind: event.KindCommand, Decision: "allow", RuleID: "bot-prod",
							Text: "SELECT id, email, created_at FROM users WHERE id = $1 ORDER BY created_at", Params: `["` + strconv.Itoa(j) + `"]`,
							Tag: "SELECT 1", Duration: 1500 * time.Microsecond, Rows: 1, Bytes: 64}
					}
					if err := db.AppendEvents(ctx, batch...); err != nil {
						panic(err)
					}
				}
				if err := db.CloseSession(ctx, id, event.End{Ended: time.Now(), BytesUp: 100, BytesDown: 6400, Outcome: event.OutcomeClosed}); err != nil {
					panic(err)
				}
				if d := done.Add(1); d%5000 == 0 {
					fmt.Fprintf(os.Stderr, "%d sessions, %d events, %s\n", d, d*perSession, time.Since(start).Round(time.Second))
				}
			}
		})
	}
	wg.Wait()
	if err := db.Close(); err != nil {
		panic(err)
	}
	fmt.Fprintf(os.Stderr, "done: %d sessions, ~%d events in %s\n", sessions, sessions*perSession, time.Since(start).Round(time.Second))
}
