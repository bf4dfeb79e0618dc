package store

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/loopgate/loopgate/store/event"
)

// Problem is the first thing audit verify found wrong.
type Problem struct {
	// Kind is edited, deleted, reordered, checkpoint, session or pruned
	// (a prune mark that does not verify).
	Kind string `json:"kind"`
	// Seq is the event concerned (0 if none).
	Seq    int64  `json:"seq,omitempty"`
	Detail string `json:"detail"`
}

func (p *Problem) Error() string {
	if p.Seq > 0 {
		return fmt.Sprintf("event %d: %s: %s", p.Seq, p.Kind, p.Detail)
	}
	return fmt.Sprintf("%s: %s", p.Kind, p.Detail)
}

// VerifyReport sums up a verification.
type VerifyReport struct {
	Events      int64 `json:"events"`
	Checkpoints int   `json:"checkpoints"`
	Sessions    int64 `json:"sessions"`
	// PrunedThrough is the last event a signed prune mark says was
	// removed on purpose (store prune); the chain is checked from the
	// event after it. 0: never pruned.
	PrunedThrough int64    `json:"pruned_through,omitempty"`
	Problem       *Problem `json:"problem,omitempty"`
}

// VerifyOptions tune VerifyWith.
type VerifyOptions struct {
	// Progress, if set, is called now and then from the verifying
	// goroutine with the events checked so far and the number to check.
	Progress func(done, total int64)
}

// progressEvery is how many rows pass between calls of a Progress func.
const progressEvery = 4096

// Verify walks the event chain and checks every hash, every link, every
// signed checkpoint (with pub; nil uses the key recorded in the store, which
// an attacker could replace: pass the daemon's key file's key when you have
// it), the checkpoint file beside the database, and that every sessions row
// matches the events that recorded it. It stops at the first problem. An
// error is returned only when verification could not run.
func (s *DB) Verify(ctx context.Context, pub ed25519.PublicKey) (VerifyReport, error) {
	return s.VerifyWith(ctx, pub, VerifyOptions{})
}

