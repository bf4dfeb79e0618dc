package store

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/loopgate/loopgate/store/event"
)

var update = flag.Bool("update", false, "rewrite golden files")

func TestMain(m *testing.M) {
	if path := os.Getenv("LG_STORE_WRITER"); path != "" {
		os.Exit(writerMain(path))
	}
	os.Exit(m.Run())
}

// writerMain writes sessions as fast as it can, printing each id once it is
// acknowledged; the kill -9 test kills it mid-stream.
func writerMain(path string) int {
	ctx := context.Background()
	db, err := Open(ctx, path)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if err := db.EnableCheckpoints(ctx, path+".key"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	out := bufio.NewWriter(os.Stdout)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				id := fmt.Sprintf("w%d-%d", w, i)
				if err := db.OpenSession(ctx, event.Session{ID: id, Workload: "w", Target: "t", Started: time.Now()}); err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(1)
				}
				// An allowed statement's record: acknowledged once in the
				// WAL, before any fsync (SyncNormal).
				if err := db.AppendEvents(ctx, event.Event{SessionID: id, Kind: event.KindCommand, Text: "SELECT '" + id + "'", Decision: "allow"}); err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(1)
				}
				mu.Lock()
				fmt.Fprintln(out, id)
				out.Flush()
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return 0
}

// fill writes n sessions of three events each (open, command, close) with
// fixed times, so hashes are reproducible.
func fill(t testing.TB, db *DB, n int) {
	t.Helper()
	ctx := context.Background()
	base := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	for i := range n {
		id := fmt.Sprintf("s%03d", i)
		at := base.Add(time.Duration(i) * time.Second)
		s := event.Session{ID: id, Workload: "ci-bot", Target: "prod-db", Protocol: "tcp", OrigDst: "10.0.0.5:5432",
			PID: 100 + i, UID: 1000, Exe: "/usr/bin/psql", Started: at, ProcessStart: at.Add(-time.Second)}
		if err := db.OpenSession(ctx, s); err != nil {
			t.Fatal(err)
		}
		if err := db.AppendEvents(ctx, event.Event{SessionID: id, Time: at.Add(time.Millisecond), Kind: event.KindCommand,
			Text: "SELECT email FROM users WHERE id = $1", Params: `["42"]`, Decision: "allow", RuleID: "bot-prod",
			Tag: "SELECT 1", Duration: 1500 * time.Microsecond, Rows: 1, Bytes: 64}); err != nil {
			t.Fatal(err)
		}
		if err := db.CloseSession(ctx, id, event.End{Ended: at.Add(time.Second), BytesUp: 10, BytesDown: 64, Outcome: event.OutcomeClosed}); err != nil {
			t.Fatal(err)
		}
	}
}

func openSigned(t *testing.T) (*DB, string) {
	t.Helper()
	db, path := openTemp(t)
	if err := db.EnableCheckpoints(context.Background(), filepath.Join(filepath.Dir(path), "audit.key")); err != nil {
		t.Fatal(err)
	}
	return db, path
}

