package store

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/loopgate/loopgate/store/event"
)

// checkCopy opens the backup at dst and verifies it against the key at
// keyPath; every session in want must be in it with its statement.
func checkCopy(t *testing.T, dst, keyPath string, want []string) VerifyReport {
	t.Helper()
	ctx := context.Background()
	st, err := os.Stat(dst)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("copy mode %v, want 0600", st.Mode().Perm())
	}
	c, err := OpenWith(ctx, dst, Options{Reader: true})
	if err != nil {
		t.Fatalf("open copy: %v", err)
	}
	defer c.Close()
	pub, err := PublicKey(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := c.Verify(ctx, pub)
	if err != nil || rep.Problem != nil {
		t.Fatalf("verify copy: %+v, %v", rep, err)
	}
	for _, id := range want {
		evs, err := c.SessionEvents(ctx, id)
		if err != nil || len(evs) < 2 || evs[1].Text != "SELECT '"+id+"'" {
			t.Fatalf("session %s acknowledged before the backup is not in it: %+v, %v", id, evs, err)
		}
	}
	return rep
}

func TestBackupWhileWriting(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	db, path := openSigned(t)
	var (
		mu    sync.Mutex
		acked []string
		stop  atomic.Bool
		wg    sync.WaitGroup
	)
	for w := range 4 {
		wg.Go(func() {
			for i := 0; !stop.Load(); i++ {
				id := fmt.Sprintf("w%d-%d", w, i)
				if err := db.OpenSession(ctx, event.Session{ID: id, Workload: "w", Target: "t", Started: time.Now()}); err != nil {
					t.Error(err)
					return
				}
				if err := db.AppendEvents(ctx, event.Event{SessionID: id, Kind: event.KindCommand, Text: "SELECT '" + id + "'", Decision: "allow"}); err != nil {
					t.Error(err)
					return
				}
				if err := db.CloseSession(ctx, id, event.End{Ended: time.Now(), Outcome: event.OutcomeClosed}); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				acked = append(acked, id)
				mu.Unlock()
			}
		})
	}
	defer func() { stop.Store(true); wg.Wait() }()
	// The CLI's view: a reader beside the writer.
	r, err := OpenWith(ctx, path, Options{Reader: true})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	var before []string
	waitFor(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		before = append(before[:0], acked...)
		return len(acked) >= 300
	})
	dst := filepath.Join(t.TempDir(), "copy.db")
	rep, err := r.Backup(ctx, dst)
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	during := len(acked) - len(before)
	mu.Unlock()
	v := checkCopy(t, dst, filepath.Join(filepath.Dir(path), "audit.key"), before)
	if v.Events != rep.Events {
		t.Errorf("copy verified %d events, backup reported %d", v.Events, rep.Events)
	}
	t.Logf("backup of %d events (%d from the record log) while %d sessions were written", rep.Events, rep.Logged, during)

	if _, err := r.Backup(ctx, dst); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Errorf("backup over an existing file: %v", err)
	}
}

func TestBackupIncludesRecordLog(t *testing.T) {
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
		if len(acked) == 1000 {
			cmd.Process.Signal(syscall.SIGKILL)
			break
		}
	}
	for sc.Scan() {
		acked = append(acked, sc.Text())
	}
	cmd.Wait()
	// A reader never replays the log: what the killed writer left in it
	// is only there, and the backup must carry it.
	r, err := OpenWith(context.Background(), path, Options{Reader: true})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	dst := filepath.Join(t.TempDir(), "copy.db")
	rep, err := r.Backup(context.Background(), dst)
	if err != nil {
		t.Fatal(err)
	}
	checkCopy(t, dst, path+".key", acked)
	for _, suffix := range []string{"-records", "-records.old", "-wal"} {
		if _, err := os.Stat(dst + suffix); err == nil {
			t.Errorf("copy left %s beside it", dst+suffix)
		}
	}
	t.Logf("%d sessions acknowledged; copy of %d events, %d of them from the record log", len(acked), rep.Events, rep.Logged)
}

// waitFor polls cond for up to 30 s.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 30s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
