package store

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/loopgate/loopgate/store/event"
)

// The record log (<db>-records) is how an allowed statement's record is
// kept, under SyncNormal, before the statement is forwarded without a
// SQLite commit of its own: one write(2) of the events to a file in the
// kernel's page cache, which outlives the daemon's process as the WAL
// does, then the events join the async queue and reach the chain with the
// next commit (asyncLinger at most, or sooner with any durable write). A
// SQLite commit per statement cost about 50 µs of CPU and serialized the
// sessions on one writer (pgbench -S, one client: 0.45 of PgBouncer's TPS
// with it, 0.87 without).
//
// Each entry is one line, written under wmu in the order its events are
// queued: its sequence number, the number of events, then each event's
// fields, tab-separated, strings quoted as Go quotes them (so no raw tab
// or newline occurs inside one; encoding/json cost 13% of the daemon's
// CPU here). The commit that chains entries
// up to N records N in meta (records_applied) in the same transaction, so
// at Open the entries after it, and only those, are appended to the chain
// (a daemon killed before they were committed). The syncer fsyncs the log
// with the WAL, and empties it once every entry is committed and fsynced.

// journalEntry is one line of the record log.
type journalEntry struct {
	Seq    int64
	Events []event.Event
}

// eventFields is how many fields one event takes in a log line.
const eventFields = 13

// appendEntry appends e's line, newline included, to b.
func appendEntry(b []byte, e journalEntry) []byte {
	b = strconv.AppendInt(b, e.Seq, 10)
	b = append(b, '\t')
	b = strconv.AppendInt(b, int64(len(e.Events)), 10)
	for i := range e.Events {
		ev := &e.Events[i]
		b = append(b, '\t')
		b = strconv.AppendQuote(b, ev.SessionID)
		// The time has nothing to escape: quoted here, with no string
		// allocated for it (one per record, on the event loop).
		b = append(b, '\t', '"')
		b = ev.Time.AppendFormat(b, time.RFC3339Nano)
		b = append(b, '"')
		for _, f := range [...]string{string(ev.Kind), ev.Text, ev.Params,
			ev.Decision, ev.RuleID, ev.ApprovalID, ev.Tag} {
			b = append(b, '\t')
			b = strconv.AppendQuote(b, f)
		}
		for _, n := range [...]int64{int64(ev.Duration), ev.Rows, ev.Bytes} {
			b = append(b, '\t')
			b = strconv.AppendInt(b, n, 10)
		}
		b = append(b, '\t')
		b = strconv.AppendQuote(b, ev.Error)
	}
	return append(b, '\n')
}

// parseEntry reads one line (without its newline) written by appendEntry.
func parseEntry(line []byte) (journalEntry, error) {
	var e journalEntry
	f := strings.Split(string(line), "\t")
	bad := errors.New("malformed record log line")
	if len(f) < 2 {
		return e, bad
	}
	seq, err1 := strconv.ParseInt(f[0], 10, 64)
	n, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil || n < 0 || len(f) != 2+n*eventFields {
		return e, bad
	}
	e.Seq, e.Events = seq, make([]event.Event, n)
	for i := range n {
		g := f[2+i*eventFields : 2+(i+1)*eventFields]
		var str [10]string
		for j, k := range [...]int{0, 1, 2, 3, 4, 5, 6, 7, 8, 12} {
			v, err := strconv.Unquote(g[k])
			if err != nil {
				return e, bad
			}
			str[j] = v
		}
		var num [3]int64
		for j := range num {
			v, err := strconv.ParseInt(g[9+j], 10, 64)
			if err != nil {
				return e, bad
			}
			num[j] = v
		}
		at, err := time.Parse(time.RFC3339Nano, str[1])
		if err != nil {
			return e, bad
		}
		e.Events[i] = event.Event{SessionID: str[0], Time: at, Kind: event.Kind(str[2]), Text: str[3], Params: str[4],
			Decision: str[5], RuleID: str[6], ApprovalID: str[7], Tag: str[8], Duration: time.Duration(num[0]),
			Rows: num[1], Bytes: num[2], Error: str[9]}
	}
	return e, nil
}

const appliedKey = "records_applied"