func TestVerifyDetectsTampering(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		tamper string // SQL run on the closed store
		file   func(path string)
		want   string // Problem.Kind, "" for clean
	}{
		{name: "untouched", want: ""},
		{name: "edit an event", tamper: `UPDATE events SET text = 'SELECT 2' WHERE seq = 5`, want: "edited"},
		{name: "edit a decision", tamper: `UPDATE events SET decision = 'deny' WHERE seq = 2`, want: "edited"},
		{name: "delete a row", tamper: `DELETE FROM events WHERE seq = 4`, want: "deleted"},
		{name: "reorder", tamper: `UPDATE events SET seq = -1 WHERE seq = 2; UPDATE events SET seq = 2 WHERE seq = 3; UPDATE events SET seq = 3 WHERE seq = -1`, want: "reordered"},
		{name: "delete the tail", tamper: `DELETE FROM events WHERE seq > 20`, want: "checkpoint"},
		{name: "delete tail and its checkpoints", tamper: `DELETE FROM events WHERE seq > 20; DELETE FROM checkpoints`, want: "checkpoint"},
		{name: "edit a session row", tamper: `UPDATE sessions SET exe = '/bin/true' WHERE id = 's003'`, want: "session"},
		{name: "edit an outcome", tamper: `UPDATE sessions SET outcome = 'refused' WHERE id = 's004'`, want: "session"},
		{name: "delete a session row", tamper: `DELETE FROM sessions WHERE id = 's001'`, want: "session"},
		{name: "insert a session", tamper: `INSERT INTO sessions SELECT 'zzz', workload, target, protocol, orig_dst, client, pid, tid, process_start, uid, gid, cgroup_id, cgroup_path, exe, comm, started, ended, bytes_up, bytes_down, outcome, error FROM sessions LIMIT 1`, want: "session"},
		{name: "forge a checkpoint", tamper: `UPDATE checkpoints SET hash = '00' || substr(hash, 3)`, want: "checkpoint"},
		{name: "checkpoint file removed", file: func(p string) { os.Remove(p + ".checkpoint") }, want: "checkpoint"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			db, path := openSigned(t)
			fill(t, db, 10)
			if err := db.Checkpoint(context.Background()); err != nil {
				t.Fatal(err)
			}
			db.Close()
			if tc.tamper != "" {
				raw, err := Open(context.Background(), path)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := raw.db.Exec(tc.tamper); err != nil {
					t.Fatalf("tamper: %v", err)
				}
				raw.Close()
			}
			if tc.file != nil {
				tc.file(path)
			}
			db, err := Open(context.Background(), path)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			pub, err := PublicKey(filepath.Join(filepath.Dir(path), "audit.key"))
			if err != nil {
				t.Fatal(err)
			}
			rep, err := db.Verify(context.Background(), pub)
			if err != nil {
				t.Fatal(err)
			}
			got := ""
			if rep.Problem != nil {
				got = rep.Problem.Kind
			}
			if got != tc.want {
				t.Errorf("problem = %v, want kind %q", rep.Problem, tc.want)
			}
			if tc.want == "" && (rep.Events != 30 || rep.Sessions != 10 || rep.Checkpoints != 1) {
				t.Errorf("report = %+v", rep)
			}
		})
	}
}

func TestVerifyWrongKey(t *testing.T) {
	t.Parallel()
	db, _ := openSigned(t)
	fill(t, db, 2)
	db.Checkpoint(context.Background())
	other, _ := LoadOrCreateKey(filepath.Join(t.TempDir(), "other.key"))
	rep, err := db.Verify(context.Background(), other.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	if rep.Problem == nil || !strings.Contains(rep.Problem.Detail, "bad signature") {
		t.Errorf("problem = %v", rep.Problem)
	}
}

func TestKeyFilePermissions(t *testing.T) {
	t.Parallel()
	p := filepath.Join(t.TempDir(), "k", "audit.key")
	if _, err := LoadOrCreateKey(p); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(p)
	if st.Mode().Perm() != 0o600 {
		t.Errorf("key mode %v", st.Mode().Perm())
	}
	os.Chmod(p, 0o644)
	if _, err := LoadOrCreateKey(p); err == nil {
		t.Error("loaded a world-readable key")
	}
}

func TestGroupCommitConcurrent(t *testing.T) {
	t.Parallel()
	db, _ := openSigned(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := range 100 {
				if err := db.AppendEvents(ctx, event.Event{SessionID: fmt.Sprintf("x%d", w), Kind: event.KindNote, Text: fmt.Sprint(i)}); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	rep, err := db.Verify(ctx, nil)
	if err != nil || rep.Problem != nil || rep.Events != 800 {
		t.Fatalf("rep = %+v, %v", rep, err)
	}
	if rep.Checkpoints != 800/checkpointEvery {
		t.Errorf("checkpoints = %d", rep.Checkpoints)
	}
}

func TestExportGolden(t *testing.T) {
	t.Parallel()
	db, _ := openTemp(t)
	fill(t, db, 3)
	for _, format := range []string{"jsonl", "csv"} {
		t.Run(format, func(t *testing.T) {
			var buf bytes.Buffer
			if err := db.Export(context.Background(), Filter{Workload: "ci-bot"}, format, &buf); err != nil {
				t.Fatal(err)
			}
			golden := filepath.Join("testdata", "export."+format)
			if *update {
				os.WriteFile(golden, buf.Bytes(), 0o644)
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(buf.Bytes(), want) {
				t.Errorf("export differs from %s (run go test ./store -run Golden -update):\n%s", golden, buf.String())
			}
		})
	}
	var buf bytes.Buffer
	if err := db.Export(context.Background(), Filter{}, "xml", &buf); err == nil {
		t.Error("unknown format accepted")
	}
}

// TestKill9 kills a process writing as fast as it can (SyncNormal, the
// default: statements' records are acknowledged before any fsync) and
// checks the store opens, verifies, and holds everything that was
// acknowledged.
func TestKill9(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "kill.db")
	self, _ := os.Executable()
	cmd := exec.Command(self, "-test.run=^$")
	cmd.Env = append(os.Environ(), "LG_STORE_WRITER="+path)
	out, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var acked []string
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		acked = append(acked, sc.Text())
		if len(acked) == 1500 {
			cmd.Process.Signal(syscall.SIGKILL)
			break
		}
	}
	for sc.Scan() {
		acked = append(acked, sc.Text())
	}
	cmd.Wait()
	if len(acked) < 1500 {
		t.Fatalf("writer acknowledged only %d sessions", len(acked))
	}
	db, err := Open(context.Background(), path)
	if err != nil {
		t.Fatalf("open after kill -9: %v", err)
	}
	defer db.Close()
	pub, err := PublicKey(path + ".key")
	if err != nil {
		t.Fatal(err)
	}
	rep, err := db.Verify(context.Background(), pub)
	if err != nil || rep.Problem != nil {
		t.Fatalf("verify after kill -9: %+v, %v", rep, err)
	}
	for _, id := range acked {
		if _, err := db.Session(context.Background(), id); err != nil {
			t.Fatalf("acknowledged session %s lost: %v", id, err)
		}
		evs, err := db.SessionEvents(context.Background(), id)
		if err != nil || len(evs) < 2 || evs[1].Text != "SELECT '"+id+"'" {
			t.Fatalf("acknowledged statement of session %s lost: %+v, %v", id, evs, err)
		}
	}
	t.Logf("%d acknowledged sessions, %d events, %d checkpoints: all present, chain intact", len(acked), rep.Events, rep.Checkpoints)
}

func BenchmarkAppend(b *testing.B) {
	for _, writers := range []int{1, 8} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) {
			db, err := Open(context.Background(), filepath.Join(b.TempDir(), "b.db"))
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			db.EnableCheckpoints(context.Background(), filepath.Join(b.TempDir(), "k"))
			b.ReportAllocs()
			b.SetParallelism(writers)
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := db.AppendEvents(context.Background(), event.Event{SessionID: "s", Kind: event.KindCommand, Text: "SELECT 1"}); err != nil {
						b.Error(err)
					}
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
		})
	}
}

