package store

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/loopgate/loopgate/store/event"
)

// Pruning removes the oldest part of the event log: every event up to a
// cut, and the sessions recorded entirely before it. The chain stays
// verifiable because a prune mark, signed with the checkpoint key, says
// "events up to N were removed on purpose, and event N had hash H": audit
// verify checks the mark, then the chain from event N+1 on as before. Without
// the key nobody can write a mark, so deleting the head of the log by hand
// still shows as deleted events.
//
// The cut is the last event such that every session opened up to it also
// closed up to it, before the cutoff time, and it is never the newest event
// (a daemon's next checkpoint signs a later one). The events up to the cut
// are checked against their hashes first: a prune never signs over a
// broken chain.

// metaPruneMark is the meta key holding the newest prune mark as JSON.
const metaPruneMark = "prune_mark"

// pruneBatch is how many rows one transaction deletes: a daemon writing
// meanwhile waits at most that long for SQLite's write lock.
const pruneBatch = 5000

// PruneMark is the signed statement that the events up to EventSeq were
// pruned.
type PruneMark struct {
	// EventSeq is the last event removed; Hash is its hash, which event
	// EventSeq+1 links to.
	EventSeq int64  `json:"event_seq"`
	Hash     string `json:"hash"`
	// Before is the cutoff the operator asked for (RFC 3339).
	Before string `json:"before"`
	// Time is when the prune ran.
	Time string `json:"time"`
	// CheckpointID and CheckpointSig are the last signed checkpoint removed
	// (0 and "" if none): the next checkpoint signs on from it.
	CheckpointID  int64  `json:"checkpoint_id"`
	CheckpointSig string `json:"checkpoint_sig"`
	// PrevSig is the previous prune mark's signature ("" for the first).
	PrevSig string `json:"prev_sig"`
	Sig     string `json:"sig"`
}

func (m *PruneMark) message() []byte {
	return []byte("loopgate-prune-v1\n" + strconv.FormatInt(m.EventSeq, 10) + "\n" + m.Hash + "\n" + m.Before + "\n" +
		m.Time + "\n" + strconv.FormatInt(m.CheckpointID, 10) + "\n" + m.CheckpointSig + "\n" + m.PrevSig + "\n")
}

// Verify checks the mark's signature.
func (m *PruneMark) Verify(pub ed25519.PublicKey) bool {
	sig, err := hex.DecodeString(m.Sig)
	return err == nil && ed25519.Verify(pub, m.message(), sig)
}

// pruneMark reads the newest prune mark; nil if the store was never pruned.
func (s *DB) pruneMark(ctx context.Context) (*PruneMark, error) {
	var v string
	err := s.db.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = ?`, metaPruneMark).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read prune mark: %w", err)
	}
	m := &PruneMark{}
	if err := json.Unmarshal([]byte(v), m); err != nil {
		// Verify reports it: the mark is signed, so a bad one is tampering.
		return &PruneMark{Sig: "unreadable"}, nil
	}
	return m, nil
}

// PruneReport says what a prune removed.
type PruneReport struct {
	// Through is the last event removed (0: nothing was); Events and
	// Sessions count what was removed.
	Through  int64 `json:"through"`
	Events   int64 `json:"events"`
	Sessions int64 `json:"sessions"`
	// HeldBy names a session that was still open at the cutoff, or
	// opened before it and ended after: the cut stops before it.
	HeldBy string `json:"held_by,omitempty"`
}

// Prune removes the events recorded before before, and the sessions they
// belong to, signing a prune mark with key (the checkpoint key: the one
// whose public half audit verify trusts). It runs beside a daemon writing
// to the store, in small transactions. It refuses when the events it would
// remove do not verify. A prune interrupted part way is finished by the
// next; verify accepts the store meanwhile.
func (s *DB) Prune(ctx context.Context, before time.Time, key ed25519.PrivateKey) (PruneReport, error) {
	var rep PruneReport
	pub := key.Public().(ed25519.PublicKey)
	var have string
	err := s.db.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = 'checkpoint_pubkey'`).Scan(&have)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return rep, fmt.Errorf("prune: %w", err)
	}
	if have != "" && have != hex.EncodeToString(pub) {
		return rep, fmt.Errorf("prune: the key does not match the key this store was signed with (%s...)", have[:16])
	}
	old, err := s.pruneMark(ctx)
	if err != nil {
		return rep, err
	}
	start, prev := int64(0), genesis
	var prevSig string
	if old != nil {
		if !old.Verify(pub) {
			return rep, fmt.Errorf("prune: the store's prune mark does not verify; run audit verify")
		}
		if prev, err = unhex(old.Hash); err != nil {
			return rep, fmt.Errorf("prune: bad prune mark hash: %w", err)
		}
		start, prevSig = old.EventSeq, old.Sig
	}
	cut, cutHash, held, err := s.findCut(ctx, start, prev, before)
	if err != nil {
		return rep, err
	}
	rep.HeldBy = held
	if cut <= start {
		// Nothing new to remove; finish what an interrupted prune left.
		if old != nil {
			if err := s.removeThrough(ctx, old.EventSeq, &rep); err != nil {
				return rep, err
			}
		}
		return rep, nil
	}
	mark := &PruneMark{EventSeq: cut, Hash: hexs(cutHash), Before: fmtTime(before), Time: fmtTime(time.Now()), PrevSig: prevSig}
	if old != nil {
		mark.CheckpointID, mark.CheckpointSig = old.CheckpointID, old.CheckpointSig
	}
	var cpID sql.NullInt64
	var cpSig sql.NullString
	err = s.db.QueryRowContext(ctx, `SELECT id, sig FROM checkpoints WHERE event_seq <= ? ORDER BY id DESC LIMIT 1`, cut).Scan(&cpID, &cpSig)
	switch {
	case errors.Is(err, sql.ErrNoRows):
	case err != nil:
		return rep, fmt.Errorf("prune: read checkpoints: %w", err)
	default:
		mark.CheckpointID, mark.CheckpointSig = cpID.Int64, cpSig.String
	}
	mark.Sig = hex.EncodeToString(ed25519.Sign(key, mark.message()))
	b, _ := json.Marshal(mark)
	// The mark first: once it is in, what it covers may go in any order.
	if err := s.replaceMark(ctx, old, b); err != nil {
		return rep, err
	}
	rep.Through = cut
	return rep, s.removeThrough(ctx, cut, &rep)
}

