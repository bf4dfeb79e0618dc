// Package store is loopgate's memory: a SQLite database (mattn/go-sqlite3,
// WAL, file mode 0600) holding sessions, with schema migrations applied at
// Open.
//
// A session row is written (and synced) when a session starts, before the
// daemon forwards anything, and updated when it ends: "no record, no
// forward". How far each write is taken before it returns is the Sync
// level (sync.go): by default, allowed statements' records are in the
// record log (journal.go) or WAL, kept by the kernel if the daemon dies,
// and fsynced in groups; everything else is fsynced first. DB is safe for
// concurrent use; Close is idempotent.
//
// It also keeps the table columns value detectors learned (learned.go),
// each learning and each operator's confirm or drop a chained event.
//
// Care of the file (backup.go, prune.go, retention.go): Backup copies the
// store beside its writer through SQLite's online backup API, carrying the
// record log into the copy; Prune removes the oldest events and sessions
// under a prune mark signed with the checkpoint key, which Verify checks
// and continues the chain from; Retainer runs Prune on a schedule.
//
// The event vocabulary lives in the leaf package store/event so protocol
// handlers can record without importing this package or cgo.
package store