// BenchmarkAppendBatch appends 128 events per call, as a session's
// result writer does under load.
func BenchmarkAppendBatch(b *testing.B) {
	db, err := Open(context.Background(), filepath.Join(b.TempDir(), "b.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	evs := make([]event.Event, 128)
	for i := range evs {
		evs[i] = event.Event{SessionID: "s", Kind: event.KindCommand, Text: "SELECT abalance FROM pgbench_accounts WHERE aid = 42", Tag: "SELECT 1", Rows: 1}
	}
	b.ReportAllocs()
	start := time.Now()
	for range b.N {
		if err := db.AppendEvents(context.Background(), evs...); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*len(evs))/time.Since(start).Seconds(), "events/s")
}

// BenchmarkAppendAsync: eight sessions queueing one event per statement,
// as the PostgreSQL relay does for results; Close writes the tail.
func BenchmarkAppendAsync(b *testing.B) {
	db, err := Open(context.Background(), filepath.Join(b.TempDir(), "a.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	start := time.Now()
	var wg sync.WaitGroup
	for w := range 8 {
		id := fmt.Sprintf("01a2165ea5e9d106613%05d", w) // one session per producer, ids as long as real ones
		wg.Go(func() {
			for range b.N {
				db.AppendEventsAsync(event.Event{SessionID: id, Kind: event.KindCommand, Text: "SELECT abalance FROM pgbench_accounts WHERE aid = 42", Tag: "SELECT 1", Rows: 1})
			}
		})
	}
	wg.Wait()
	if err := db.Close(); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(8*b.N)/time.Since(start).Seconds(), "events/s")
}

func BenchmarkVerify(b *testing.B) {
	db, err := Open(context.Background(), filepath.Join(b.TempDir(), "v.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	fill(b, db, 2000)
	b.ResetTimer()
	start := time.Now()
	var events int64
	for range b.N {
		rep, err := db.Verify(context.Background(), nil)
		if err != nil || rep.Problem != nil {
			b.Fatal(err, rep.Problem)
		}
		events += rep.Events
	}
	b.ReportMetric(float64(events)/time.Since(start).Seconds(), "events/s")
}
