package store

import (
	"context"
	"crypto/ed25519"
	"database/sql"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	_ "github.com/mattn/go-sqlite3" // registers the "sqlite3" driver

	"github.com/loopgate/loopgate/store/event"
)

// DB is an open loopgate store. It is safe for concurrent use.
type DB struct {
	db        *sql.DB
	path      string
	closeOnce sync.Once
	closeErr  error

	// wmu guards the group-commit queue and the chain head. Lock order:
	// wmu, then SQLite's own lock (inside commit, wmu is not held).
	wmu        sync.Mutex
	pending    []*op
	committing bool
	head       chainState // owned by the committing goroutine
	signer     ed25519.PrivateKey
	lastSig    string

	// wconn is the connection every write commits on (one writer:
	// SQLite has one anyway); rows inserts events on it.
	wconn      *sql.Conn
	rows       *eventRows
	insertSpan *sql.Stmt
	touched    []touch // reused by each commit (committing goroutine only)

	// async holds events queued by AppendEventsAsync (guarded by wmu);
	// asyncRoom is signalled when it drains. The flusher goroutine commits
	// them asyncLinger after the first arrives, unless a durable write
	// takes them along first.
	async      []event.Event
	asyncSpare []event.Event // the buffer last committed, for reuse
	asyncOps   []asyncOp     // queued by CloseSessionAsync
	asyncRoom  *sync.Cond
	asyncKick  chan struct{}
	asyncNow   chan struct{}
	stopFlush  chan struct{}
	flushDone  chan struct{}
	asyncErr   func(err error, events int, kept bool)
	flushing   bool // the flusher was started (by the first async event)

	// sync is the durability of writes (sync.go). Under SyncNormal the
	// syncer fsyncs the WAL; syncWait (guarded by wmu) holds the writes
	// waiting for its next fsync and syncCP the checkpoint to write
	// beside the database after it.
	sync        Sync
	syncWait    []syncWaiter
	syncCP      *Checkpoint
	syncNow     chan struct{}
	syncSoon    chan struct{}
	stopSync    chan struct{}
	syncDone    chan struct{}
	syncing     bool   // the syncer was started (by the first commit)
	syncStopped bool   // Close stopped it: commits fsync themselves
	beforeSync  func() // tests: called before each fsync of the WAL

	// journal is the record log (journal.go). Guarded by wmu: journalSeq
	// (the last entry written), queuedSeq (the last whose events are
	// queued) and committedSeq (the last the chain holds).
	journal                             *os.File
	journalSeq, queuedSeq, committedSeq int64
	oldSeq                              int64    // the last entry in <db>-records.old; 0: none
	journalBuf                          []byte   // the line being written, reused
	journalLock                         *os.File // holds the flock that makes the log ours; set once, by Open
}

// Open opens (creating if needed) the database at path and applies pending
// migrations, with the default Options (SyncNormal). The file and its
// directory are private to the owner.
func Open(ctx context.Context, path string) (*DB, error) {
	return OpenWith(ctx, path, Options{})
}

