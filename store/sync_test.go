package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
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
	// A start with the allow that admitted it is as lazy as an allowed
	// statement: it returns with the fsync held.
	if err := db.OpenSession(ctx, event.Session{ID: "s3", Started: time.Now()},
		event.Event{SessionID: "s3", Kind: event.KindDecision, Text: "connect", Decision: "allow"}); err != nil {
		t.Fatal(err)
	}
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

// TestRecordLogReplay takes a crash image of the store (its files as the
// kernel holds them) right after allowed statements' records were
// acknowledged, before many were committed, and checks the image opens
// with every one of them chained in order, and verifies. The long run
// writes past journalRotate, so the log is set aside while sessions
// keep writing.
func TestRecordLogReplay(t *testing.T) {
	t.Parallel()
	for _, n := range []int{300, 40000} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			t.Parallel()
			replayAfterCrash(t, n)
		})
	}
}

func replayAfterCrash(t *testing.T, n int) {
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "lg.db")
	db, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.EnableCheckpoints(ctx, filepath.Join(dir, "key")); err != nil {
		t.Fatal(err)
	}
	if err := db.OpenSession(ctx, event.Session{ID: "s", Started: time.Now()}); err != nil {
		t.Fatal(err)
	}
	pad := strings.Repeat("x", 100)
	for i := range n {
		if err := db.AppendEvents(ctx, event.Event{SessionID: "s", Time: time.Now(), Kind: event.KindCommand,
			Text: fmt.Sprintf("SELECT %d -- %s", i, pad), Decision: "allow"}); err != nil {
			t.Fatal(err)
		}
	}
	// The image: no write is logged or queued while it is taken; a
	// commit under way may be torn in it, as by a crash.
	image := filepath.Join(t.TempDir(), "lg.db")
	var logged int64
	db.wmu.Lock()
	for _, suffix := range []string{"", "-wal", "-records", "-records.old", ".checkpoint"} {
		b, err := os.ReadFile(path + suffix)
		if suffix != "" && suffix != "-wal" && errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			db.wmu.Unlock()
			t.Fatal(err)
		}
		if strings.HasPrefix(suffix, "-records") {
			logged += int64(len(b))
		}
		if err := os.WriteFile(image+suffix, b, 0o600); err != nil {
			db.wmu.Unlock()
			t.Fatal(err)
		}
	}
	db.wmu.Unlock()
	if logged == 0 {
		t.Fatal("record log image empty: nothing to replay")
	}
	t.Logf("record log image: %d bytes", logged)
	// Once the chain holds it all, the log goes.
	deadline := time.Now().Add(10 * time.Second)
	for left := logged; left > 0; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("record log still holds %d bytes 10 s after the last write", left)
		}
		left = 0
		for _, suffix := range []string{"-records", "-records.old"} {
			if st, err := os.Stat(path + suffix); err == nil {
				left += st.Size()
			}
		}
	}

	re, err := Open(ctx, image)
	if err != nil {
		t.Fatal(err)
	}
	defer re.Close()
	evs, err := re.SessionEvents(ctx, "s")
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != n+1 {
		t.Fatalf("%d events after replay, want %d", len(evs), n+1)
	}
	for i, e := range evs[1:] {
		if want := fmt.Sprintf("SELECT %d -- %s", i, pad); e.Text != want {
			t.Fatalf("event %d is %q, want %q", i+1, e.Text, want)
		}
	}
	pub, err := PublicKey(filepath.Join(dir, "key"))
	if err != nil {
		t.Fatal(err)
	}
	if rep, err := re.Verify(ctx, pub); err != nil || rep.Problem != nil {
		t.Fatalf("verify after replay: %+v, %v", rep, err)
	}
	if st, err := os.Stat(image + "-records"); err != nil || st.Size() != 0 {
		t.Errorf("record log not emptied after replay: %v", err)
	}
	if _, err := os.Stat(image + "-records.old"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("set-aside record log not removed after replay: %v", err)
	}
	// Replayed once: a second open appends nothing.
	re.Close()
	if re, err = Open(ctx, image); err != nil {
		t.Fatal(err)
	}
	defer re.Close()
	if evs, err := re.SessionEvents(ctx, "s"); err != nil || len(evs) != n+1 {
		t.Fatalf("%d events after a second open, want %d (%v)", len(evs), n+1, err)
	}
}