// replaceMark writes the mark b in place of old (nil: none), unless another
// prune (the daemon's retention, another operator) changed it meanwhile.
func (s *DB) replaceMark(ctx context.Context, old *PruneMark, b []byte) error {
	tx, err := s.db.BeginTx(ctx, nil) // _txlock=immediate: the write lock now
	if err != nil {
		return fmt.Errorf("prune: write mark: %w", err)
	}
	defer tx.Rollback()
	var have string
	err = tx.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = ?`, metaPruneMark).Scan(&have)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("prune: write mark: %w", err)
	}
	var cur *PruneMark
	if have != "" {
		cur = &PruneMark{}
		json.Unmarshal([]byte(have), cur)
	}
	if (cur == nil) != (old == nil) || cur != nil && cur.Sig != old.Sig {
		return errors.New("prune: another prune ran meanwhile; run it again")
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO meta(key, value) VALUES (?, ?)
		ON CONFLICT(key) DO UPDATE SET value = excluded.value`, metaPruneMark, string(b)); err != nil {
		return fmt.Errorf("prune: write mark: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("prune: write mark: %w", err)
	}
	return nil
}

// findCut walks the events after start (whose hash is prev) recorded before
// before, checking each against its hash, and returns the last one at which
// no session is open, with its hash. held names the session that stopped
// the cut from going further, if one did.
func (s *DB) findCut(ctx context.Context, start int64, prev []byte, before time.Time) (cut int64, hash []byte, held string, err error) {
	var newest int64
	if err := s.db.QueryRowContext(ctx, `SELECT COALESCE(MAX(seq), 0) FROM events`).Scan(&newest); err != nil {
		return 0, nil, "", fmt.Errorf("prune: %w", err)
	}
	rows, err := s.db.QueryContext(ctx, `SELECT seq, session_id, time, kind, text, params, decision, rule_id,
		approval_id, tag, duration_ns, rows, bytes, error, prev_hash, hash FROM events WHERE seq > ? AND seq < ? ORDER BY seq`,
		start, newest)
	if err != nil {
		return 0, nil, "", fmt.Errorf("prune: read events: %w", err)
	}
	defer rows.Close()
	cut, hash = start, prev
	open := map[string]int64{} // session: its session_open event
	last := start
	for rows.Next() {
		var (
			seq           int64
			c             canonicalEvent
			prevHex, hHex string
		)
		if err := rows.Scan(&seq, &c.Session, &c.Time, &c.Kind, &c.Text, &c.Params, &c.Decision, &c.Rule,
			&c.Approval, &c.Tag, &c.DurationNS, &c.Rows, &c.Bytes, &c.Error, &prevHex, &hHex); err != nil {
			return 0, nil, "", fmt.Errorf("prune: read events: %w", err)
		}
		stored, _ := unhex(hHex)
		storedPrev, _ := unhex(prevHex)
		if seq != last+1 || !bytes.Equal(storedPrev, prev) || !bytes.Equal(chainHash(storedPrev, c), stored) {
			return 0, nil, "", fmt.Errorf("prune: the chain does not verify at event %d; not pruning over it (run audit verify)", seq)
		}
		prev, last = stored, seq
		at, err := parseTime(c.Time)
		if err != nil {
			return 0, nil, "", fmt.Errorf("prune: event %d: %w", seq, err)
		}
		if !at.Before(before) {
			break
		}
		switch event.Kind(c.Kind) {
		case event.KindSessionOpen:
			open[c.Session] = seq
		case event.KindSessionClose:
			delete(open, c.Session)
		}
		if len(open) == 0 {
			cut, hash = seq, stored
		}
	}
	if err := rows.Err(); err != nil {
		return 0, nil, "", fmt.Errorf("prune: read events: %w", err)
	}
	first := int64(-1)
	for id, seq := range open {
		if first < 0 || seq < first {
			first, held = seq, id
		}
	}
	return cut, hash, held, nil
}

