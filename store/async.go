package store

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/loopgate/loopgate/store/event"
)

// Asynchronous appends: for records that may trail the traffic they
// describe (a statement's result, statements under rules that say
// record: async). They are chained and committed in order with the next
// commit: either a durable write by anyone (which then carries them, ahead
// of its own events) or the flusher, asyncLinger after the first of them
// arrived. Under load one commit carries thousands of them instead of each
// session paying for its own.
const (
	// asyncLinger is how long a queued event may wait for company.
	asyncLinger = 20 * time.Millisecond
	// asyncBatch queued events are committed without waiting out the linger.
	asyncBatch = 4096
	// maxAsync bounds the queue: past it, AppendEventsAsync waits for the
	// disk (backpressure) rather than drop a record.
	maxAsync = 1 << 16
)

// AppendEventsAsync queues events to be appended to the chain soon, in
// order. It returns at once unless the queue is full. Events queued before
// a durable write (AppendEvents, CloseSession, Checkpoint, ...) are
// committed no later than that write; Close writes the rest. A failed
// commit keeps them queued for the next one.
func (s *DB) AppendEventsAsync(events ...event.Event) {
	if len(events) == 0 {
		return
	}
	s.wmu.Lock()
	for len(s.async) >= maxAsync {
		s.signalAsync(s.asyncNow)
		s.asyncRoom.Wait()
	}
	s.lingerLocked()
	s.async = append(s.async, events...)
	if len(s.async) >= asyncBatch {
		s.signalAsync(s.asyncNow)
	}
	s.wmu.Unlock()
}

// lingerLocked is called with wmu held before a record is queued: it
// starts the flusher if none runs (Close waits for it) and, when nothing
// was queued, the flusher's linger.
func (s *DB) lingerLocked() {
	if !s.flushing {
		s.flushing = true
		go s.flushAsync()
	}
	if len(s.async) == 0 && len(s.asyncOps) == 0 {
		s.signalAsync(s.asyncKick)
	}
}

// asyncOp is a write queued by CloseSessionAsync. It runs in the commit
// that carries the async events queued before it, right after them.
type asyncOp struct {
	at int // len(async) when it was queued
	o  *op
}

// CloseSessionAsync is CloseSession for callers that need not wait: the
// end is written, after everything the session queued before it, with the
// next commit (a linger at most). A daemon killed before that leaves the
// session open, and the next start marks it interrupted. A failure goes to
// the OnAsyncError function.
func (s *DB) CloseSessionAsync(id string, e event.End) {
	o, err := closeOp(id, e)
	s.wmu.Lock()
	report := s.asyncErr
	if err != nil {
		s.wmu.Unlock()
		if report != nil {
			report(err, 1, false)
		}
		return
	}
	o.done = make(chan error, 1) // nobody reads it
	s.lingerLocked()
	s.asyncOps = append(s.asyncOps, asyncOp{at: len(s.async), o: o})
	s.wmu.Unlock()
}

// SessionProgressAsync queues the byte counts of open session id so far,
// to be written with the next commit (a linger at most), so that a
// session the daemon never closed (kill -9) is marked interrupted with
// the counts last written rather than none. It changes only a session
// still open: queued after the session's end, it does nothing. The
// counts are not chained: the session's close event carries the final
// ones.
func (s *DB) SessionProgressAsync(id string, bytesUp, bytesDown int64) {
	o := &op{apply: func(ctx context.Context, tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, `UPDATE sessions SET bytes_up = ?, bytes_down = ? WHERE id = ? AND outcome = ?`,
			bytesUp, bytesDown, id, string(event.OutcomeOpen))
		if err != nil {
			return fmt.Errorf("record progress of session %s: %w", id, err)
		}
		return nil
	}, done: make(chan error, 1)} // nobody reads done
	s.wmu.Lock()
	s.lingerLocked()
	s.asyncOps = append(s.asyncOps, asyncOp{at: len(s.async), o: o})
	s.wmu.Unlock()
}

// OnAsyncError sets what is told when queued records are not written:
// a commit carrying them failed (kept: they stay queued for the next), or
// one queued session end failed on its own (not kept). Set it before use.
func (s *DB) OnAsyncError(f func(err error, events int, kept bool)) {
	s.wmu.Lock()
	s.asyncErr = f
	s.wmu.Unlock()
}

func (s *DB) signalAsync(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// flushAsync commits queued events a linger after the first arrives, until
// Close, which commits what is left.
func (s *DB) flushAsync() {
	defer close(s.flushDone)
	ctx := context.Background()
	for {
		select {
		case <-s.asyncKick:
		case <-s.asyncNow:
		case <-s.stopFlush:
			s.commitAsync(ctx)
			return
		}
		timer := time.NewTimer(asyncLinger)
		select {
		case <-timer.C:
		case <-s.asyncNow:
			timer.Stop()
		case <-s.stopFlush:
			timer.Stop()
			s.commitAsync(ctx)
			return
		}
		s.commitAsync(ctx)
	}
}

// commitAsync commits queued events, if any are left.
func (s *DB) commitAsync(ctx context.Context) {
	s.wmu.Lock()
	n, report := len(s.async)+len(s.asyncOps), s.asyncErr
	s.wmu.Unlock()
	if n == 0 {
		return
	}
	if err := s.write(ctx, &op{lazy: true}); err != nil && report != nil {
		report(err, n, true)
	}
}