func TestRecordLogLine(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 11, 30, 11, 0, 0, 123456789, time.FixedZone("x", 3600))
	tests := []struct {
		name string
		evs  []event.Event
	}{
		{name: "none"},
		{name: "plain", evs: []event.Event{{SessionID: "s", Time: at, Kind: event.KindCommand, Text: "SELECT 1", Decision: "allow", RuleID: "r"}}},
		{name: "awkward text", evs: []event.Event{{SessionID: "s", Time: at, Kind: event.KindCommand,
			Text: "SELECT '\t\n\"\\' -- \xff\x00é", Params: `["a\tb"]`, Tag: "SELECT 1", Duration: 5, Rows: -1, Bytes: 1 << 40, Error: "e\n"}}},
		{name: "two, zero time", evs: []event.Event{{SessionID: "a"}, {SessionID: "b", Time: at, Kind: event.KindResult}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			line := appendEntry(nil, journalEntry{Seq: 42, Events: tt.evs})
			if bytes.Count(line, []byte("\n")) != 1 || line[len(line)-1] != '\n' {
				t.Fatalf("line %q is not one line", line)
			}
			got, err := parseEntry(line[:len(line)-1])
			if err != nil {
				t.Fatal(err)
			}
			if got.Seq != 42 || len(got.Events) != len(tt.evs) {
				t.Fatalf("got %+v", got)
			}
			for i, e := range got.Events {
				want := tt.evs[i]
				if !e.Time.Equal(want.Time) {
					t.Errorf("event %d time %v, want %v", i, e.Time, want.Time)
				}
				e.Time, want.Time = time.Time{}, time.Time{}
				if e != want {
					t.Errorf("event %d = %+v, want %+v", i, e, want)
				}
			}
			for cut := 1; cut < len(line)-1; cut += max(1, len(line)/17) {
				if _, err := parseEntry(line[:cut]); err == nil && len(tt.evs) > 0 {
					t.Errorf("torn line %q parsed", line[:cut])
				}
			}
		})
	}
}

