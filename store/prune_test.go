package store

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/loopgate/loopgate/store/event"
)

// fillBase is the time fill starts at: session i opens at fillBase+i s and
// closes one second later.
var fillBase = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

// fillFrom is fill for sessions from .. from+n-1.
func fillFrom(t testing.TB, db *DB, from, n int) {
	t.Helper()
	ctx := context.Background()
	for i := from; i < from+n; i++ {
		id := fmt.Sprintf("s%03d", i)
		at := fillBase.Add(time.Duration(i) * time.Second)
		if err := db.OpenSession(ctx, event.Session{ID: id, Workload: "w", Target: "t", Started: at}); err != nil {
			t.Fatal(err)
		}
		if err := db.AppendEvents(ctx, event.Event{SessionID: id, Time: at.Add(time.Millisecond), Kind: event.KindCommand, Text: "SELECT 1", Decision: "allow"}); err != nil {
			t.Fatal(err)
		}
		if err := db.CloseSession(ctx, id, event.End{Ended: at.Add(time.Second), Outcome: event.OutcomeClosed}); err != nil {
			t.Fatal(err)
		}
	}
}

func signedKey(t *testing.T, path string) ed25519.PrivateKey {
	t.Helper()
	key, err := LoadOrCreateKey(filepath.Join(filepath.Dir(path), "audit.key"))
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func verifyWith(t *testing.T, db *DB, key ed25519.PrivateKey) VerifyReport {
	t.Helper()
	rep, err := db.Verify(context.Background(), key.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func TestPruneThenVerify(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, path := openSigned(t)
	key := signedKey(t, path)
	fill(t, db, 400) // 1200 events, checkpoints at 512 and 1024
	// Sessions 0..198 ended before the cutoff (session i ends at i+1 s).
	rep, err := db.Prune(ctx, fillBase.Add(200*time.Second), key)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Through != 597 || rep.Events != 597 || rep.Sessions != 199 || rep.HeldBy != "s199" {
		t.Errorf("prune = %+v, want through 597: 199 sessions of 3 events, held by s199 (open across the cutoff)", rep)
	}
	v := verifyWith(t, db, key)
	if v.Problem != nil || v.PrunedThrough != 597 || v.Events != 1200-597 || v.Sessions != 201 || v.Checkpoints != 1 {
		t.Errorf("verify after prune = %+v (problem %v)", v, v.Problem)
	}
	if _, err := db.Session(ctx, "s198"); err == nil {
		t.Error("session s198 kept")
	}
	if _, err := db.Session(ctx, "s199"); err != nil {
		t.Errorf("session s199: %v", err)
	}

	// A second prune chains on the first; the newest event always stays
	// (a daemon's next checkpoint signs on from it), and the checkpoint
	// file, whose checkpoint is now pruned, still verifies.
	if err := db.Checkpoint(ctx); err != nil {
		t.Fatal(err)
	}
	rep, err = db.Prune(ctx, fillBase.Add(time.Hour), key)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Through != 1197 || rep.Sessions != 200 {
		t.Errorf("second prune = %+v", rep)
	}
	v = verifyWith(t, db, key)
	if v.Problem != nil || v.Events != 3 || v.PrunedThrough != 1197 {
		t.Errorf("verify after second prune = %+v (problem %v)", v, v.Problem)
	}
	// Nothing more to do: a no-op.
	if rep, err := db.Prune(ctx, fillBase.Add(time.Hour), key); err != nil || rep.Through != 0 {
		t.Errorf("third prune = %+v, %v", rep, err)
	}
	// New events chain on, and verify.
	fill(t, db, 1)
	if v := verifyWith(t, db, key); v.Problem != nil {
		t.Errorf("verify after new events: %v", v.Problem)
	}
	db.Close()
	// Reopened (the head is read from what is left) it still appends.
	db2, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer db2.Close()
	if err := db2.AppendEvents(ctx, event.Event{SessionID: "x", Kind: event.KindNote, Text: "after reopen"}); err != nil {
		t.Fatal(err)
	}
	if v := verifyWith(t, db2, key); v.Problem != nil {
		t.Errorf("verify after reopen: %v", v.Problem)
	}
}

func TestPruneStillFindsTampering(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		tamper string // SQL run after the prune; ? is the first event kept
		want   string
	}{
		{name: "untouched", want: ""},
		{name: "edit an event after the new head", tamper: `UPDATE events SET text = 'SELECT 2' WHERE seq = ? + 4`, want: "edited"},
		{name: "edit the first event kept", tamper: `UPDATE events SET decision = 'deny' WHERE seq = ? + 1`, want: "edited"},
		{name: "delete the first event kept", tamper: `DELETE FROM events WHERE seq = ? + 1`, want: "deleted"},
		{name: "delete more of the head", tamper: `DELETE FROM events WHERE seq <= ? + 30`, want: "deleted"},
		{name: "move the mark", tamper: `UPDATE meta SET value = replace(value, '"event_seq":' || ?, '"event_seq":' || (? + 3)) WHERE key = 'prune_mark'`, want: "pruned"},
		{name: "remove the mark", tamper: `DELETE FROM meta WHERE key = 'prune_mark' AND ? > 0`, want: "deleted"},
		{name: "edit a kept session row", tamper: `UPDATE sessions SET exe = '/bin/true' WHERE id = 's150' AND ? > 0`, want: "session"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			db, path := openSigned(t)
			key := signedKey(t, path)
			fill(t, db, 200)
			rep, err := db.Prune(ctx, fillBase.Add(100*time.Second), key)
			if err != nil || rep.Through == 0 {
				t.Fatalf("prune = %+v, %v", rep, err)
			}
			if tc.tamper != "" {
				args := []any{rep.Through}
				if strings.Count(tc.tamper, "?") == 2 {
					args = append(args, rep.Through)
				}
				if _, err := db.db.Exec(tc.tamper, args...); err != nil {
					t.Fatalf("tamper: %v", err)
				}
			}
			v := verifyWith(t, db, key)
			got := ""
			if v.Problem != nil {
				got = v.Problem.Kind
			}
			if got != tc.want {
				t.Errorf("problem = %v, want kind %q", v.Problem, tc.want)
			}
		})
	}
}

func TestPruneRefusesBrokenChain(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, path := openSigned(t)
	key := signedKey(t, path)
	fill(t, db, 20)
	if _, err := db.db.Exec(`UPDATE events SET text = 'x' WHERE seq = 7`); err != nil {
		t.Fatal(err)
	}
	_, err := db.Prune(ctx, fillBase.Add(time.Hour), key)
	if err == nil || !strings.Contains(err.Error(), "event 7") {
		t.Fatalf("prune over an edited event: %v", err)
	}
	if v := verifyWith(t, db, key); v.Problem == nil || v.Problem.Seq != 7 {
		t.Errorf("verify = %v: the edit must still show", v.Problem)
	}
	other, _ := LoadOrCreateKey(filepath.Join(t.TempDir(), "other.key"))
	if _, err := db.Prune(ctx, fillBase.Add(time.Hour), other); err == nil || !strings.Contains(err.Error(), "key") {
		t.Errorf("prune with another key: %v", err)
	}
}

func TestPruneStopsAtOpenSession(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, path := openSigned(t)
	key := signedKey(t, path)
	fill(t, db, 10)
	// A session still open from before the cutoff holds the cut.
	if err := db.OpenSession(ctx, event.Session{ID: "long", Workload: "w", Target: "t", Started: fillBase.Add(30 * time.Second)}); err != nil {
		t.Fatal(err)
	}
	fillFrom(t, db, 10, 10)
	rep, err := db.Prune(ctx, fillBase.Add(time.Hour), key)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Through != 30 || rep.HeldBy != "long" {
		t.Errorf("prune = %+v, want through 30 held by long", rep)
	}
	if v := verifyWith(t, db, key); v.Problem != nil {
		t.Errorf("verify: %v", v.Problem)
	}
}

func TestVacuumAfterPrune(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, path := openSigned(t)
	key := signedKey(t, path)
	fill(t, db, 300)
	if _, err := db.Prune(ctx, fillBase.Add(time.Hour), key); err != nil {
		t.Fatal(err)
	}
	r, err := OpenWith(ctx, path, Options{Reader: true})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	// The daemon (the writer) has the store open: refused.
	if _, _, err := r.Vacuum(ctx); err == nil || !strings.Contains(err.Error(), "stop it first") {
		t.Fatalf("vacuum beside the writer: %v", err)
	}
	db.Close()
	before, after, err := r.Vacuum(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if after >= before {
		t.Errorf("vacuum: %d -> %d bytes", before, after)
	}
	if v := verifyWith(t, r, key); v.Problem != nil || v.PrunedThrough == 0 {
		t.Errorf("verify after vacuum: %+v (problem %v)", v, v.Problem)
	}
}
