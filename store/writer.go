package store

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/loopgate/loopgate/store/event"
)

// op is one caller's write: optional row changes plus events to append, all
// or nothing. Ops are committed in groups (group commit): the first caller to
// find no commit in progress commits every op queued meanwhile in one
// transaction, so concurrent sessions share one fsync.
type op struct {
	apply  func(ctx context.Context, tx *sql.Tx) error
	events []event.Event
	// lazy lets the op return once committed to the WAL, before the WAL
	// is fsynced (SyncNormal; see lazyEvents).
	lazy bool
	// checkpoint asks for a signed checkpoint at the end of the batch.
	checkpoint bool
	done       chan error
}

// checkpointEvery is how many events may follow the last signed checkpoint
// before the next is written (one is also written by Checkpoint at shutdown).
const checkpointEvery = 512

// write queues o and returns once it is durable (or failed): committed,
// and fsynced unless o is lazy (sync.go).
func (s *DB) write(ctx context.Context, o *op) error {
	o.done = make(chan error, 1)
	s.wmu.Lock()
	s.pending = append(s.pending, o)
	if s.committing {
		s.wmu.Unlock()
		select {
		case err := <-o.done:
			return err
		case <-ctx.Done():
			// The op may still commit; the caller must treat it as unknown.
			return ctx.Err()
		}
	}
	s.committing = true
	for len(s.pending) > 0 {
		batch, async, aops, report := s.pending, s.async, s.asyncOps, s.asyncErr
		s.pending, s.async, s.asyncOps = nil, nil, nil
		// Record log entries up to queued are in async or committed.
		queued, mark := s.queuedSeq, s.queuedSeq > s.committedSeq
		if len(async) > 0 {
			// The next batch is likely as big: producers fill the spare
			// buffer (the one committed last time) while this one is
			// written, not a doubling series of new ones.
			s.async, s.asyncSpare = s.asyncSpare[:0], nil
			if cap(s.async) < cap(async) {
				s.async = make([]event.Event, 0, cap(async))
			}
		}
		s.asyncRoom.Broadcast()
		s.wmu.Unlock()
		var logged int64
		if mark {
			logged = queued
		}
		ok := s.commit(context.WithoutCancel(ctx), async, aops, batch, report, logged)
		s.wmu.Lock()
		switch {
		case !ok:
			// Keep them, ahead of anything queued since.
			for i := range s.asyncOps {
				s.asyncOps[i].at += len(async)
			}
			s.async = append(async, s.async...)
			s.asyncOps = append(aops, s.asyncOps...)
		case len(async) > 0:
			clear(async) // holds no strings alive while spare
			s.asyncSpare = async[:0]
		}
	}
	s.committing = false
	s.wmu.Unlock()
	return <-o.done
}

// commit applies a batch in one transaction, after the queued async
// events and ops (each op right after the events queued before it). Each op
// runs inside a savepoint so one failing op fails alone; a failed async op
// is reported, as nobody waits for it. logged, if not 0, is the record log
// entry up to which the chain holds every logged event with this commit.
// It reports whether the transaction committed.
func (s *DB) commit(ctx context.Context, async []event.Event, aops []asyncOp, batch []*op, report func(error, int, bool), logged int64) (ok bool) {
	errs := make([]error, len(batch))
	fail := func(err error) {
		for _, o := range batch {
			o.done <- err
		}
	}
	tx, err := s.wconn.BeginTx(ctx, nil)
	if err != nil {
		fail(fmt.Errorf("begin: %w", err))
		return
	}
	head := s.head // tentative; becomes s.head only after commit
	head.touched = s.touched[:0]
	rows := s.rows
	defer rows.reset()
	added := 0 // async events chained so far
	addAsync := func(upTo int) error {
		for ; added < upTo; added++ {
			if err := rows.add(ctx, &head, async[added]); err != nil {
				return err
			}
		}
		return nil
	}
	aopErrs := make([]error, len(aops))
	for i, a := range aops {
		if err := addAsync(a.at); err != nil {
			tx.Rollback()
			fail(err)
			return
		}
		if aopErrs[i], err = s.apply(ctx, tx, rows, &head, a.o); err != nil {
			tx.Rollback()
			fail(err)
			return
		}
	}
	if err := addAsync(len(async)); err != nil {
		tx.Rollback()
		fail(err)
		return
	}
	for i, o := range batch {
		if o.apply == nil {
			// Events only: an insert cannot fail but for the database
			// itself failing, which fails the whole batch.
			for _, e := range o.events {
				if err := rows.add(ctx, &head, e); err != nil {
					tx.Rollback()
					fail(err)
					return
				}
			}
			continue
		}
		if errs[i], err = s.apply(ctx, tx, rows, &head, o); err != nil {
			tx.Rollback()
			fail(err)
			return
		}
	}
	if err := rows.flush(ctx); err != nil {
		tx.Rollback()
		fail(err)
		return
	}
	if err := insertSpans(ctx, tx.StmtContext(ctx, s.insertSpan), head.touched); err != nil {
		tx.Rollback()
		fail(err)
		return
	}
	s.touched = head.touched[:0]
	if logged > 0 {
		if err := markApplied(ctx, tx, logged); err != nil {
			tx.Rollback()
			fail(err)
			return
		}
	}
	want := head.sinceCheckpoint >= checkpointEvery
	for _, o := range batch {
		want = want || o.checkpoint && head.sinceCheckpoint > 0
	}
	var cp *Checkpoint
	if s.signer != nil && want {
		if cp, err = s.writeCheckpoint(ctx, tx, &head); err != nil {
			tx.Rollback()
			fail(err)
			return
		}
	}
	if err := tx.Commit(); err != nil {
		fail(fmt.Errorf("commit: %w", err))
		return
	}
	s.head = head
	if cp != nil {
		s.lastSig = cp.Sig
	}
	if logged > 0 {
		// Before the syncer hears of this commit.
		s.wmu.Lock()
		s.committedSeq = max(s.committedSeq, logged)
		s.wmu.Unlock()
	}
	s.afterCommit(batch, errs, cp)
	for i, err := range aopErrs {
		if err != nil && report != nil {
			report(err, len(aops[i].o.events), false)
		}
	}
	return true
}