// openJournal opens the record log and appends to the chain what a
// previous daemon logged but never committed. The log is the writer's
// (the daemon's): only the process holding an exclusive flock on the
// database file (SQLite's own locks are fcntl locks, which flock does not
// touch) replays or writes it. Readers (Options.Reader: the CLI while the
// daemon runs) never ask for it; a second writer is refused, rather than
// silently running without the log.
func (s *DB) openJournal(ctx context.Context) error {
	lock, err := os.Open(s.path)
	if err != nil {
		return fmt.Errorf("open record log: %w", err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		lock.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return fmt.Errorf("store %s is in use by another writer (a second daemon?)", s.path)
		}
		return fmt.Errorf("lock record log: %w", err)
	}
	s.journalLock = lock
	f, err := os.OpenFile(s.path+"-records", os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open record log: %w", err)
	}
	s.journal = f
	old, err := os.ReadFile(s.path + "-records.old")
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("read record log: %w", err)
	}
	var applied int64
	var v string
	switch err := s.db.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = ?`, appliedKey).Scan(&v); {
	case errors.Is(err, sql.ErrNoRows):
	case err != nil:
		return fmt.Errorf("read record log position: %w", err)
	default:
		if applied, err = strconv.ParseInt(v, 10, 64); err != nil {
			return fmt.Errorf("read record log position %q: %w", v, err)
		}
	}
	var lost []event.Event
	last := applied
	for _, r := range []io.Reader{bytes.NewReader(old), f} {
		sc := bufio.NewScanner(r)
		sc.Buffer(nil, 1<<30)
		for sc.Scan() {
			e, err := parseEntry(sc.Bytes())
			if err != nil {
				break // a torn last line (power loss): nothing after it was acknowledged
			}
			if e.Seq > last {
				lost = append(lost, e.Events...)
				last = e.Seq
			}
		}
		if err := sc.Err(); err != nil {
			return fmt.Errorf("read record log: %w", err)
		}
	}
	if len(old) > 0 {
		s.oldSeq = last
	}
	s.wmu.Lock()
	s.journalSeq, s.queuedSeq, s.committedSeq = last, last, applied
	s.wmu.Unlock()
	if len(lost) > 0 {
		// One commit (fsynced): the events and the position past them.
		if err := s.write(ctx, &op{events: lost}); err != nil {
			return fmt.Errorf("append logged records: %w", err)
		}
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return s.truncateJournalLocked(s.committedSeq)
}

// journalEvents logs events (wmu held) and queues them: once it returns
// they survive the daemon's death.
func (s *DB) journalEvents(events []event.Event) error {
	s.journalBuf = appendEntry(s.journalBuf[:0], journalEntry{Seq: s.journalSeq + 1, Events: events})
	_, err := s.journal.Write(s.journalBuf)
	if cap(s.journalBuf) > 64<<10 {
		s.journalBuf = nil
	}
	if err != nil {
		return fmt.Errorf("write record log: %w", err)
	}
	s.journalSeq++
	return nil
}

// appendLogged is AppendEvents for allowed statements' records under
// SyncNormal: logged (one write), then queued for the next commit.
func (s *DB) appendLogged(events []event.Event) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	for len(s.async) >= maxAsync {
		s.signalAsync(s.asyncNow)
		s.asyncRoom.Wait()
	}
	return s.logLocked(events)
}

// AppendEventsNow is AppendEvents for a caller that must not wait (an
// event loop serving other sessions): it writes events as AppendEvents
// does, and reports true, only when that is one write to the record log
// taken at once: allowed statements' records under SyncNormal, wmu free
// (no other writer inside it; a commit in progress does not hold it) and
// room in the queue. Otherwise it writes nothing and reports false, and
// the caller calls AppendEvents where it may wait. An error means the
// write was tried and failed, as AppendEvents would have.
func (s *DB) AppendEventsNow(events ...event.Event) (bool, error) {
	if s.sync != SyncNormal || s.journalLock == nil || !lazyEvents(events) {
		return false, nil
	}
	if !s.wmu.TryLock() {
		return false, nil
	}
	defer s.wmu.Unlock()
	if len(s.async) >= maxAsync {
		return false, nil
	}
	return true, s.logLocked(events)
}

// logLocked (wmu held, room in the queue) logs events and queues them.
func (s *DB) logLocked(events []event.Event) error {
	if err := s.journalEvents(events); err != nil {
		return err
	}
	s.lingerLocked()
	s.async = append(s.async, events...)
	s.queuedSeq = s.journalSeq
	if len(s.async) >= asyncBatch {
		s.signalAsync(s.asyncNow)
	}
	return nil
}

// markApplied records in tx that log entries up to seq are in the chain.
func markApplied(ctx context.Context, tx *sql.Tx, seq int64) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO meta(key, value) VALUES (?, ?)
		ON CONFLICT(key) DO UPDATE SET value = excluded.value`, appliedKey, strconv.FormatInt(seq, 10))
	if err != nil {
		return fmt.Errorf("record log position: %w", err)
	}
	return nil
}

// journalRotate is the size past which a record log that never empties
// (the sessions never pause) is set aside as <db>-records.old, deleted once
// the chain holds all of it, and a new one begun.
const journalRotate = 4 << 20

// truncateJournalLocked (wmu held) drops what of the record log the chain
// holds, up to committed as of the last fsync of the WAL: it empties the
// log when the chain holds all of it, deletes the set-aside log when it
// holds that, and sets a large log aside.
func (s *DB) truncateJournalLocked(committed int64) error {
	if s.journal == nil {
		return nil
	}
	if s.oldSeq > 0 && committed >= s.oldSeq {
		if err := os.Remove(s.path + "-records.old"); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove record log: %w", err)
		}
		s.oldSeq = 0
	}
	st, err := s.journal.Stat()
	if err != nil {
		return fmt.Errorf("record log: %w", err)
	}
	switch {
	case st.Size() == 0:
	case committed >= s.journalSeq:
		if err := s.journal.Truncate(0); err != nil {
			return fmt.Errorf("empty record log: %w", err)
		}
	case s.oldSeq == 0 && st.Size() > journalRotate:
		if err := os.Rename(s.path+"-records", s.path+"-records.old"); err != nil {
			return fmt.Errorf("set record log aside: %w", err)
		}
		f, err := os.OpenFile(s.path+"-records", os.O_RDWR|os.O_CREATE|os.O_APPEND|os.O_TRUNC, 0o600)
		if err != nil {
			// Keep logging to the set-aside file; it goes when all of it is chained.
			return fmt.Errorf("open record log: %w", err)
		}
		s.journal.Close()
		s.journal, s.oldSeq = f, s.journalSeq
	}
	return nil
}
