package store

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/loopgate/loopgate/store/event"
)

func TestLazyEvents(t *testing.T) {
	t.Parallel()
	allowed := event.Event{Kind: event.KindCommand, Text: "SELECT 1", Decision: "allow", RuleID: "r"}
	tests := []struct {
		name string
		evs  []event.Event
		want bool
	}{
		{name: "allowed statement", evs: []event.Event{allowed}, want: true},
		{name: "result", evs: []event.Event{{Kind: event.KindResult, Tag: "SELECT 1"}}, want: true},
		{name: "denied statement", evs: []event.Event{allowed, {Kind: event.KindCommand, Decision: "deny", Error: "no"}}},
		{name: "approved statement", evs: []event.Event{{Kind: event.KindCommand, Decision: "allow", ApprovalID: "a1"}}},
		{name: "held for approval", evs: []event.Event{{Kind: event.KindDecision, Decision: "approve"}}},
		{name: "revoked", evs: []event.Event{{Kind: event.KindRevoked, Text: "rule removed"}}},
		{name: "note", evs: []event.Event{{Kind: event.KindNote}}},
		{name: "unknown action", evs: []event.Event{{Kind: event.KindCommand, Decision: "permit"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := lazyEvents(tt.evs); got != tt.want {
				t.Errorf("lazyEvents = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestSyncNormalWaitsOnlyWhereItMust holds the WAL's fsync and checks that
// an allowed statement's record returns without it while a session start
// and a denial wait for it, and that the checkpoint file is written only
// after the fsync that covers its events.
func TestSyncNormalWaitsOnlyWhereItMust(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	path := filepath.Join(t.TempDir(), "lg.db")
	db, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.EnableCheckpoints(ctx, path+".key"); err != nil {
		t.Fatal(err)
	}
	if err := db.OpenSession(ctx, event.Session{ID: "s", Started: time.Now()}); err != nil {
		t.Fatal(err)
	}
	hold, entered := make(chan struct{}), make(chan struct{}, 16)
	db.wmu.Lock()
	db.beforeSync = func() {
		select {
		case entered <- struct{}{}:
		default:
		}
		<-hold
	}
	db.wmu.Unlock()

	if err := db.AppendEvents(ctx, event.Event{SessionID: "s", Kind: event.KindCommand, Text: "SELECT 1", Decision: "allow"}); err != nil {
		t.Fatal(err)
	}
	<-entered // the syncer is now fsyncing (held) behind that commit
	waited := make(chan error, 3)
	go func() {
		waited <- db.AppendEvents(ctx, event.Event{SessionID: "s", Kind: event.KindCommand, Text: "DROP TABLE t", Decision: "deny", Error: "no"})
	}()
	go func() { waited <- db.OpenSession(ctx, event.Session{ID: "s2", Started: time.Now()}) }()
	for range 100 {
		if err := db.AppendEvents(ctx, event.Event{SessionID: "s", Kind: event.KindCommand, Text: "SELECT 2", Decision: "allow"}); err != nil {
			t.Fatal(err)
		}
	}
	go func() { waited <- db.Checkpoint(ctx) }()
	for committed := 0; committed == 0; time.Sleep(time.Millisecond) {
		if err := db.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM checkpoints`).Scan(&committed); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case err := <-waited:
		t.Fatalf("a denial, session start or checkpoint returned before the fsync: %v", err)
	default:
	}
	if _, err := os.Stat(path + ".checkpoint"); err == nil {
		t.Fatal("checkpoint file written before the fsync")
	}
	close(hold)
	for range 3 {
		if err := <-waited; err != nil {
			t.Fatal(err)
		}
	}
	if _, err := os.Stat(path + ".checkpoint"); err != nil {
		t.Fatalf("checkpoint file after the fsync: %v", err)
	}
}
