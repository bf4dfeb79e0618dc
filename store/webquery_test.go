package store

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/loopgate/loopgate/store/event"
)

func TestSessionEventWindow(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, err := OpenWith(ctx, filepath.Join(t.TempDir(), "loopgate.db"), Options{Sync: SyncFull})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	start := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	for _, id := range []string{"a", "b"} {
		if err := db.OpenSession(ctx, event.Session{ID: id, Workload: "w", Target: "t", Started: start}); err != nil {
			t.Fatal(err)
		}
	}
	// Commits that interleave the two sessions, so that a's spans hold
	// b's events, some commits of one event and some of many.
	for i := range 40 {
		var evs []event.Event
		for j := range i%5 + 1 {
			kind := event.KindCommand
			if j%2 == 1 {
				kind = event.KindResult
			}
			evs = append(evs,
				event.Event{SessionID: "a", Kind: kind, Text: fmt.Sprintf("a%d.%d", i, j)},
				event.Event{SessionID: "b", Kind: kind, Text: fmt.Sprintf("b%d.%d", i, j)})
		}
		if err := db.AppendEvents(ctx, evs...); err != nil {
			t.Fatal(err)
		}
	}
	all, err := db.SessionEvents(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	texts := func(rows []ExportRow) []string {
		var out []string
		for _, r := range rows {
			out = append(out, r.Kind+":"+r.Text)
		}
		return out
	}
	commands := slices.DeleteFunc(slices.Clone(all), func(r ExportRow) bool { return r.Kind != string(event.KindCommand) })
	for _, tc := range []struct {
		name string
		w    EventWindow
		want []ExportRow
	}{
		{"first", EventWindow{N: 7}, all[:7]},
		{"all of it", EventWindow{N: 1000}, all},
		{"after", EventWindow{After: all[20].Seq, N: 5}, all[21:26]},
		{"last", EventWindow{Last: true, N: 9}, all[len(all)-9:]},
		{"last after", EventWindow{Last: true, After: all[len(all)-4].Seq, N: 9}, all[len(all)-3:]},
		{"last commands", EventWindow{Last: true, N: 4, Kinds: []string{"command"}}, commands[len(commands)-4:]},
		{"first commands", EventWindow{N: 3, Kinds: []string{"command"}}, commands[:3]},
		{"none", EventWindow{N: 0}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := db.SessionEventWindow(ctx, "a", tc.w)
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(texts(tc.want), texts(got)); d != "" {
				t.Errorf("window (-want +got):\n%s", d)
			}
		})
	}
}

func TestLatestSessions(t *testing.T) {
	t.Parallel()
	db, _ := openTemp(t)
	ctx := context.Background()
	start := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	for i, w := range []string{"x", "y", "x", "x", "y"} {
		s := event.Session{ID: fmt.Sprint("s", i), Workload: w, Target: "t" + w, Started: start.Add(time.Duration(i) * time.Minute)}
		if err := db.OpenSession(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.CloseSession(ctx, "s2", event.End{Ended: start.Add(time.Hour), Outcome: event.OutcomeClosed}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		f    Filter
		n    int
		want []string
	}{
		{"newest first", Filter{}, 3, []string{"s4", "s3", "s2"}},
		{"workload", Filter{Workload: "x"}, 10, []string{"s3", "s2", "s0"}},
		{"target", Filter{Target: "ty"}, 10, []string{"s4", "s1"}},
		{"outcome", Filter{Outcome: "closed"}, 10, []string{"s2"}},
		{"page back", Filter{Workload: "x", Until: start.Add(3 * time.Minute)}, 10, []string{"s2", "s0"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := db.LatestSessions(ctx, tc.f, tc.n)
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, s := range got {
				ids = append(ids, s.ID)
			}
			if d := cmp.Diff(tc.want, ids); d != "" {
				t.Errorf("sessions (-want +got):\n%s", d)
			}
		})
	}
}
