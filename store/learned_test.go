package store

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/loopgate/loopgate/store/event"
)

func TestLearnedColumns(t *testing.T) {
	t.Parallel()
	db, _ := openTemp(t)
	ctx := context.Background()
	first := time.Date(2026, 11, 30, 11, 0, 0, 0, time.UTC)
	c := event.LearnedColumn{Rule: "r", Mask: "email", Column: "users.email", SessionID: "s1", FirstSeen: first}
	if err := db.LearnColumn(ctx, c); err != nil {
		t.Fatal(err)
	}
	if _, err := db.SetLearnedState(ctx, "r", "email", "users.email", "dropped", "uid 0"); err != nil {
		t.Fatal(err)
	}
	// Learning it again (another daemon's run) leaves the operator's drop.
	c.SessionID = "s2"
	if err := db.LearnColumn(ctx, c); err != nil {
		t.Fatal(err)
	}
	if err := db.LearnColumn(ctx, event.LearnedColumn{Rule: "r", Mask: "email", Column: "orders.contact", SessionID: "s3", FirstSeen: first}); err != nil {
		t.Fatal(err)
	}
	got, err := db.LearnedColumns(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := range got {
		got[i].Changed = time.Time{}
	}
	want := []event.LearnedColumn{
		{Rule: "r", Mask: "email", Column: "orders.contact", SessionID: "s3", FirstSeen: first, State: "learned"},
		{Rule: "r", Mask: "email", Column: "users.email", SessionID: "s1", FirstSeen: first, State: "dropped", ChangedBy: "uid 0"},
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("LearnedColumns (-want +got):\n%s", d)
	}
	if _, err := db.SetLearnedState(ctx, "r", "email", "users.nope", "confirmed", "uid 0"); !errors.Is(err, ErrNotFound) {
		t.Errorf("SetLearnedState of an unknown column: %v, want ErrNotFound", err)
	}
	// Each learning and change is a chained event.
	rep, err := db.Verify(ctx, nil)
	if err != nil || rep.Problem != nil || rep.Events != 4 {
		t.Fatalf("verify = %+v, %v; want 4 events, no problem", rep, err)
	}
}