// TestSyncFullCommitsEachWrite: under SyncFull an allowed statement's
// record is committed (and fsynced by SQLite) before AppendEvents returns,
// with nothing in the record log.
func TestSyncFullCommitsEachWrite(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "lg.db")
	db, err := OpenWith(ctx, path, Options{Sync: SyncFull})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.OpenSession(ctx, event.Session{ID: "s", Started: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := db.AppendEvents(ctx, event.Event{SessionID: "s", Kind: event.KindCommand, Text: "SELECT 1", Decision: "allow"}); err != nil {
		t.Fatal(err)
	}
	if evs, err := db.SessionEvents(ctx, "s"); err != nil || len(evs) != 2 {
		t.Fatalf("events right after AppendEvents: %d, %v; want 2", len(evs), err)
	}
	if st, err := os.Stat(path + "-records"); err != nil || st.Size() != 0 {
		t.Errorf("record log under SyncFull: %v", err)
	}
}

// TestRecordLogHasOneOwner: a reader of the same store (the CLI while the
// daemon runs) neither replays nor empties the writer's record log, and a
// second writer is refused.
func TestRecordLogHasOneOwner(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "lg.db")
	db, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.OpenSession(ctx, event.Session{ID: "s", Started: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := db.AppendEvents(ctx, event.Event{SessionID: "s", Kind: event.KindCommand, Text: "SELECT 1", Decision: "allow"}); err != nil {
		t.Fatal(err)
	}
	db.wmu.Lock() // nothing is committed meanwhile
	defer db.wmu.Unlock()
	if w, err := Open(ctx, path); err == nil {
		w.Close()
		t.Error("a second writer opened the store")
	}
	other, err := OpenWith(ctx, path, Options{Reader: true})
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if other.journal != nil {
		t.Error("a second Open took the record log")
	}
	if evs, err := other.SessionEvents(ctx, "s"); err != nil || len(evs) != 1 {
		t.Errorf("second Open sees %d events (%v), want 1: the log was replayed by a reader", len(evs), err)
	}
	if st, err := os.Stat(path + "-records"); err != nil || st.Size() == 0 {
		t.Errorf("record log emptied by a second Open: %v", err)
	}
}

// TestAppendEventsNow: an allowed statement's record is logged at once
// when nothing would make it wait; anything else is declined untouched
// (the caller then calls AppendEvents), and a failed write is an error.
func TestAppendEventsNow(t *testing.T) {
	t.Parallel()
	allowed := event.Event{SessionID: "s", Kind: event.KindCommand, Text: "SELECT 1", Decision: "allow", Time: time.Now()}
	tests := []struct {
		name    string
		opts    Options
		ev      event.Event
		setup   func(t *testing.T, db *DB) (undo func())
		want    bool
		wantErr bool
	}{
		{name: "allowed", ev: allowed, want: true},
		{name: "denied", ev: event.Event{SessionID: "s", Kind: event.KindCommand, Text: "DROP TABLE t", Decision: "deny", Error: "no", Time: time.Now()}},
		{name: "sync full", opts: Options{Sync: SyncFull}, ev: allowed},
		{name: "store busy", ev: allowed, setup: func(t *testing.T, db *DB) func() {
			db.wmu.Lock()
			return db.wmu.Unlock
		}},
		{name: "queue full", ev: allowed, setup: func(t *testing.T, db *DB) func() {
			db.wmu.Lock()
			db.async = append(db.async, make([]event.Event, maxAsync)...)
			db.wmu.Unlock()
			return func() {
				db.wmu.Lock()
				db.async = db.async[:0]
				db.wmu.Unlock()
			}
		}},
		{name: "log write fails", ev: allowed, want: true, wantErr: true, setup: func(t *testing.T, db *DB) func() {
			ro, err := os.Open(db.path + "-records")
			if err != nil {
				t.Fatal(err)
			}
			db.wmu.Lock()
			db.journal, ro = ro, db.journal
			db.wmu.Unlock()
			return func() {
				db.wmu.Lock()
				db.journal, ro = ro, db.journal
				db.wmu.Unlock()
				ro.Close()
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			path := filepath.Join(t.TempDir(), "lg.db")
			db, err := OpenWith(ctx, path, tt.opts)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if err := db.OpenSession(ctx, event.Session{ID: "s", Started: time.Now()}); err != nil {
				t.Fatal(err)
			}
			undo := func() {}
			if tt.setup != nil {
				undo = tt.setup(t, db)
			}
			ok, err := db.AppendEventsNow(tt.ev)
			undo()
			if ok != tt.want || (err != nil) != tt.wantErr {
				t.Fatalf("AppendEventsNow = %v, %v; want %v, error %v", ok, err, tt.want, tt.wantErr)
			}
			if !ok || err != nil {
				// Nothing written: the next durable write carries nothing of it.
				if err := db.OpenSession(ctx, event.Session{ID: "s2", Started: time.Now()}); err != nil {
					t.Fatal(err)
				}
				if evs, err := db.SessionEvents(ctx, "s"); err != nil || len(evs) != 1 {
					t.Fatalf("events after a declined write: %d, %v; want the start only", len(evs), err)
				}
				return
			}
			if st, err := os.Stat(path + "-records"); err != nil || st.Size() == 0 {
				t.Fatalf("record log after AppendEventsNow: %v", err)
			}
			// Chained with the next durable write.
			if err := db.OpenSession(ctx, event.Session{ID: "s2", Started: time.Now()}); err != nil {
				t.Fatal(err)
			}
			if evs, err := db.SessionEvents(ctx, "s"); err != nil || len(evs) != 2 || evs[1].Text != "SELECT 1" {
				t.Fatalf("events after AppendEventsNow: %+v, %v; want the start and SELECT 1", evs, err)
			}
		})
	}
}

// An allowed statement's record is written on the event loop: encoding
// its log line into the reused buffer allocates nothing.
func TestAppendEntryAllocs(t *testing.T) {
	e := journalEntry{Seq: 7, Events: []event.Event{{SessionID: "0123456789abcdef01234567", Time: time.Now(), Kind: event.KindCommand,
		Text: "SELECT abalance FROM pgbench_accounts WHERE aid = 4242;", Decision: "allow", RuleID: "bench"}}}
	buf := appendEntry(nil, e)
	if n := testing.AllocsPerRun(1000, func() { buf = appendEntry(buf[:0], e) }); n != 0 {
		t.Errorf("encoding a record: %.1f allocations, want 0", n)
	}
}