// OpenWith is Open with options.
func OpenWith(ctx context.Context, path string, opts Options) (*DB, error) {
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return nil, fmt.Errorf("create store dir: %w", err)
		}
	}
	// Create the file ourselves so it is 0600 from the first byte; SQLite
	// gives the -wal and -shm files the database file's mode.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	f.Close()
	if err := os.Chmod(path, 0o600); err != nil {
		return nil, fmt.Errorf("chmod store %s: %w", path, err)
	}
	// _stmt_cache_size: statements run ad hoc (a session's row, the
	// savepoint around each write) are prepared once per connection, not
	// per call; under one session per statement preparing cost 30 µs a session.
	// _synchronous: NORMAL commits to the WAL without an fsync; the
	// syncer fsyncs it (sync.go).
	dsn := "file:" + path + "?_journal_mode=WAL&_synchronous=" + strings.ToUpper(opts.Sync.String()) +
		"&_busy_timeout=10000&_foreign_keys=on&_txlock=immediate&_stmt_cache_size=64"
	db, err := sql.Open("sqlite3", dsn)
	if err != nil {
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	s := &DB{db: db, path: path, asyncKick: make(chan struct{}, 1), asyncNow: make(chan struct{}, 1),
		stopFlush: make(chan struct{}), flushDone: make(chan struct{}),
		sync: opts.Sync, syncNow: make(chan struct{}, 1), syncSoon: make(chan struct{}, 1),
		stopSync: make(chan struct{}), syncDone: make(chan struct{})}
	s.asyncRoom = sync.NewCond(&s.wmu)
	if err := s.migrate(ctx); err != nil {
		db.Close()
		return nil, err
	}
	if err := s.loadHead(ctx); err != nil {
		db.Close()
		return nil, err
	}
	if s.wconn, err = db.Conn(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	if s.rows, err = newEventRows(ctx, s.wconn); err != nil {
		s.wconn.Close()
		db.Close()
		return nil, err
	}
	if s.insertSpan, err = db.PrepareContext(ctx, insertSpanSQL); err != nil {
		s.rows.close()
		s.wconn.Close()
		db.Close()
		return nil, fmt.Errorf("prepare: %w", err)
	}
	if !opts.Reader {
		if err := s.openJournal(ctx); err != nil {
			s.Close()
			return nil, err
		}
	}
	return s, nil
}

// Close closes the database. It is idempotent.
func (s *DB) Close() error {
	s.closeOnce.Do(func() {
		// Events queued asynchronously are written before the end.
		s.wmu.Lock()
		started := s.flushing
		s.flushing = true // none is started from now on
		s.wmu.Unlock()
		if started {
			close(s.stopFlush)
			<-s.flushDone
		}
		// Then the last fsync: what is committed is on disk at the end.
		s.wmu.Lock()
		started = s.syncing
		s.syncing, s.syncStopped = true, true
		s.wmu.Unlock()
		if started {
			close(s.stopSync)
			<-s.syncDone
		}
		if s.journal != nil {
			s.journal.Close()
		}
		s.insertSpan.Close()
		s.rows.close()
		s.wconn.Close()
		s.closeErr = s.db.Close()
		if s.journalLock != nil {
			// Unlocked first: a child forked meanwhile (os/exec
			// elsewhere in the process) shares the open file until
			// its exec, and with it the flock, which would refuse
			// the next Open for that while.
			syscall.Flock(int(s.journalLock.Fd()), syscall.LOCK_UN)
			s.journalLock.Close()
		}
	})
	return s.closeErr
}

// migrations are applied in order, each once, each in its own transaction.
// Never edit a released migration: append a new one.
var migrations = []string{
	// 1: sessions.
	`CREATE TABLE sessions (
		id            TEXT PRIMARY KEY,
		workload      TEXT NOT NULL,
		target        TEXT NOT NULL,
		protocol      TEXT NOT NULL,
		orig_dst      TEXT NOT NULL,
		client        TEXT NOT NULL,
		pid           INTEGER NOT NULL,
		tid           INTEGER NOT NULL,
		process_start TEXT NOT NULL,
		uid           INTEGER NOT NULL,
		gid           INTEGER NOT NULL,
		cgroup_id     INTEGER NOT NULL,
		cgroup_path   TEXT NOT NULL,
		exe           TEXT NOT NULL,
		comm          TEXT NOT NULL,
		started       TEXT NOT NULL,
		ended         TEXT,
		bytes_up      INTEGER NOT NULL DEFAULT 0,
		bytes_down    INTEGER NOT NULL DEFAULT 0,
		outcome       TEXT NOT NULL,
		error         TEXT NOT NULL DEFAULT ''
	);
	CREATE INDEX sessions_started ON sessions(started);
	CREATE INDEX sessions_workload ON sessions(workload, started);`,
	// 2: the hash-chained event log, signed checkpoints, approvals.
	`CREATE TABLE events (
		seq         INTEGER PRIMARY KEY,
		session_id  TEXT NOT NULL,
		time        TEXT NOT NULL,
		kind        TEXT NOT NULL,
		text        TEXT NOT NULL,
		params      TEXT NOT NULL,
		decision    TEXT NOT NULL,
		rule_id     TEXT NOT NULL,
		approval_id TEXT NOT NULL,
		duration_ns INTEGER NOT NULL,
		rows        INTEGER NOT NULL,
		bytes       INTEGER NOT NULL,
		error       TEXT NOT NULL,
		prev_hash   TEXT NOT NULL,
		hash        TEXT NOT NULL
	);
	CREATE INDEX events_session ON events(session_id, seq);
	CREATE TABLE checkpoints (
		id        INTEGER PRIMARY KEY,
		event_seq INTEGER NOT NULL,
		hash      TEXT NOT NULL,
		time      TEXT NOT NULL,
		prev_sig  TEXT NOT NULL,
		sig       TEXT NOT NULL
	);
	CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
	CREATE TABLE approvals (
		id          TEXT PRIMARY KEY,
		session_id  TEXT NOT NULL,
		rule_id     TEXT NOT NULL,
		command     TEXT NOT NULL,
		params_hash TEXT NOT NULL,
		requested   TEXT NOT NULL,
		expires     TEXT NOT NULL,
		state       TEXT NOT NULL,
		decided     TEXT,
		decided_by  TEXT NOT NULL DEFAULT '',
		reason      TEXT NOT NULL DEFAULT ''
	);
	CREATE INDEX approvals_state ON approvals(state, requested);`,
	// 3: command tags.
	`ALTER TABLE events ADD COLUMN tag TEXT NOT NULL DEFAULT '';`,
	// 4: what an approval was for and how it was granted.
	`ALTER TABLE approvals ADD COLUMN class TEXT NOT NULL DEFAULT '';
	ALTER TABLE approvals ADD COLUMN workload TEXT NOT NULL DEFAULT '';
	ALTER TABLE approvals ADD COLUMN target TEXT NOT NULL DEFAULT '';
	ALTER TABLE approvals ADD COLUMN scope TEXT NOT NULL DEFAULT '';
	ALTER TABLE approvals ADD COLUMN approved_by TEXT NOT NULL DEFAULT '';`,
	// 5: a session's events are found through spans (writer.go), not an
	// index entry per event. Sessions recorded before get one span each.
	`CREATE TABLE event_spans (
		session_id TEXT NOT NULL,
		first_seq  INTEGER NOT NULL,
		last_seq   INTEGER NOT NULL
	);
	INSERT INTO event_spans SELECT session_id, MIN(seq), MAX(seq) FROM events GROUP BY session_id;
	CREATE INDEX event_spans_session ON event_spans(session_id, first_seq);
	DROP INDEX events_session;`,
	// 6: times in compared and ordered columns become fixed width (colTime).
	fixedWidthTimes(map[string][]string{
		"sessions":  {"started", "ended", "process_start"},
		"approvals": {"requested", "expires", "decided"},
	}),
	// 7: table columns value detectors fired on, masked as columns of
	// their rule (learned.go).
	`CREATE TABLE learned_columns (
		rule        TEXT NOT NULL,
		mask        TEXT NOT NULL,
		column_name TEXT NOT NULL,
		first_seen  TEXT NOT NULL,
		session_id  TEXT NOT NULL,
		state       TEXT NOT NULL,
		changed     TEXT NOT NULL,
		changed_by  TEXT NOT NULL DEFAULT '',
		PRIMARY KEY (rule, mask, column_name)
	);`,
}

// fixedWidthTimes rewrites RFC 3339 UTC times written with a trimmed
// fraction ("…:54Z", "…:54.3Z") to colTime's nine digits ("…:54.300000000Z").
func fixedWidthTimes(tables map[string][]string) string {
	var b strings.Builder
	for _, table := range slices.Sorted(maps.Keys(tables)) {
		for _, c := range tables[table] {
			fmt.Fprintf(&b, `UPDATE %[1]s SET %[2]s = CASE WHEN length(%[2]s) = 20
				THEN substr(%[2]s, 1, 19) || '.000000000Z'
				ELSE substr(%[2]s, 1, length(%[2]s) - 1) || substr('000000000', 1, 30 - length(%[2]s)) || 'Z' END
				WHERE %[2]s LIKE '____-__-__T__:__:__%%Z' AND length(%[2]s) BETWEEN 20 AND 29;
`, table, c)
		}
	}
	return b.String()
}

func (s *DB) migrate(ctx context.Context) error {
	if _, err := s.db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version INTEGER PRIMARY KEY, applied TEXT NOT NULL)`); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	var have int
	if err := s.db.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&have); err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	if have > len(migrations) {
		return fmt.Errorf("migrate: database schema version %d is newer than this build (%d)", have, len(migrations))
	}
	for v := have + 1; v <= len(migrations); v++ {
		tx, err := s.db.BeginTx(ctx, nil)
		if err != nil {
			return fmt.Errorf("migrate to %d: %w", v, err)
		}
		if _, err := tx.ExecContext(ctx, migrations[v-1]); err != nil {
			tx.Rollback()
			return fmt.Errorf("migrate to %d: %w", v, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations(version, applied) VALUES (?, ?)`, v, fmtTime(time.Now())); err != nil {
			tx.Rollback()
			return fmt.Errorf("migrate to %d: %w", v, err)
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("migrate to %d: %w", v, err)
		}
	}
	return nil
}

// SchemaVersion reports the applied migration version.
func (s *DB) SchemaVersion(ctx context.Context) (int, error) {
	var v int
	err := s.db.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&v)
	return v, err
}

// timeLayout is how times are written in events and the snapshots they
// carry (hashed: it never changes).
const timeLayout = time.RFC3339Nano

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(timeLayout)
}

// colLayout is how times are written in the columns of sessions and
// approvals, which queries compare and order as text: RFC 3339 in UTC with
// all nine digits of the fraction, so text order is time order.
// timeLayout trims the fraction, and "…:54Z" sorts after "…:54.309Z".
const colLayout = "2006-01-02T15:04:05.000000000Z07:00"

// colTime formats t for a compared column; parseTime reads it back.
func colTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(colLayout)
}

func parseTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	return time.Parse(timeLayout, s)
}

// ErrNotFound is returned when a looked-up row does not exist.
var ErrNotFound = errors.New("not found")
