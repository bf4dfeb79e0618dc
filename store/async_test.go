package store

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/loopgate/loopgate/store/event"
)

// Async events ride along with the next durable write, ahead of it.
func TestAsyncBeforeDurableWrite(t *testing.T) {
	t.Parallel()
	db, _ := openTemp(t)
	ctx := context.Background()
	db.AppendEventsAsync(event.Event{SessionID: "s", Kind: event.KindResult, Text: "a1"},
		event.Event{SessionID: "s", Kind: event.KindResult, Text: "a2"})
	// A denial: a commit of its own (an allowed statement's record would
	// go to the record log and queue behind them).
	if err := db.AppendEvents(ctx, event.Event{SessionID: "s", Kind: event.KindCommand, Text: "sync", Decision: "deny"}); err != nil {
		t.Fatal(err)
	}
	// No waiting: the durable write carried them.
	evs, err := db.SessionEvents(ctx, "s")
	if err != nil {
		t.Fatal(err)
	}
	var texts []string
	for _, e := range evs {
		texts = append(texts, e.Text)
	}
	if fmt.Sprint(texts) != "[a1 a2 sync]" {
		t.Fatalf("events = %v, want [a1 a2 sync]", texts)
	}
}

// Without any durable write, the flusher commits them within the linger.
func TestAsyncFlushedByLinger(t *testing.T) {
	t.Parallel()
	db, _ := openTemp(t)
	ctx := context.Background()
	db.AppendEventsAsync(event.Event{SessionID: "s", Kind: event.KindResult, Text: "late"})
	deadline := time.Now().Add(10 * time.Second)
	for {
		evs, err := db.SessionEvents(ctx, "s")
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("async event not written by the flusher")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Close writes what is queued; many concurrent producers lose nothing and
// the chain verifies.
func TestAsyncCloseWritesEverything(t *testing.T) {
	t.Parallel()
	db, path := openTemp(t)
	ctx := context.Background()
	const writers, each = 8, 3000 // more than asyncBatch in all
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range each {
				db.AppendEventsAsync(event.Event{SessionID: fmt.Sprint("w", w), Kind: event.KindResult, Text: fmt.Sprint(i)})
				if i%500 == 0 {
					db.AppendEvents(ctx, event.Event{SessionID: fmt.Sprint("w", w), Kind: event.KindCommand, Text: "sync"})
				}
			}
		})
	}
	wg.Wait()
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db2, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer db2.Close()
	for w := range writers {
		evs, err := db2.SessionEvents(ctx, fmt.Sprint("w", w))
		if err != nil {
			t.Fatal(err)
		}
		next := 0
		for _, e := range evs {
			if e.Text == "sync" {
				continue
			}
			if e.Text != fmt.Sprint(next) {
				t.Fatalf("writer %d: event %q out of order, want %d", w, e.Text, next)
			}
			next++
		}
		if next != each {
			t.Fatalf("writer %d: %d async events written, want %d", w, next, each)
		}
	}
	rep, err := db2.Verify(ctx, nil)
	if err != nil || rep.Problem != nil {
		t.Fatalf("verify: %v %+v", err, rep.Problem)
	}
}

