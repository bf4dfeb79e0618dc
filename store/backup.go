package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/mattn/go-sqlite3"
)

// BackupReport says what a backup holds.
type BackupReport struct {
	// Events is the last event in the copy; Logged how many of them came
	// from the record log rather than the database.
	Events int64 `json:"events"`
	Logged int64 `json:"logged"`
}

// Backup writes a consistent copy of the store to the new file dst (mode
// 0600) while the daemon keeps writing, through SQLite's online backup API
// (one read transaction: a snapshot, never a torn file). The copy is whole
// on its own: records the daemon had in its record log but not yet in the
// database (journal.go) are appended to the copy's chain, exactly as the
// daemon would append them, and the checkpoint file beside the database is
// copied beside dst, so `audit verify --db dst` checks the copy.
//
// The copy holds everything acknowledged before Backup began: the log and
// checkpoint file are read first, the database after, and any entry of the
// log the database snapshot already holds is skipped.
func (s *DB) Backup(ctx context.Context, dst string) (BackupReport, error) {
	var rep BackupReport
	for _, p := range []string{dst, dst + "-wal", dst + "-records", dst + "-records.old", dst + ".checkpoint"} {
		if _, err := os.Lstat(p); err == nil {
			return rep, fmt.Errorf("backup: %s exists; not overwriting it", p)
		} else if !errors.Is(err, fs.ErrNotExist) {
			return rep, fmt.Errorf("backup: %w", err)
		}
	}
	ok := false
	defer func() {
		if !ok {
			for _, p := range []string{dst, dst + "-wal", dst + "-shm", dst + "-records", dst + "-records.old", dst + ".checkpoint"} {
				os.Remove(p)
			}
		}
	}()
	// The record log and checkpoint file first (see above).
	for _, suffix := range []string{"-records.old", "-records", ".checkpoint"} {
		if err := copyIfExists(s.path+suffix, dst+suffix); err != nil {
			return rep, fmt.Errorf("backup: %w", err)
		}
	}
	if err := s.backupDB(ctx, dst); err != nil {
		return rep, err
	}
	// Opening the copy as its writer appends what its log holds past the
	// snapshot and empties the log.
	var before int64
	if err := countHead(ctx, dst, &before); err != nil {
		return rep, err
	}
	c, err := OpenWith(ctx, dst, Options{Sync: SyncFull})
	if err != nil {
		return rep, fmt.Errorf("backup: open copy: %w", err)
	}
	c.wmu.Lock()
	rep.Events = c.head.seq
	c.wmu.Unlock()
	if err := c.Close(); err != nil {
		return rep, fmt.Errorf("backup: close copy: %w", err)
	}
	rep.Logged = rep.Events - before
	for _, suffix := range []string{"-records", "-records.old"} {
		if st, err := os.Stat(dst + suffix); err == nil && st.Size() == 0 {
			os.Remove(dst + suffix)
		}
	}
	ok = true
	return rep, nil
}

// backupDB copies the database file with SQLite's backup API.
func (s *DB) backupDB(ctx context.Context, dst string) error {
	f, err := os.OpenFile(dst, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	f.Close()
	ddb, err := sql.Open("sqlite3", "file:"+dst)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	defer ddb.Close()
	dconn, err := ddb.Conn(ctx)
	if err != nil {
		return fmt.Errorf("backup: open %s: %w", dst, err)
	}
	defer dconn.Close()
	sconn, err := s.db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	defer sconn.Close()
	err = dconn.Raw(func(d any) error {
		return sconn.Raw(func(src any) error {
			dc, ok1 := d.(*sqlite3.SQLiteConn)
			sc, ok2 := src.(*sqlite3.SQLiteConn)
			if !ok1 || !ok2 {
				return errors.New("not a go-sqlite3 connection")
			}
			b, err := dc.Backup("main", sc, "main")
			if err != nil {
				return err
			}
			// All pages in one step: one read transaction on the
			// source, so a snapshot however busy the daemon is (steps
			// of some pages restart whenever another process writes).
			if _, err := b.Step(-1); err != nil {
				b.Finish()
				return err
			}
			return b.Finish()
		})
	})
	if err != nil {
		return fmt.Errorf("backup %s: %w", dst, err)
	}
	return nil
}

// countHead reads the last event of the database at path.
func countHead(ctx context.Context, path string, seq *int64) error {
	db, err := sql.Open("sqlite3", "file:"+path+"?mode=ro")
	if err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	defer db.Close()
	if err := db.QueryRowContext(ctx, `SELECT COALESCE(MAX(seq), 0) FROM events`).Scan(seq); err != nil {
		return fmt.Errorf("backup: read copy: %w", err)
	}
	return nil
}

// copyIfExists copies the file src to the new file dst (0600), if src
// exists.
func copyIfExists(src, dst string) error {
	in, err := os.Open(src)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
