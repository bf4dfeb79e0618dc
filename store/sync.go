package store

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/loopgate/loopgate/store/event"
)

// Sync is how far a write is taken before the writer reports it written.
//
// Every level has a record in a file before the write returns, so a
// caller that forwards traffic only after its record is written keeps "no
// record, no forward". The levels differ in when it reaches the disk:
//
//   - SyncNormal (the default): an allowed statement's record is one
//     write(2) to the record log (journal.go) and reaches the chain with
//     the next commit; other writes are commits into SQLite's WAL
//     (synchronous=NORMAL). Both stay in the kernel's page cache, which
//     outlives the daemon's process (kill -9, a crash, the OOM killer) but
//     not the OS (a kernel panic, power loss). The syncer fsyncs the WAL
//     and the log within syncEvery of any commit, for every session at
//     once; writes that must survive the OS as well (refused sessions,
//     denials, approvals, revocations, signed checkpoints: anything but
//     an allowed statement's record, or a session's start with the allow
//     that admitted it) return only after that fsync. Like auditd's
//     flush = incremental_async, a power loss can take the last few
//     milliseconds of allowed sessions' and statements' records, not the
//     ones before.
//   - SyncFull: every write is a commit fsynced before it returns
//     (synchronous=FULL): nothing returned is lost to a power loss either.
type Sync int

const (
	// SyncNormal commits to the WAL and fsyncs it in groups (see Sync).
	SyncNormal Sync = iota
	// SyncFull fsyncs every commit before it returns.
	SyncFull
)

// String returns the level's name in the config: normal or full.
func (y Sync) String() string {
	if y == SyncFull {
		return "full"
	}
	return "normal"
}

// syncEvery is how long a commit may stay in the page cache only, under
// SyncNormal, before the syncer fsyncs the WAL.
const syncEvery = 5 * time.Millisecond

// Options configure Open.
type Options struct {
	// Sync is the durability of writes; the zero value is SyncNormal.
	Sync Sync
	// Reader opens the store for reading beside its writer (the CLI while
	// the daemon runs): it never takes, replays or empties the record log,
	// and any write of its own is a commit. Without it, Open takes the log
	// and fails if another writer holds it.
	Reader bool
}

// lazyEvents reports whether a write of events may return once it is in
// the WAL, before the WAL is fsynced: only records of allowed statements
// and their results. Anything else (a denial, an approval, an event of a
// kind added later) waits for the fsync.
func lazyEvents(evs []event.Event) bool {
	for _, e := range evs {
		switch e.Kind {
		case event.KindCommand, event.KindDecision, event.KindResult:
		default:
			return false
		}
		// "allow" is policy.Allow; store does not import policy. A
		// renamed action fails safe: its records wait for the fsync.
		if e.Decision != "" && e.Decision != "allow" || e.ApprovalID != "" || e.Error != "" {
			return false
		}
	}
	return true
}

// syncWaiter is a write waiting for the fsync that covers its commit.
type syncWaiter struct {
	done chan error
	err  error // the write's own result, told after the fsync
}

// afterCommit is called by the committing goroutine (wmu not held) after a
// transaction committed: it hands the writes that must reach the disk
// before they return to the syncer, with the checkpoint to write beside the
// database once it has, and tells the rest now.
func (s *DB) afterCommit(batch []*op, errs []error, cp *Checkpoint) {
	if s.sync == SyncFull {
		if cp != nil {
			s.writeCheckpointFile(cp)
		}
		for i, o := range batch {
			o.done <- errs[i]
		}
		return
	}
	var wait []syncWaiter
	for i, o := range batch {
		if o.lazy && errs[i] == nil {
			o.done <- nil
			continue
		}
		wait = append(wait, syncWaiter{done: o.done, err: errs[i]})
	}
	s.wmu.Lock()
	s.startSyncerLocked()
	s.syncWait = append(s.syncWait, wait...)
	if cp != nil {
		s.syncCP = cp
	}
	stopped := s.syncStopped
	s.wmu.Unlock()
	if stopped {
		// A write after Close began: nobody else will fsync.
		s.syncOnce()
		return
	}
	if len(wait) > 0 || cp != nil {
		s.signalAsync(s.syncNow)
	} else {
		s.signalAsync(s.syncSoon)
	}
}

// startSyncerLocked starts the syncer (wmu held) unless it runs or Close
// has begun.
func (s *DB) startSyncerLocked() {
	if !s.syncing {
		s.syncing = true
		go s.syncer()
	}
}

// syncer fsyncs the WAL: at once for a write that waits, else syncEvery
// after a commit, until Close, when it fsyncs what is left.
func (s *DB) syncer() {
	defer close(s.syncDone)
	for {
		select {
		case <-s.syncNow:
		case <-s.syncSoon:
			timer := time.NewTimer(syncEvery)
			select {
			case <-timer.C:
			case <-s.syncNow:
				timer.Stop()
			case <-s.stopSync:
				timer.Stop()
				s.syncOnce()
				return
			}
		case <-s.stopSync:
			s.syncOnce()
			return
		}
		s.syncOnce()
	}
}

// syncOnce fsyncs the WAL, which covers every commit made before it
// started, then tells the writes that waited for it and writes the newest
// signed checkpoint beside the database (never ahead of the events it
// signs, which a power loss could otherwise take).
func (s *DB) syncOnce() {
	s.wmu.Lock()
	wait, cp, report, committed := s.syncWait, s.syncCP, s.asyncErr, s.committedSeq
	s.syncWait, s.syncCP = nil, nil
	s.wmu.Unlock()
	err := s.fsyncWAL()
	if err == nil && s.journal != nil {
		if err = s.journal.Sync(); err != nil {
			err = fmt.Errorf("sync record log: %w", err)
		}
	}
	if err == nil {
		// The WAL on disk holds every entry up to committed: the log
		// may go if nothing was logged since.
		s.wmu.Lock()
		err = s.truncateJournalLocked(committed)
		s.wmu.Unlock()
	}
	if err != nil && len(wait) == 0 && report != nil {
		// Nobody waits to be told: the records stay in the WAL and the
		// next fsync tries again.
		report(err, 0, true)
	}
	if err == nil && cp != nil {
		s.writeCheckpointFile(cp)
	}
	for _, w := range wait {
		if w.err == nil {
			w.err = err
		}
		w.done <- w.err
	}
}

// fsyncWAL fsyncs the database's write-ahead log. fsync(2) acts on the
// file, not the descriptor: it writes out pages SQLite's connection wrote
// through its own. The log is opened anew each time because SQLite may
// remove it when its last connection closes. Under synchronous=NORMAL
// SQLite fsyncs the log before each checkpoint copies it into the
// database and the database after, so the log is all that may be unsynced.
func (s *DB) fsyncWAL() error {
	if s.beforeSync != nil {
		s.beforeSync()
	}
	f, err := os.OpenFile(s.path+"-wal", os.O_RDWR, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("sync store log: %w", err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync store log: %w", err)
	}
	return nil
}