// removeThrough deletes the events up to cut, the checkpoints that sign
// them, and the sessions opened up to it with their approvals and spans:
// pruneBatch events per transaction, each with the sessions they opened.
func (s *DB) removeThrough(ctx context.Context, cut int64, rep *PruneReport) error {
	var lo int64
	if err := s.db.QueryRowContext(ctx, `SELECT COALESCE(MIN(seq), 1) - 1 FROM events`).Scan(&lo); err != nil {
		return fmt.Errorf("prune: %w", err)
	}
	for ; lo < cut; lo += pruneBatch {
		hi := min(lo+pruneBatch, cut)
		if err := s.removeBatch(ctx, lo, hi, cut, rep); err != nil {
			return err
		}
	}
	if _, err := s.db.ExecContext(ctx, `DELETE FROM checkpoints WHERE event_seq <= ?`, cut); err != nil {
		return fmt.Errorf("prune checkpoints: %w", err)
	}
	return nil
}

// removeBatch deletes the events in (lo, hi] and the sessions they opened.
func (s *DB) removeBatch(ctx context.Context, lo, hi, cut int64, rep *PruneReport) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("prune: %w", err)
	}
	defer tx.Rollback()
	rows, err := tx.QueryContext(ctx, `SELECT session_id FROM events WHERE seq > ? AND seq <= ? AND kind = ?`,
		lo, hi, string(event.KindSessionOpen))
	if err != nil {
		return fmt.Errorf("prune: read events: %w", err)
	}
	var ids []any
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return fmt.Errorf("prune: read events: %w", err)
		}
		ids = append(ids, id)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("prune: read events: %w", err)
	}
	if len(ids) > 0 {
		in := "(?" + strings.Repeat(",?", len(ids)-1) + ")"
		res, err := tx.ExecContext(ctx, `DELETE FROM sessions WHERE id IN `+in, ids...)
		if err != nil {
			return fmt.Errorf("prune sessions: %w", err)
		}
		n, _ := res.RowsAffected()
		rep.Sessions += n
		if _, err := tx.ExecContext(ctx, `DELETE FROM approvals WHERE state != 'pending' AND session_id IN `+in, ids...); err != nil {
			return fmt.Errorf("prune approvals: %w", err)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM event_spans WHERE session_id IN `+in+` AND last_seq <= ?`,
			append(ids, cut)...); err != nil {
			return fmt.Errorf("prune spans: %w", err)
		}
	}
	res, err := tx.ExecContext(ctx, `DELETE FROM events WHERE seq > ? AND seq <= ?`, lo, hi)
	if err != nil {
		return fmt.Errorf("prune events: %w", err)
	}
	n, _ := res.RowsAffected()
	rep.Events += n
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("prune: %w", err)
	}
	return nil
}

// Vacuum gives the space pruned rows left back to the file system by
// rewriting the database (SQLite's VACUUM). It needs the store to itself
// for as long as that takes, so it refuses while a daemon (the store's
// writer) has it open; run it with the daemon stopped. It returns the file's
// size before and after.
func (s *DB) Vacuum(ctx context.Context) (before, after int64, err error) {
	if s.journalLock == nil {
		// A reader: make sure no writer holds the store meanwhile.
		f, err := os.Open(s.path)
		if err != nil {
			return 0, 0, fmt.Errorf("vacuum: %w", err)
		}
		defer f.Close()
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			if errors.Is(err, syscall.EWOULDBLOCK) {
				return 0, 0, fmt.Errorf("vacuum: store %s is open by a daemon; stop it first (prune itself is safe beside it)", s.path)
			}
			return 0, 0, fmt.Errorf("vacuum: %w", err)
		}
		defer syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	}
	if st, err := os.Stat(s.path); err == nil {
		before = st.Size()
	}
	if _, err := s.db.ExecContext(ctx, `VACUUM`); err != nil {
		return before, 0, fmt.Errorf("vacuum: %w", err)
	}
	if _, err := s.db.ExecContext(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
		return before, 0, fmt.Errorf("vacuum: %w", err)
	}
	if st, err := os.Stat(s.path); err == nil {
		after = st.Size()
	}
	return before, after, nil
}