// VerifyWith is Verify with options. It streams the events and checkpoints:
// memory does not grow with their number.
func (s *DB) VerifyWith(ctx context.Context, pub ed25519.PublicKey, opts VerifyOptions) (VerifyReport, error) {
	var rep VerifyReport
	if pub == nil {
		var hexPub string
		err := s.db.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = 'checkpoint_pubkey'`).Scan(&hexPub)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return rep, err
		}
		if b, err := unhex(hexPub); err == nil && len(b) == ed25519.PublicKeySize {
			pub = b
		}
	}
	mark, err := s.pruneMark(ctx)
	if err != nil {
		return rep, err
	}
	prev, prevSig := genesis, ""
	var last int64
	if mark != nil {
		// The events and checkpoints up to the mark were removed on
		// purpose (any a prune left behind are skipped): the chain goes
		// on from the hash it signed.
		switch {
		case pub == nil:
			rep.Problem = &Problem{Kind: "pruned", Detail: "prune mark present but no public key to check it"}
		case !mark.Verify(pub):
			rep.Problem = &Problem{Kind: "pruned", Detail: fmt.Sprintf("prune mark through event %d: bad signature (forged or edited)", mark.EventSeq)}
		}
		if prev, err = unhex(mark.Hash); err != nil && rep.Problem == nil {
			rep.Problem = &Problem{Kind: "pruned", Detail: "prune mark: bad hash"}
		}
		if rep.Problem != nil {
			return rep, nil
		}
		prevSig, last, rep.PrunedThrough = mark.CheckpointSig, mark.EventSeq, mark.EventSeq
	}
	// The checkpoints are streamed twice: their own chain first, then
	// beside the events, each compared with the event it signs.
	cps, err := s.openCheckpoints(ctx, last)
	if err != nil {
		return rep, err
	}
	var newest *Checkpoint
	for cp := cps.next(); cp != nil; cp = cps.next() {
		switch {
		case cp.PrevSig != prevSig:
			rep.Problem = &Problem{Kind: "checkpoint", Detail: fmt.Sprintf("checkpoint %d does not follow the previous one (deleted or reordered checkpoint)", cp.ID)}
		case pub == nil:
			rep.Problem = &Problem{Kind: "checkpoint", Detail: "checkpoints present but no public key to check them"}
		case !cp.Verify(pub):
			rep.Problem = &Problem{Kind: "checkpoint", Detail: fmt.Sprintf("checkpoint %d: bad signature", cp.ID)}
		}
		if rep.Problem != nil {
			cps.close()
			return rep, nil
		}
		prevSig = cp.Sig
		rep.Checkpoints++
		newest = cp
	}
	if err := cps.close(); err != nil {
		return rep, err
	}
	if p, err := s.checkFile(ctx, rep.Checkpoints, last, mark); err != nil || p != nil {
		rep.Problem = p
		return rep, err
	}
	if cps, err = s.openCheckpoints(ctx, last); err != nil {
		return rep, err
	}
	defer cps.close()
	signed := cps.next()

	var total int64
	if opts.Progress != nil {
		s.db.QueryRowContext(ctx, `SELECT COALESCE(MAX(seq), 0) FROM events`).Scan(&total)
		total -= last
		opts.Progress(0, total)
	}
	rows, err := s.db.QueryContext(ctx, `SELECT seq, session_id, time, kind, text, params, decision, rule_id,
		approval_id, tag, duration_ns, rows, bytes, error, prev_hash, hash FROM events WHERE seq > ? ORDER BY seq`, last)
	if err != nil {
		return rep, fmt.Errorf("read events: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			seq           int64
			c             canonicalEvent
			prevHex, hHex string
		)
		if err := rows.Scan(&seq, &c.Session, &c.Time, &c.Kind, &c.Text, &c.Params, &c.Decision, &c.Rule,
			&c.Approval, &c.Tag, &c.DurationNS, &c.Rows, &c.Bytes, &c.Error, &prevHex, &hHex); err != nil {
			return rep, fmt.Errorf("read events: %w", err)
		}
		stored, _ := unhex(hHex)
		storedPrev, _ := unhex(prevHex)
		switch {
		case seq != last+1:
			rep.Problem = &Problem{Kind: "deleted", Seq: last + 1, Detail: fmt.Sprintf("events %d to %d are missing", last+1, seq-1)}
		case !bytes.Equal(chainHash(storedPrev, c), stored):
			rep.Problem = &Problem{Kind: "edited", Seq: seq, Detail: "content does not match its hash"}
		case !bytes.Equal(storedPrev, prev):
			rep.Problem = &Problem{Kind: "reordered", Seq: seq, Detail: fmt.Sprintf("does not follow event %d (moved, or events between were removed)", seq-1)}
		}
		for signed != nil && signed.EventSeq < seq {
			signed = cps.next()
		}
		for ; signed != nil && signed.EventSeq == seq; signed = cps.next() {
			if rep.Problem == nil && signed.Hash != hHex {
				rep.Problem = &Problem{Kind: "checkpoint", Seq: seq, Detail: fmt.Sprintf("checkpoint %d signed a different hash for this event", signed.ID)}
			}
		}
		if rep.Problem != nil {
			return rep, nil
		}
		if c.Kind == string(event.KindSessionOpen) || c.Kind == string(event.KindSessionClose) {
			if p := s.checkSessionRow(ctx, seq, c); p != nil {
				rep.Problem = p
				return rep, nil
			}
		}
		prev, last = stored, seq
		rep.Events++
		if opts.Progress != nil && rep.Events%progressEvery == 0 {
			opts.Progress(rep.Events, total)
		}
	}
	if err := rows.Err(); err != nil {
		return rep, fmt.Errorf("read events: %w", err)
	}
	if err := cps.close(); err != nil {
		return rep, err
	}
	if newest != nil && newest.EventSeq > last {
		rep.Problem = &Problem{Kind: "checkpoint", Seq: last + 1, Detail: fmt.Sprintf("checkpoint %d covers event %d but the log ends at %d: the tail was deleted", newest.ID, newest.EventSeq, last)}
		return rep, nil
	}
	// Every session row must have been recorded by an event.
	err = s.db.QueryRowContext(ctx, `SELECT COUNT(*) FROM sessions`).Scan(&rep.Sessions)
	if err != nil {
		return rep, err
	}
	var orphan string
	err = s.db.QueryRowContext(ctx, `SELECT id FROM sessions WHERE id NOT IN
		(SELECT session_id FROM events WHERE kind = ?) LIMIT 1`, string(event.KindSessionOpen)).Scan(&orphan)
	if err == nil {
		rep.Problem = &Problem{Kind: "session", Detail: fmt.Sprintf("session %s has no session_open event (inserted behind the daemon's back)", orphan)}
	}
	return rep, nil
}

// checkSessionRow compares a session row with the snapshot its event holds.
func (s *DB) checkSessionRow(ctx context.Context, seq int64, c canonicalEvent) *Problem {
	sess, err := s.Session(ctx, c.Session)
	if errors.Is(err, ErrNotFound) {
		return &Problem{Kind: "session", Seq: seq, Detail: fmt.Sprintf("session %s was deleted from the sessions table", c.Session)}
	}
	if err != nil {
		return &Problem{Kind: "session", Seq: seq, Detail: err.Error()}
	}
	var got, want []byte
	if c.Kind == string(event.KindSessionOpen) {
		got, _ = json.Marshal(openSnapshot(sess.Session))
	} else {
		got, _ = json.Marshal(closeSnapshot(sess.End))
	}
	want = []byte(c.Params)
	if c.Kind == string(event.KindSessionOpen) || sess.Outcome != event.OutcomeOpen {
		if !bytes.Equal(got, want) {
			return &Problem{Kind: "session", Seq: seq, Detail: fmt.Sprintf("session %s row differs from what was recorded: row %s, recorded %s", c.Session, got, want)}
		}
	}
	return nil
}

// cpCursor streams checkpoints in id order.
type cpCursor struct {
	rows *sql.Rows
	err  error
}

// openCheckpoints streams the checkpoints past event after, oldest first.
func (s *DB) openCheckpoints(ctx context.Context, after int64) (*cpCursor, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, event_seq, hash, time, prev_sig, sig FROM checkpoints
		WHERE event_seq > ? ORDER BY id`, after)
	if err != nil {
		return nil, fmt.Errorf("read checkpoints: %w", err)
	}
	return &cpCursor{rows: rows}, nil
}

