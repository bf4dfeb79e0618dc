package tests

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/lib/pq"
)

// pgxResult is what the pgx client saw, step by step.
type pgxResult struct {
	Count      int64    `json:"count"`
	Batch      []string `json:"batch"` // "ok" or the SQLSTATE of each queued statement
	After      int64    `json:"after"` // rows of the batch that persisted
	PrepDelete string   `json:"prep_delete"`
	PrepDrop   string   `json:"prep_drop"`
	Final      int64    `json:"final"`
	Masked     []string `json:"masked"`      // email and ssn of user 1, binary and text formats
	Computed   string   `json:"computed"`    // an expression over a masked column, extended protocol
	ExecDrop   string   `json:"exec_drop"`   // SQL EXECUTE of a protocol-level DROP, the name reused after DEALLOCATE
	ExecMasked string   `json:"exec_masked"` // SQL EXECUTE of a protocol-level statement computing on a masked column
	Err        string   `json:"err,omitempty"`
}

func sqlstate(err error) string {
	if err == nil {
		return "ok"
	}
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return err.Error()
}

func pgxScenario(dsn string) (r pgxResult) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		r.Err = err.Error()
		return r
	}
	defer conn.Close(ctx)
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM users WHERE id > $1", 0).Scan(&r.Count); err != nil {
		r.Err = "count: " + err.Error()
		return r
	}
	// A pipeline with a denied statement in the middle.
	b := &pgx.Batch{}
	b.Queue("INSERT INTO t VALUES ($1, 'batch')", 1000)
	b.Queue("DROP TABLE t")
	b.Queue("INSERT INTO t VALUES ($1, 'batch')", 1001)
	br := conn.SendBatch(ctx, b)
	for range 3 {
		_, err := br.Exec()
		r.Batch = append(r.Batch, sqlstate(err))
	}
	br.Close()
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM t WHERE v = 'batch'").Scan(&r.After); err != nil {
		r.Err = "after: " + err.Error()
		return r
	}
	if _, err := conn.Prepare(ctx, "del", "DELETE FROM t WHERE id = $1"); err != nil {
		r.Err = "prepare del: " + err.Error()
		return r
	}
	_, err = conn.Exec(ctx, "del", 3)
	r.PrepDelete = sqlstate(err)
	// Preparing a DROP is harmless; executing it is not.
	if _, err := conn.Prepare(ctx, "dr", "DROP TABLE t"); err != nil {
		r.PrepDrop = "prepare: " + sqlstate(err)
	} else {
		_, err = conn.Exec(ctx, "dr")
		r.PrepDrop = sqlstate(err)
	}
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM t WHERE id < $1", 1000000).Scan(&r.Final); err != nil {
		r.Err = "final: " + err.Error()
		return r
	}
	// pgx reads text columns in binary format; an int column masked by a
	// column rule must still decode.
	var email, ssn string
	if err := conn.QueryRow(ctx, "SELECT email, ssn FROM users WHERE id = $1", 1).Scan(&email, &ssn); err != nil {
		r.Err = "masked: " + err.Error()
		return r
	}
	var renamed string
	if err := conn.QueryRow(ctx, "SELECT ssn AS t FROM users WHERE id = $1", 2).Scan(&renamed); err != nil || renamed != "[redacted]" {
		r.Err = fmt.Sprintf("renamed column through pgx: %q %v", renamed, err)
		return r
	}
	var n int32
	if err := conn.QueryRow(ctx, "SELECT 42::int4 AS ssn").Scan(&n); err != nil {
		r.Err = "masked int: " + err.Error()
		return r
	}
	r.Masked = []string{email, ssn, fmt.Sprint(n)}
	var up string
	r.Computed = sqlstate(conn.QueryRow(ctx, "SELECT upper(ssn) FROM users WHERE id = $1", 1).Scan(&up))
	// SQL EXECUTE runs protocol-level statements too (one namespace): it is
	// decided by what it runs, not by a stale PREPARE of the same name.
	if _, err := conn.Exec(ctx, "PREPARE sp AS SELECT 1"); err != nil {
		r.Err = "prepare sp: " + err.Error()
		return r
	}
	if _, err := conn.Exec(ctx, "DEALLOCATE sp"); err != nil {
		r.Err = "deallocate sp: " + err.Error()
		return r
	}
	if _, err := conn.Prepare(ctx, "sp", "DROP TABLE t"); err != nil {
		r.Err = "prepare drop: " + err.Error()
		return r
	}
	_, err = conn.Exec(ctx, "EXECUTE sp")
	r.ExecDrop = sqlstate(err)
	if _, err := conn.Prepare(ctx, "up", "SELECT upper(ssn) FROM users"); err != nil {
		r.Err = "prepare up: " + err.Error()
		return r
	}
	_, err = conn.Exec(ctx, "EXECUTE up")
	r.ExecMasked = sqlstate(err)
	return r
}

type libpqResult struct {
	Count int64  `json:"count"`
	Email string `json:"email"`
	Drop  string `json:"drop"`
	Err   string `json:"err,omitempty"`
}

func libpqScenario(dsn string) (r libpqResult) {
	db, err := sql.Open("postgres", dsn)
	if err != nil {
		r.Err = err.Error()
		return r
	}
	defer db.Close()
	if err := db.QueryRow("SELECT count(*) FROM users").Scan(&r.Count); err != nil {
		r.Err = "count: " + err.Error()
		return r
	}
	if err := db.QueryRow("SELECT email FROM users WHERE id = $1", 2).Scan(&r.Email); err != nil {
		r.Err = "email: " + err.Error()
		return r
	}
	_, err = db.Exec("DROP TABLE t")
	var pe *pq.Error
	if errors.As(err, &pe) {
		r.Drop = string(pe.Code)
	} else {
		r.Drop = sqlstate(err)
	}
	return r
}

type bigResult struct {
	Sent string `json:"sent"`
	Got  string `json:"got"`
	Len  int    `json:"len"`
	Err  string `json:"err,omitempty"`
}

func bigRow(dsn string) (r bigResult) {
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		r.Err = err.Error()
		return r
	}
	defer conn.Close(ctx)
	v := make([]byte, 64<<20)
	for i := range v {
		v[i] = 'a' + byte(i%26)
	}
	r.Sent = fmt.Sprintf("%x", sha256.Sum256(v))
	if _, err := conn.Exec(ctx, "INSERT INTO big VALUES (1, $1)", string(v)); err != nil {
		r.Err = "insert: " + err.Error()
		return r
	}
	var got string
	if err := conn.QueryRow(ctx, "SELECT v FROM big WHERE id = 1").Scan(&got); err != nil {
		r.Err = "select: " + err.Error()
		return r
	}
	r.Got, r.Len = fmt.Sprintf("%x", sha256.Sum256([]byte(got))), len(got)
	return r
}