// A session's end queued with CloseSessionAsync follows what the session
// queued before it, rides along with the next durable write, and a failed
// one is reported without failing the events around it.
func TestCloseSessionAsync(t *testing.T) {
	t.Parallel()
	db, path := openTemp(t)
	ctx := context.Background()
	var mu sync.Mutex
	var reported []error
	db.OnAsyncError(func(err error, n int, kept bool) {
		mu.Lock()
		reported = append(reported, err)
		mu.Unlock()
	})
	for _, id := range []string{"a", "b"} {
		if err := db.OpenSession(ctx, event.Session{ID: id, Started: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	db.AppendEventsAsync(event.Event{SessionID: "a", Kind: event.KindCommand, Text: "a1"})
	db.CloseSessionAsync("a", event.End{Ended: time.Now(), Outcome: event.OutcomeClosed, BytesUp: 3})
	db.CloseSessionAsync("nobody", event.End{Ended: time.Now(), Outcome: event.OutcomeClosed})
	db.AppendEventsAsync(event.Event{SessionID: "b", Kind: event.KindCommand, Text: "b1"})
	if err := db.AppendEvents(ctx, event.Event{SessionID: "b", Kind: event.KindCommand, Text: "b2", Decision: "deny"}); err != nil {
		t.Fatal(err)
	}
	// The durable write carried the end: no waiting.
	a, err := db.Session(ctx, "a")
	if err != nil || a.Outcome != event.OutcomeClosed || a.BytesUp != 3 {
		t.Fatalf("session a = %+v, %v; want closed", a, err)
	}
	if got := kindsAndTexts(t, db, "a"); got != "[session_open: command:a1 session_close:]" {
		t.Errorf("events of a = %s", got)
	}
	if got := kindsAndTexts(t, db, "b"); got != "[session_open: command:b1 command:b2]" {
		t.Errorf("events of b = %s", got)
	}
	mu.Lock()
	if len(reported) != 1 || !errors.Is(reported[0], ErrNotFound) {
		t.Errorf("reported %v, want the unknown session's end", reported)
	}
	mu.Unlock()

	// Close writes an end still queued.
	db.CloseSessionAsync("b", event.End{Ended: time.Now(), Outcome: event.OutcomeShutdown})
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	db2, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer db2.Close()
	if b, err := db2.Session(ctx, "b"); err != nil || b.Outcome != event.OutcomeShutdown {
		t.Fatalf("session b = %+v, %v; want shutdown", b, err)
	}
	if rep, err := db2.Verify(ctx, nil); err != nil || rep.Problem != nil {
		t.Fatalf("verify: %+v %v", rep, err)
	}
}

// A commit that fails keeps the queued records, session ends included, in
// order, for the next one.
func TestAsyncKeptWhenCommitFails(t *testing.T) {
	t.Parallel()
	db, _ := openTemp(t)
	ctx := context.Background()
	if err := db.OpenSession(ctx, event.Session{ID: "a", Started: time.Now()}); err != nil {
		t.Fatal(err)
	}
	// Writes fail on the writer connection until query_only is off again.
	readOnly := func(on int) {
		if _, err := db.wconn.ExecContext(ctx, fmt.Sprintf("PRAGMA query_only = %d", on)); err != nil {
			t.Fatal(err)
		}
	}
	readOnly(1)
	db.AppendEventsAsync(event.Event{SessionID: "a", Kind: event.KindCommand, Text: "a1"})
	db.CloseSessionAsync("a", event.End{Ended: time.Now(), Outcome: event.OutcomeClosed})
	if err := db.AppendEvents(ctx, event.Event{SessionID: "b", Kind: event.KindNote, Text: "fails"}); err == nil {
		t.Fatal("a write succeeded on a read-only connection")
	}
	readOnly(0)
	if err := db.AppendEvents(ctx, event.Event{SessionID: "b", Kind: event.KindNote, Text: "b1"}); err != nil {
		t.Fatal(err)
	}
	if got := kindsAndTexts(t, db, "a"); got != "[session_open: command:a1 session_close:]" {
		t.Errorf("events of a = %s", got)
	}
	if a, err := db.Session(ctx, "a"); err != nil || a.Outcome != event.OutcomeClosed {
		t.Errorf("session a = %+v, %v", a, err)
	}
	if rep, err := db.Verify(ctx, nil); err != nil || rep.Problem != nil {
		t.Fatalf("verify: %+v %v", rep, err)
	}
}

// kindsAndTexts lists session id's events as kind:text, in chain order.
func kindsAndTexts(t *testing.T, db *DB, id string) string {
	t.Helper()
	evs, err := db.SessionEvents(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range evs {
		out = append(out, e.Kind+":"+e.Text)
	}
	return fmt.Sprint(out)
}
