package store

import (
	"context"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// A checkpoint is a signed statement "the chain's event N has hash H". The
// daemon signs one every checkpointEvery events and at shutdown, with an
// ed25519 key only it reads (0600). Checkpoints chain too (each signs the
// previous one's signature), and the newest is also written beside the
// database (<db>.checkpoint), so deleting the tail of the log, or the tail
// and its checkpoints, shows up in audit verify.

// Checkpoint is one signed checkpoint.
type Checkpoint struct {
	ID       int64  `json:"id"`
	EventSeq int64  `json:"event_seq"`
	Hash     string `json:"hash"`
	Time     string `json:"time"`
	PrevSig  string `json:"prev_sig"`
	Sig      string `json:"sig"`
}

func (c *Checkpoint) message() []byte {
	return []byte("loopgate-checkpoint-v1\n" + strconv.FormatInt(c.EventSeq, 10) + "\n" + c.Hash + "\n" + c.Time + "\n" + c.PrevSig + "\n")
}

// Verify checks the checkpoint's signature.
func (c *Checkpoint) Verify(pub ed25519.PublicKey) bool {
	sig, err := hex.DecodeString(c.Sig)
	return err == nil && ed25519.Verify(pub, c.message(), sig)
}

// EnableCheckpoints loads (or, the first time, creates with mode 0600) the
// ed25519 signing key at keyFile and turns on signed checkpoints.
func (s *DB) EnableCheckpoints(ctx context.Context, keyFile string) error {
	key, err := LoadOrCreateKey(keyFile)
	if err != nil {
		return err
	}
	pub := hex.EncodeToString(key.Public().(ed25519.PublicKey))
	var have string
	err = s.db.QueryRowContext(ctx, `SELECT value FROM meta WHERE key = 'checkpoint_pubkey'`).Scan(&have)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		if _, err := s.db.ExecContext(ctx, `INSERT INTO meta(key, value) VALUES ('checkpoint_pubkey', ?)`, pub); err != nil {
			return fmt.Errorf("record checkpoint key: %w", err)
		}
	case err != nil:
		return fmt.Errorf("read checkpoint key: %w", err)
	case have != pub:
		return fmt.Errorf("checkpoint key %s does not match the key this store was signed with (%s...)", keyFile, have[:16])
	}
	var last sql.NullString
	s.db.QueryRowContext(ctx, `SELECT sig FROM checkpoints ORDER BY id DESC LIMIT 1`).Scan(&last)
	s.wmu.Lock()
	s.signer, s.lastSig = key, last.String
	s.wmu.Unlock()
	return nil
}

// LoadOrCreateKey reads a PEM ed25519 private key, creating one if the file
// does not exist. The file must not be readable by group or others.
func LoadOrCreateKey(path string) (ed25519.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		_, key, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, err
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, fmt.Errorf("create key dir: %w", err)
		}
		data := pem.EncodeToMemory(&pem.Block{Type: "LOOPGATE ED25519 PRIVATE KEY", Bytes: key.Seed()})
		if err := os.WriteFile(path, data, 0o600); err != nil {
			return nil, fmt.Errorf("write key %s: %w", path, err)
		}
		return key, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read key %s: %w", path, err)
	}
	if st, err := os.Stat(path); err == nil && st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("key %s is accessible by others (mode %v); chmod 600 it", path, st.Mode().Perm())
	}
	blk, _ := pem.Decode(b)
	if blk == nil || len(blk.Bytes) != ed25519.SeedSize {
		return nil, fmt.Errorf("key %s: not a loopgate ed25519 key", path)
	}
	return ed25519.NewKeyFromSeed(blk.Bytes), nil
}

// PublicKey reads the public half of the key at path; it never creates one.
func PublicKey(path string) (ed25519.PublicKey, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("read key: %w", err)
	}
	key, err := LoadOrCreateKey(path)
	if err != nil {
		return nil, err
	}
	return key.Public().(ed25519.PublicKey), nil
}

// Checkpoint writes a signed checkpoint now if events follow the last one.
// The daemon calls it at shutdown.
func (s *DB) Checkpoint(ctx context.Context) error {
	return s.write(ctx, &op{checkpoint: true})
}

func (s *DB) writeCheckpoint(ctx context.Context, tx *sql.Tx, head *chainState) (*Checkpoint, error) {
	cp := &Checkpoint{EventSeq: head.seq, Hash: hexs(head.hash), Time: fmtTime(time.Now()), PrevSig: s.lastSig}
	cp.Sig = hex.EncodeToString(ed25519.Sign(s.signer, cp.message()))
	res, err := tx.ExecContext(ctx, `INSERT INTO checkpoints(event_seq, hash, time, prev_sig, sig) VALUES (?, ?, ?, ?, ?)`,
		cp.EventSeq, cp.Hash, cp.Time, cp.PrevSig, cp.Sig)
	if err != nil {
		return nil, fmt.Errorf("write checkpoint: %w", err)
	}
	cp.ID, _ = res.LastInsertId()
	head.sinceCheckpoint = 0
	return cp, nil
}

// writeCheckpointFile records the newest checkpoint beside the database.
// Failure is not fatal: the table holds it too.
// It is written only once the events it signs are on disk (sync.go).
func (s *DB) writeCheckpointFile(cp *Checkpoint) {
	b, _ := json.Marshal(cp)
	tmp := s.path + ".checkpoint.tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return
	}
	os.Rename(tmp, s.path+".checkpoint")
}

func unhex(s string) ([]byte, error) { return hex.DecodeString(s) }

// DeriveKey derives a 32-byte key for purpose from the daemon's key at
// path, so other keyed functions (the hash masking mode) stay stable across
// restarts without another secret file.
func DeriveKey(path, purpose string) ([]byte, error) {
	key, err := LoadOrCreateKey(path)
	if err != nil {
		return nil, err
	}
	m := hmac.New(sha256.New, key.Seed())
	m.Write([]byte(purpose))
	return m.Sum(nil), nil
}
