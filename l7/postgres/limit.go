package postgres

// Statements over the size limit (limits: max_statement_bytes) are denied
// without being read whole or parsed: a Query's or a Parse's length is in
// its header, so the relay keeps the first KiB for the record and discards
// the rest as it arrives. Parsing cost about 290 bytes of memory a byte of
// SQL ("SELECT 1;" repeated), so a 100 MB statement took the daemon to
// 16 GB before (issue #11 item 6).

import (
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/loopgate/loopgate/l7"
	"github.com/loopgate/loopgate/policy"
)

// oversizeKept is how much of a statement over the limit is kept for the
// record.
const oversizeKept = 1 << 10

// minStmtLimit is the least max_statement_bytes a config may set: shorter
// statements need not look the limit up.
const minStmtLimit = 64

// stmtLimit is the largest Query or Parse body accepted now.
func (r *relay) stmtLimit() int {
	if l := r.s.Policy().Limits.MaxStatementBytes; l > 0 {
		return l
	}
	return policy.DefaultMaxStatementBytes
}

// isStatement reports whether a message of type typ carries a statement
// (Query, Parse).
func isStatement(typ byte) bool { return typ == 'Q' || typ == 'P' }

// oversizeError is agentReader.next's answer to a statement over its
// stmtMax: the message's first bytes are returned, the rest is discarded.
type oversizeError struct{ size int }

func (e *oversizeError) Error() string { return fmt.Sprintf("statement of %d bytes", e.size) }

// skipOversized keeps the first bytes of a message whose body of n bytes
// is too big (after its 5-byte header, still in br) and discards the rest
// as it comes, never holding it whole.
func (a *agentReader) skipOversized(n int) (byte, []byte, error) {
	k := min(n, oversizeKept)
	if cap(a.buf) < 5+k {
		a.buf = make([]byte, 5+k)
	}
	msg := a.buf[:5+k]
	if _, err := io.ReadFull(a.br, msg); err != nil {
		return 0, nil, unexpectedEOF(err)
	}
	if _, err := a.br.Discard(n - k); err != nil {
		return 0, nil, unexpectedEOF(err)
	}
	return msg[0], msg, &oversizeError{size: n}
}

func unexpectedEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// nextAgentMessage is agentReader.next with the statement limit applied:
// a statement over it is denied here and the next message read.
func (r *relay) nextAgentMessage() (byte, []byte, error) {
	for {
		r.in.stmtMax = r.stmtLimit()
		typ, raw, err := r.in.next()
		var big *oversizeError
		if !errors.As(err, &big) {
			return typ, raw, err
		}
		if err := r.oversized(typ, big.size, raw[5:]); err != nil {
			return 0, nil, err
		}
	}
}

// oversized denies a Query or Parse whose body of size bytes is over the
// limit; prefix is its beginning. The caller discards the rest. A Query
// fails as a denied one does (the server raises the error, so an open
// transaction is aborted and ReadyForQuery follows); a Parse fails as a
// denied Execute in a pipeline does (the server skips to Sync).
func (r *relay) oversized(typ byte, size int, prefix []byte) error {
	if r.skipToSync {
		return nil // the server skips it anyway
	}
	text := prefix
	if typ == 'P' { // the statement's name comes first
		if i := indexByte(text, 0); i >= 0 {
			text = text[i+1:]
		}
	}
	if i := indexByte(text, 0); i >= 0 {
		text = text[:i]
	}
	limit := r.stmtLimit()
	c := &command{
		Command: l7.Command{Text: fmt.Sprintf("%s... (%d bytes, not read: over max_statement_bytes)", text, size),
			Decision: policy.Decision{Action: policy.Deny,
				Reason: fmt.Sprintf("statement of %d bytes is over the limit of %d bytes (max_statement_bytes)", size, limit)}},
		tooBig: true,
	}
	r.s.Log.Warn("statement over the size limit denied", "bytes", size, "limit", limit)
	if typ == 'P' {
		r.hold(nil, c, false)
		return nil
	}
	if err := r.flushBatch(); err != nil {
		return err
	}
	if err := r.authorize(c); err != nil {
		return r.recordFailed(err)
	}
	return r.deny(c, func() error { return r.forward(&pgproto3.Query{String: raiseFor(c)}) })
}

// raiseFor is the DO block raised in place of denied command c.
func raiseFor(c *command) string {
	if c.tooBig {
		return raiseSQLCode(codeProgramLimitExceeded, denyMessage(c),
			"send less in one statement, or raise limits: max_statement_bytes in loopgate's config")
	}
	return raiseSQL(denyMessage(c), denyHint(c))
}

// refuseWait bounds how long Refuse waits for the agent's startup packet.
const refuseWait = 2 * time.Second

// Refuse tells an agent that its session is refused before it starts
// (l7.Refuser): past its workload's or the daemon's session budget. As
// PostgreSQL does when it has too many clients, it reads the startup
// packet (answering an SSLRequest 'N') and sends FATAL 53300 with err's
// text. It does not close conn.
func (h *Handler) Refuse(conn net.Conn, err error) {
	conn.SetDeadline(time.Now().Add(refuseWait))
	ar := newAgentReader(conn)
	defer ar.release()
	if _, rerr := readStartup(ar, conn, nil); rerr != nil {
		return
	}
	be := pgproto3.NewBackend(nil, conn)
	be.Send(fatal(codeTooManyConnections, err.Error()))
	be.Flush()
}
