package store

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"strings"
	"time"

	"github.com/loopgate/loopgate/store/event"
)

// Event rows are inserted on the writer connection through the driver
// itself, rowsPerInsert to a statement. Through database/sql each
// multi-row insert converted and copied its 512 values into a fresh slice:
// 690 bytes of garbage per event, a quarter of the daemon's allocation
// under load.

// insertEventSQL appends one event.
const insertEventSQL = `INSERT INTO events (seq, session_id, time, kind, text, params,
	decision, rule_id, approval_id, duration_ns, rows, bytes, error, prev_hash, hash, tag)
	VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`

// eventColumns is the number of values insertEventSQL takes.
const eventColumns = 16

// rowsPerInsert is how many events one multi-row INSERT carries.
const rowsPerInsert = 32

// insertEventsSQL inserts rowsPerInsert events at once.
var insertEventsSQL = func() string {
	q := insertEventSQL
	row := q[strings.Index(q, "VALUES")+len("VALUES"):]
	for i := 1; i < rowsPerInsert; i++ {
		q += "," + row
	}
	return q
}()

// eventRows buffers chained event rows for the transaction being built on
// conn. Only the committing goroutine uses it.
type eventRows struct {
	conn      *sql.Conn
	one, many driver.StmtExecContext // prepared on conn; used only inside conn.Raw
	args      []driver.NamedValue
}

func newEventRows(ctx context.Context, conn *sql.Conn) (*eventRows, error) {
	b := &eventRows{conn: conn, args: make([]driver.NamedValue, 0, rowsPerInsert*eventColumns)}
	err := conn.Raw(func(dc any) error {
		c, ok := dc.(driver.ConnPrepareContext)
		if !ok {
			return fmt.Errorf("driver %T cannot prepare with a context", dc)
		}
		for _, p := range []struct {
			dst *driver.StmtExecContext
			sql string
		}{{&b.one, insertEventSQL}, {&b.many, insertEventsSQL}} {
			st, err := c.PrepareContext(ctx, p.sql)
			if err != nil {
				return err
			}
			if *p.dst, ok = st.(driver.StmtExecContext); !ok {
				st.Close()
				return fmt.Errorf("driver statement %T cannot execute with a context", st)
			}
		}
		return nil
	})
	if err != nil {
		b.close()
		return nil, fmt.Errorf("prepare event insert: %w", err)
	}
	return b, nil
}

// add chains e to the head, advancing it, and buffers its row; a full
// buffer is inserted.
func (b *eventRows) add(ctx context.Context, head *chainState, e event.Event) error {
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	c := canonical(e)
	h := chainHash(head.hash, c)
	hh := hexs(h)
	seq := head.seq + 1
	for _, v := range [eventColumns]driver.Value{seq, c.Session, c.Time, c.Kind, c.Text, c.Params, c.Decision, c.Rule,
		c.Approval, c.DurationNS, c.Rows, c.Bytes, c.Error, head.hex(), hh, c.Tag} {
		b.args = append(b.args, driver.NamedValue{Ordinal: len(b.args) + 1, Value: v})
	}
	head.seq = seq
	head.hash, head.hashHex = h, hh
	head.sinceCheckpoint++
	head.touched = append(head.touched, touch{c.Session, seq})
	if len(b.args) == rowsPerInsert*eventColumns {
		return b.flush(ctx)
	}
	return nil
}

// flush inserts the buffered rows.
func (b *eventRows) flush(ctx context.Context) error {
	if len(b.args) == 0 {
		return nil
	}
	err := b.conn.Raw(func(any) error {
		if len(b.args) == rowsPerInsert*eventColumns {
			_, err := b.many.ExecContext(ctx, b.args)
			return err
		}
		for row := b.args; len(row) > 0; row = row[eventColumns:] {
			for i := range eventColumns {
				row[i].Ordinal = i + 1
			}
			if _, err := b.one.ExecContext(ctx, row[:eventColumns]); err != nil {
				return err
			}
		}
		return nil
	})
	b.reset()
	if err != nil {
		return fmt.Errorf("append events: %w", err)
	}
	return nil
}

// reset drops the buffered rows (their values are not kept alive).
func (b *eventRows) reset() {
	clear(b.args)
	b.args = b.args[:0]
}

func (b *eventRows) close() {
	b.conn.Raw(func(any) error {
		for _, st := range []driver.StmtExecContext{b.one, b.many} {
			if c, ok := st.(driver.Stmt); ok {
				c.Close()
			}
		}
		return nil
	})
}