// apply runs o inside a savepoint: its changes and events, or (opErr) none
// of them. err is set when the transaction itself is broken.
func (s *DB) apply(ctx context.Context, tx *sql.Tx, rows *eventRows, head *chainState, o *op) (opErr, err error) {
	if err := rows.flush(ctx); err != nil {
		return nil, err
	}
	if _, err := tx.ExecContext(ctx, "SAVEPOINT op"); err != nil {
		return nil, err
	}
	saved := *head
	opErr = func() error {
		if err := o.apply(ctx, tx); err != nil {
			return err
		}
		for _, e := range o.events {
			if err := rows.add(ctx, head, e); err != nil {
				return err
			}
		}
		return rows.flush(ctx)
	}()
	if opErr != nil {
		*head = saved
		rows.reset()
		if _, err := tx.ExecContext(ctx, "ROLLBACK TO op"); err != nil {
			return opErr, err
		}
	}
	if _, err := tx.ExecContext(ctx, "RELEASE op"); err != nil {
		return opErr, err
	}
	return opErr, nil
}

// A session's events are found through spans, not an index on events: one
// row per session per commit, [first, last] of its events in that commit
// (other sessions' events may lie between). Under load a commit carries
// thousands of events of a few sessions; an index entry per event cost
// more than the rest of the row's insert (2.2 of 5.2 µs here).

// touch is one event appended in the commit being built.
type touch struct {
	session string
	seq     int64
}

const insertSpanSQL = `INSERT INTO event_spans (session_id, first_seq, last_seq) VALUES (?, ?, ?)`

// insertSpans writes the spans of the events appended in this commit.
func insertSpans(ctx context.Context, ins *sql.Stmt, touched []touch) error {
	type span struct{ first, last int64 }
	var order []string
	spans := map[string]*span{}
	for _, t := range touched {
		if sp := spans[t.session]; sp != nil {
			sp.last = t.seq
			continue
		}
		spans[t.session] = &span{t.seq, t.seq}
		order = append(order, t.session)
	}
	for _, id := range order {
		if _, err := ins.ExecContext(ctx, id, spans[id].first, spans[id].last); err != nil {
			return fmt.Errorf("append event spans: %w", err)
		}
	}
	return nil
}

// AppendEvents appends events durably, in order, to the chain: under
// SyncNormal, records of allowed statements return once in the record log
// (journal.go: they survive the daemon's death), reach the chain with the
// next commit and the disk within syncEvery; any other event returns once
// committed and fsynced.
func (s *DB) AppendEvents(ctx context.Context, events ...event.Event) error {
	lazy := lazyEvents(events)
	if lazy && s.sync == SyncNormal && s.journalLock != nil {
		return s.appendLogged(events) // journal.go
	}
	return s.write(ctx, &op{events: events, lazy: lazy})
}

// loadHead reads the chain head at open.
func (s *DB) loadHead(ctx context.Context) error {
	var seq sql.NullInt64
	var hash sql.NullString
	err := s.db.QueryRowContext(ctx, `SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1`).Scan(&seq, &hash)
	if err == sql.ErrNoRows {
		s.head = chainState{hash: genesis}
		return nil
	}
	if err != nil {
		return fmt.Errorf("read chain head: %w", err)
	}
	h, err := unhex(hash.String)
	if err != nil {
		return fmt.Errorf("read chain head: %w", err)
	}
	var cpSeq int64
	s.db.QueryRowContext(ctx, `SELECT COALESCE(MAX(event_seq), 0) FROM checkpoints`).Scan(&cpSeq)
	s.head = chainState{seq: seq.Int64, hash: h, sinceCheckpoint: int(seq.Int64 - cpSeq)}
	return nil
}
