package store

import (
	"context"
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
	if err := db.AppendEvents(ctx, event.Event{SessionID: "s", Kind: event.KindCommand, Text: "sync"}); err != nil {
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