// next returns the next checkpoint, a new value each time; nil at the end
// or on an error, which close returns.
func (c *cpCursor) next() *Checkpoint {
	if c.err != nil || !c.rows.Next() {
		return nil
	}
	cp := &Checkpoint{}
	if c.err = c.rows.Scan(&cp.ID, &cp.EventSeq, &cp.Hash, &cp.Time, &cp.PrevSig, &cp.Sig); c.err != nil {
		return nil
	}
	return cp
}

// close ends the stream and returns the first error met. It is idempotent.
func (c *cpCursor) close() error {
	c.rows.Close()
	if c.err == nil {
		c.err = c.rows.Err()
	}
	if c.err != nil && !errors.Is(c.err, errClosed) {
		return fmt.Errorf("read checkpoints: %w", c.err)
	}
	c.err = errClosed
	return nil
}

var errClosed = errors.New("closed")

// checkFile compares the checkpoint file beside the database with the table,
// which holds n checkpoints past event after (or, for a checkpoint since
// pruned, with the prune mark).
func (s *DB) checkFile(ctx context.Context, n int, after int64, mark *PruneMark) (*Problem, error) {
	b, err := os.ReadFile(s.path + ".checkpoint")
	if errors.Is(err, fs.ErrNotExist) {
		if n > 0 || mark != nil && mark.CheckpointID > 0 {
			return &Problem{Kind: "checkpoint", Detail: "checkpoint file " + s.path + ".checkpoint is missing"}, nil
		}
		return nil, nil
	}
	if err != nil {
		return &Problem{Kind: "checkpoint", Detail: err.Error()}, nil
	}
	var f Checkpoint
	if err := json.Unmarshal(b, &f); err != nil {
		return &Problem{Kind: "checkpoint", Detail: "checkpoint file unreadable: " + err.Error()}, nil
	}
	var cp Checkpoint
	err = s.db.QueryRowContext(ctx, `SELECT id, event_seq, hash, time, prev_sig, sig FROM checkpoints
		WHERE id = ? AND event_seq > ?`, f.ID, after).Scan(&cp.ID, &cp.EventSeq, &cp.Hash, &cp.Time, &cp.PrevSig, &cp.Sig)
	switch {
	case err == nil:
		if cp != f {
			return &Problem{Kind: "checkpoint", Detail: fmt.Sprintf("checkpoint %d differs from the checkpoint file", cp.ID)}, nil
		}
		return nil, nil
	case !errors.Is(err, sql.ErrNoRows):
		return nil, fmt.Errorf("read checkpoints: %w", err)
	}
	if mark != nil && f.ID <= mark.CheckpointID && f.EventSeq <= mark.EventSeq {
		// Pruned since: the mark signed the last checkpoint removed.
		if f.ID == mark.CheckpointID && f.Sig != mark.CheckpointSig {
			return &Problem{Kind: "checkpoint", Detail: fmt.Sprintf("checkpoint %d differs from the one the prune mark signed", f.ID)}, nil
		}
		return nil, nil
	}
	return &Problem{Kind: "checkpoint", Detail: fmt.Sprintf("checkpoint %d (event %d) from the checkpoint file is not in the store: checkpoints and events were deleted", f.ID, f.EventSeq)}, nil
}
