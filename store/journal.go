package store

import (
	"bufio"
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"

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
// Each entry is one line of JSON, {"seq":N,"events":[...]}, written under
// wmu in the order its events are queued. The commit that chains entries
// up to N records N in meta (records_applied) in the same transaction, so
// at Open the entries after it, and only those, are appended to the chain
// (a daemon killed before they were committed). The syncer fsyncs the log
// with the WAL, and empties it once every entry is committed and fsynced.

// journalEntry is one line of the record log.
type journalEntry struct {
	Seq    int64         `json:"seq"`
	Events []event.Event `json:"events"`
}

const appliedKey = "records_applied"

// openJournal opens the record log and appends to the chain what a
// previous daemon logged but never committed.
func (s *DB) openJournal(ctx context.Context) error {
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
			var e journalEntry
			if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
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
	b, err := json.Marshal(journalEntry{Seq: s.journalSeq + 1, Events: events})
	if err != nil {
		return err
	}
	if _, err := s.journal.Write(append(b, '\n')); err != nil {
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
