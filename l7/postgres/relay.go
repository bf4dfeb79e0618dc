package postgres

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/loopgate/loopgate/l7"
	"github.com/loopgate/loopgate/policy"
	"github.com/loopgate/loopgate/policy/mask"
	"github.com/loopgate/loopgate/policy/sqlclass"
	"github.com/loopgate/loopgate/store/event"
)

// maxResponseBody bounds one message from the target (PostgreSQL's own
// limit on a row is 1 GiB).
const maxResponseBody = 1<<30 + 1<<20

// command is one statement on its way through the target: decided,
// forwarded, waiting for its completion message.
type command struct {
	text     string
	params   string
	classes  []string
	decision policy.Decision
	injected bool // a denial raised in its place
	// deferred: the command's record waits for its result and is written
	// once, complete (record: async rules).
	deferred bool
	approval string // the approval request that decided it
	// copyMasked: a COPY under masks; column masks refuse it (decided
	// once the masker is known), detectors scan its text output.
	copyMasked bool
	// masker masks this command's results (nil: fast path, rows stream).
	masker *mask.Masker
	// copyOut applies column masks to the rows of a COPY ... TO STDOUT.
	copyOut *copyMask
	// stmt, stmtVer and formats locate the result layout of an Execute
	// whose RowDescription came earlier (Describe of the statement).
	stmt      string
	stmtVer   int
	portal    string
	portalVer int
	formats   []int16
	layout    *layout // set by the target side
	start     time.Time
	rows      int64
	// ready is the ReadyForQuery (counted from the session's start) that
	// closes the cycle this command belongs to.
	ready int64
}

// batched is one extended-protocol message held until Sync or Flush.
type batched struct {
	raw  []byte   // encoded message, ours (pgproto3's buffers are reused)
	exec *command // set for Execute
	sync bool
}

type portal struct {
	// prep is the statement as it was when bound: re-parsing its name
	// later does not change what the portal runs.
	prep    prepared
	bound   bool // prep is known (false: not bound here, e.g. a SQL cursor)
	stmt    string
	ver     int // of stmt when bound
	pver    int // of this portal name (each Bind makes a new one)
	params  string
	formats []int16
}

// describe is a statement Describe awaiting its ParameterDescription.
type describe struct {
	name   string
	ver    int  // of the statement (or portal) when described
	portal bool // a portal's Describe (no ParameterDescription comes first)
	ready  int64
}

// portalDesc is the RowDescription of one binding of a portal ("" for
// NoData), decoded only if a masked Execute needs it.
type portalDesc struct {
	ver int
	raw string
}

// described is the result columns of one version of a prepared statement
// (each Parse of a name makes a new version).
type described struct {
	ver    int
	fields []pgproto3.FieldDescription
}

// relay pumps messages both ways for one session.
//
// The agent-side goroutine (run) owns be, upw, batch, stmts, portals,
// sqlPrepared and sent. The target-side goroutine owns cw and br. mu guards
// pending, drop and seen, shared by both.
type relay struct {
	ctx    context.Context
	h      *Handler
	s      *l7.Session
	be     *pgproto3.Backend // writes errors to the agent
	in     *agentReader
	client *countingConn
	up     *countingConn
	upw    *bufio.Writer

	batch       []batched
	skipToSync  bool
	stmts       map[string]prepared // protocol-level prepared statements
	portals     map[string]portal
	sqlPrepared map[string][]string // SQL-level PREPARE name -> classes
	// sqlPreparedRefs: SQL-level PREPARE name -> how it uses columns.
	sqlPreparedRefs map[string]sqlclass.Refs
	sent            int64          // cycles sent (each ends in one ReadyForQuery)
	stmtVer         map[string]int // Parses seen per statement name
	portalVer       map[string]int // Binds seen per portal name

	mu        sync.Mutex
	pending   []*command
	drop      []byte // injected responses to swallow, in order
	seen      int64  // ReadyForQuery messages seen
	describes []describe

	// clientMu serialises writes to the agent: the target side writes whole
	// messages under it, and approval notices go between them. cw buffers
	// toward the agent and only ever holds complete messages when unlocked.
	clientMu sync.Mutex
	cw       *bufio.Writer

	// Owned by the target side.
	describing *describe
	stmtCols   map[string]described  // latest described version per name
	portalCols map[string]portalDesc // latest described binding per portal
	// Layouts already built: by statement (extended protocol) and by
	// RowDescription bytes (simple protocol), so a repeated statement
	// under masks costs a map lookup, not a decode and a name lookup.
	stmtLayouts map[string]cachedLayout
	descLayouts map[string]cachedLayout
	scratch     []byte // bodies of messages not kept past relayMessage

	// maskers by rule id, built on first use (agent side); session masks
	// error details and notifications.
	maskers    map[string]*mask.Masker
	maskersCfg *policy.Config // the config maskers were built from
	session    *mask.Masker

	// How the session ended, for reusing the server connection: the agent
	// sent Terminate (terminated), the last ReadyForQuery said txStatus,
	// an extended batch went out without Sync (unsynced), both sides
	// stopped without error (cleanEnd). br is the target side's reader.
	terminated bool
	txStatus   byte
	unsynced   bool
	cleanEnd   bool
	br         *bufio.Reader

	params map[string]string // the agent's startup parameters
}

// cachedLayout is a layout built for a masker and result formats.
type cachedLayout struct {
	m       *mask.Masker
	formats []int16
	l       *layout
	at      time.Time
	ver     int // statement version (stmtLayouts)
}

// fresh reports whether c was built for m and formats recently enough
// that its column names still hold (see namesTTL).
func (c cachedLayout) fresh(m *mask.Masker, formats []int16) bool {
	return c.l != nil && c.m == m && slices.Equal(c.formats, formats) && time.Since(c.at) < namesTTL
}

// maxCachedLayouts bounds descLayouts; it is cleared when full.
const maxCachedLayouts = 256

type prepared struct {
	text    string
	classes []string
	parsed  []sqlclass.Statement // read-only: shared with the classifier's cache
}

func newRelay(ctx context.Context, h *Handler, s *l7.Session, be *pgproto3.Backend, in *agentReader, client, up *countingConn) *relay {
	return &relay{
		ctx: ctx, h: h, s: s, be: be, in: in, client: client, up: up,
		upw:             bufio.NewWriterSize(up, 64<<10),
		cw:              bufio.NewWriterSize(client, 64<<10),
		stmts:           map[string]prepared{},
		portals:         map[string]portal{},
		sqlPrepared:     map[string][]string{},
		sqlPreparedRefs: map[string]sqlclass.Refs{},
		stmtCols:        map[string]described{},
		stmtVer:         map[string]int{},
		portalVer:       map[string]int{},
		portalCols:      map[string]portalDesc{},
		stmtLayouts:     map[string]cachedLayout{},
		descLayouts:     map[string]cachedLayout{},
		maskers:         map[string]*mask.Masker{},
	}
}

// checkMasks denies what the decision's column masks could not be applied
// to (see MaskDenial). simple says the statements came in a simple Query.
func (r *relay) checkMasks(c *command, sts []sqlclass.Statement, simple bool) {
	if c.decision.Action == policy.Deny || len(c.decision.Masks) == 0 {
		return
	}
	if reason := MaskDenial(r.maskerFor(c.decision), c.decision.RuleID, c.classes, sts, simple, r.preparedRefs); reason != "" {
		c.decision.Action = policy.Deny
		c.decision.Reason = reason
	}
}

// MaskDenial returns why statements cannot run under a rule's masks, or ""
// when they can. Column masks apply to plain result columns (RowDescription
// says which table column each comes from), so a statement that computes on
// a masked column, or uses whole rows, or renames columns in FROM, is
// refused. COPY ... TO STDOUT is masked row by row when it is a simple
// query of its own in text or CSV format whose columns are known (named in
// the statement, or a whole table, whose header loopgate asks for); other
// COPY ... TO is refused. classes are the statements' classes; simple says
// they came in a simple Query. prepared finds how a prepared statement that
// an EXECUTE runs uses columns (nil: none are known); an EXECUTE of one it
// does not know is refused.
func MaskDenial(m *mask.Masker, rule string, classes []string, sts []sqlclass.Statement, simple bool, prepared func(name string) (sqlclass.Refs, bool)) string {
	if !m.HasColumns() {
		return ""
	}
	// Only COPY ... TO sends rows back (classes copy and read).
	if slices.Contains(classes, sqlclass.Copy) && slices.Contains(classes, sqlclass.Read) {
		var co *sqlclass.CopyOut
		if simple && len(sts) == 1 {
			co = sts[0].CopyOut
		}
		switch {
		case co == nil:
			return fmt.Sprintf("COPY cannot apply the column masks of rule %s unless it copies to the client, alone, as a simple query", rule)
		case co.Format != "text" && co.Format != "csv":
			return fmt.Sprintf("COPY in %s format cannot apply the column masks of rule %s; use text or csv", co.Format, rule)
		case co.Columns == nil && co.Table == "":
			return fmt.Sprintf("COPY (query) under the column masks of rule %s must name its columns (no *, no UNION)", rule)
		case len(co.Delimiter) != 1 || co.Format == "csv" && (len(co.Quote) != 1 || len(co.Escape) != 1):
			return "COPY options that PostgreSQL would refuse"
		}
	}
	local := map[string]sqlclass.Refs{} // PREPAREd earlier in the same string
	for _, st := range sts {
		rf := st.Refs
		if st.Prepares != "" {
			local[st.Prepares] = st.Refs
		}
		if st.Executes != "" {
			inner, ok := local[st.Executes]
			if !ok && prepared != nil {
				inner, ok = prepared(st.Executes)
			}
			if !ok {
				return fmt.Sprintf("EXECUTE of %s under the column masks of rule %s: loopgate did not see it prepared", st.Executes, rule)
			}
			rf = inner
		}
		if rf.Opaque != "" {
			return fmt.Sprintf("rule %s masks columns, which %s would bypass; select columns by name", rule, rf.Opaque)
		}
		for _, name := range rf.Used {
			if m.NamesColumn(name) {
				return fmt.Sprintf("column %s is masked by rule %s: it may be selected, not computed on, filtered, sorted or copied", name, rule)
			}
		}
	}
	return ""
}

// columnNames finds the real table and column of result columns. Called
// without mu held: it may query the target.
func (r *relay) columnNames(fields []pgproto3.FieldDescription) []colName {
	return r.h.names.resolve(r.ctx, r.s.Subject.Target, r.s.Subject.OrigDst.String(), r.params, fields)
}

// maskerFor returns the masker of a decision's masks (nil for none).
func (r *relay) maskerFor(d policy.Decision) *mask.Masker {
	if len(d.Masks) == 0 {
		return nil
	}
	cfg := r.s.Policy()
	if cfg != r.maskersCfg {
		// A reload may have changed what a rule masks: live sessions
		// follow it from their next statement.
		clear(r.maskers)
		r.maskersCfg = cfg
	}
	if m, ok := r.maskers[d.RuleID]; ok {
		return m
	}
	m, err := mask.New(cfg, d.Masks, r.h.MaskKey)
	if err != nil {
		// The config checks mask names; a reload may have removed one.
		// Mask everything a column could hold rather than nothing.
		r.s.Log.Error("masks unavailable; redacting all columns", "err", err)
		m, _ = mask.New(&policy.Config{Masks: []policy.Mask{{Name: "all", Columns: []string{"*"}, Mode: "redact"}}}, []string{"all"}, nil)
	}
	r.maskers[d.RuleID] = m
	return m
}

// run relays until either side ends. It returns the first error that was
// not an ordinary end of session.
func (r *relay) run() error {
	var downErr error
	var down sync.WaitGroup
	down.Go(func() {
		downErr = r.fromTarget()
		r.client.SetReadDeadline(time.Unix(1, 0)) // stop the agent side
	})
	upErr := r.fromAgent()
	r.up.SetReadDeadline(time.Unix(1, 0))
	down.Wait()
	var ne net.Error
	r.cleanEnd = upErr == nil && errors.As(downErr, &ne) && ne.Timeout()
	if upErr != nil && !isEnd(upErr) {
		return upErr
	}
	if downErr != nil && !isEnd(downErr) {
		return downErr
	}
	return nil
}

func isEnd(err error) bool {
	var ne net.Error
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.As(err, &ne) && ne.Timeout() || isReset(err)
}

// fromAgent reads the agent's messages, decides, and forwards them as they
// came (decoding only what policy needs).
func (r *relay) fromAgent() error {
	for {
		typ, raw, err := r.in.next()
		if err != nil {
			return err
		}
		body := raw[5:]
		if r.skipToSync && typ != 'S' {
			continue
		}
		r.skipToSync = false
		switch typ {
		case 'Q':
			var m pgproto3.Query
			if err := m.Decode(body); err != nil {
				return r.violation(err)
			}
			if err := r.flushBatch(); err != nil {
				return err
			}
			if err := r.query(m.String, raw); err != nil {
				return err
			}
		case 'P':
			var m pgproto3.Parse
			if err := m.Decode(body); err != nil {
				return r.violation(err)
			}
			res := r.h.classifier().Classify(m.Query, r.lookupSQLPrepared)
			r.stmts[m.Name] = prepared{text: m.Query, classes: res.Classes, parsed: res.Statements}
			r.stmtVer[m.Name]++
			// A name is either SQL-level or protocol-level: the server
			// refuses a Parse of a name that exists.
			delete(r.sqlPrepared, m.Name)
			delete(r.sqlPreparedRefs, m.Name)
			r.hold(raw, nil, false)
		case 'B':
			var m pgproto3.Bind
			if err := m.Decode(body); err != nil {
				return r.violation(err)
			}
			r.portalVer[m.DestinationPortal]++
			prep, bound := r.stmts[m.PreparedStatement]
			r.portals[m.DestinationPortal] = portal{prep: prep, bound: bound, stmt: m.PreparedStatement, ver: r.stmtVer[m.PreparedStatement],
				pver: r.portalVer[m.DestinationPortal], params: formatParams(&m),
				formats: append([]int16(nil), m.ResultFormatCodes...)}
			r.hold(raw, nil, false)
		case 'D':
			var m pgproto3.Describe
			if err := m.Decode(body); err != nil {
				return r.violation(err)
			}
			d := describe{name: m.Name, ver: r.stmtVer[m.Name], ready: r.sent + 1}
			if m.ObjectType == 'P' {
				d.ver, d.portal = r.portalVer[m.Name], true
			}
			r.mu.Lock()
			r.describes = append(r.describes, d)
			r.mu.Unlock()
			r.hold(raw, nil, false)
		case 'C':
			var m pgproto3.Close
			if err := m.Decode(body); err != nil {
				return r.violation(err)
			}
			if m.ObjectType == 'S' {
				delete(r.stmts, m.Name)
			}
			r.hold(raw, nil, false)
		case 'E':
			var m pgproto3.Execute
			if err := m.Decode(body); err != nil {
				return r.violation(err)
			}
			// What the portal runs: its statement as bound. A portal not
			// bound here (a SQL cursor) is unknown.
			p := r.portals[m.Portal]
			st := p.prep
			classes := st.classes
			if !p.bound {
				classes = []string{sqlclass.Unknown}
			}
			c := &command{text: st.text, params: p.params, classes: classes, stmt: p.stmt, stmtVer: p.ver,
				portal: m.Portal, portalVer: p.pver, formats: p.formats}
			c.decision = r.s.Policy().Decide(r.s.Subject, classes)
			r.checkMasks(c, st.parsed, false)
			c.masker = r.maskerFor(c.decision)
			if c.masker.HasDetectors() {
				c.params = c.masker.String(c.params)
			}
			r.hold(raw, c, false)
		case 'S':
			r.hold(raw, nil, true)
			if err := r.flushBatch(); err != nil {
				return err
			}
		case 'H':
			r.hold(raw, nil, false)
			if err := r.flushBatch(); err != nil {
				return err
			}
		case 'F':
			var m pgproto3.FunctionCall
			if err := m.Decode(body); err != nil {
				return r.violation(err)
			}
			if err := r.flushBatch(); err != nil {
				return err
			}
			if err := r.functionCall(m.Function, raw); err != nil {
				return err
			}
		case 'd':
			// The server answers nothing until CopyDone: let the buffer
			// fill (psql sends a message per line).
			if _, err := r.upw.Write(raw); err != nil {
				return err
			}
		case 'c', 'f':
			if _, err := r.upw.Write(raw); err != nil {
				return err
			}
			if err := r.upw.Flush(); err != nil {
				return err
			}
		case 'X':
			// Not forwarded: the server connection may be kept (Serve
			// says goodbye for the agent otherwise).
			r.terminated = true
			return nil
		default:
			return r.violation(fmt.Errorf("unexpected message type %q", typ))
		}
	}
}

// reusable reports whether the server connection is between transactions
// with nothing in flight after the session: the agent said goodbye (after
// run has returned).
func (r *relay) reusable() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.terminated && r.cleanEnd && r.txStatus == 'I' && !r.unsynced && !r.skipToSync && len(r.batch) == 0 &&
		len(r.pending) == 0 && len(r.drop) == 0 && r.sent == r.seen && r.br != nil && r.br.Buffered() == 0
}

// violation ends the session on a malformed or unexpected message, telling
// the agent why.
func (r *relay) violation(err error) error {
	r.be.Send(fatal(codeProtocolViolation, "loopgate: protocol violation: "+err.Error()))
	r.be.Flush()
	return fmt.Errorf("protocol violation: %w", err)
}

// lookupSQLPrepared resolves the statement a SQL EXECUTE runs: one made by
// PREPARE or by a protocol-level Parse (they share one namespace).
func (r *relay) lookupSQLPrepared(name string) ([]string, bool) {
	if ks, ok := r.sqlPrepared[name]; ok {
		return ks, true
	}
	if st, ok := r.stmts[name]; ok && name != "" {
		return st.classes, true
	}
	return nil, false
}

// preparedRefs is lookupSQLPrepared for column use. A protocol-level
// statement of several statements cannot be EXECUTEd; one that did not
// parse is unknown.
func (r *relay) preparedRefs(name string) (sqlclass.Refs, bool) {
	if rf, ok := r.sqlPreparedRefs[name]; ok {
		return rf, true
	}
	if st, ok := r.stmts[name]; ok && name != "" && len(st.parsed) == 1 {
		return st.parsed[0].Refs, true
	}
	return sqlclass.Refs{}, false
}

// forward encodes msg into the upstream buffer.
func (r *relay) forward(msg pgproto3.FrontendMessage) error {
	buf, err := msg.Encode(nil)
	if err != nil {
		return err
	}
	_, err = r.upw.Write(buf)
	return err
}

// hold keeps a copy of an extended-protocol message until Sync or Flush.
func (r *relay) hold(raw []byte, exec *command, sync bool) {
	r.batch = append(r.batch, batched{raw: append([]byte(nil), raw...), exec: exec, sync: sync})
}

// record records decided commands before they are forwarded: durably (no
// record, no forward) unless every one is allowed under a rule that says
// record: async, in which case the records queue behind the relay.
func (r *relay) record(cmds ...*command) error {
	async := true
	for _, c := range cmds {
		async = async && c.decision.Action == policy.Allow && c.decision.AsyncRecord && c.approval == ""
	}
	if async {
		for _, c := range cmds {
			c.deferred = true
		}
		return nil
	}
	evs := make([]event.Event, 0, len(cmds))
	for _, c := range cmds {
		ev := event.Event{Kind: event.KindCommand, Text: c.text, Params: c.params,
			Decision: string(c.decision.Action), RuleID: c.decision.RuleID, ApprovalID: c.approval}
		if c.decision.Action != policy.Allow {
			ev.Error = c.decision.Reason
		}
		evs = append(evs, ev)
	}
	if len(evs) == 0 {
		return nil
	}
	return r.s.Record(r.ctx, evs...)
}

// query handles a simple-protocol Query: every statement in the string is
// classified; if any is not allowed, the whole string is replaced.
func (r *relay) query(sql string, raw []byte) error {
	res := r.h.classifier().Classify(sql, r.lookupSQLPrepared)
	c := &command{text: sql, classes: res.Classes}
	c.decision = r.s.Policy().Decide(r.s.Subject, res.Classes)
	r.checkMasks(c, res.Statements, true)
	if c.decision.Action == policy.Approve {
		c.decision = r.approve(c)
	}
	if c.decision.Action != policy.Allow {
		return r.deny(c, func() error { return r.forward(&pgproto3.Query{String: raiseSQL(denyMessage(c), denyHint(c))}) })
	}
	if err := r.record(c); err != nil {
		return r.recordFailed(err)
	}
	for _, st := range res.Statements {
		switch {
		case st.Prepares != "":
			r.sqlPrepared[st.Prepares] = st.Inner
			r.sqlPreparedRefs[st.Prepares] = st.Refs
		case st.Deallocates == "*":
			// Protocol-level statements go too (they share the namespace).
			clear(r.sqlPrepared)
			clear(r.sqlPreparedRefs)
			clear(r.stmts)
		case st.Deallocates != "":
			delete(r.sqlPrepared, st.Deallocates)
			delete(r.sqlPreparedRefs, st.Deallocates)
			delete(r.stmts, st.Deallocates)
		}
	}
	n := len(res.Statements)
	if n == 0 {
		n = 1 // EmptyQueryResponse
	}
	cmds := make([]*command, n)
	m := r.maskerFor(c.decision)
	for i := range cmds {
		cmds[i] = &command{text: sql, classes: res.Classes, decision: c.decision, masker: m}
		if i < len(res.Statements) {
			cmds[i].text = res.Statements[i].Text
		}
	}
	if co := copyOutUnder(res, m); co != nil {
		// checkMasks let it through: one COPY ... TO STDOUT, text or csv.
		ours := co.Columns == nil
		if ours {
			// The server names the columns it copies in a header line.
			q, err := sqlclass.CopyWithHeader(sql)
			if err != nil {
				return r.violation(fmt.Errorf("rewrite COPY: %w", err))
			}
			if raw, err = (&pgproto3.Query{String: q}).Encode(nil); err != nil {
				return err
			}
		}
		cmds[0].copyOut = newCopyMask(co, m, ours)
	}
	r.push(cmds, nil)
	if _, err := r.upw.Write(raw); err != nil {
		return err
	}
	return r.upw.Flush()
}

// copyOutUnder returns the COPY ... TO STDOUT of a query string whose
// rows column masks apply to, or nil.
func copyOutUnder(res sqlclass.Result, m *mask.Masker) *sqlclass.CopyOut {
	if len(res.Statements) != 1 || res.Statements[0].CopyOut == nil || !m.HasColumns() {
		return nil
	}
	return res.Statements[0].CopyOut
}

// functionCall handles the legacy FunctionCall message: which function it
// calls (by OID) is opaque, so it is class unknown.
func (r *relay) functionCall(oid uint32, raw []byte) error {
	c := &command{text: fmt.Sprintf("function call oid %d", oid), classes: []string{sqlclass.Unknown}}
	c.decision = r.s.Policy().Decide(r.s.Subject, c.classes)
	if c.decision.Action != policy.Allow {
		return r.deny(c, func() error { return r.forward(&pgproto3.Query{String: raiseSQL(denyMessage(c), denyHint(c))}) })
	}
	if err := r.record(c); err != nil {
		return r.recordFailed(err)
	}
	r.push([]*command{c}, nil)
	if _, err := r.upw.Write(raw); err != nil {
		return err
	}
	return r.upw.Flush()
}

// deny records a denied simple command and sends its replacement.
func (r *relay) deny(c *command, send func() error) error {
	if err := r.record(c); err != nil {
		return r.recordFailed(err)
	}
	c.injected = true
	r.push([]*command{c}, nil)
	if err := send(); err != nil {
		return err
	}
	return r.upw.Flush()
}

// recordFailed ends the session: a command that cannot be recorded is not
// forwarded.
func (r *relay) recordFailed(err error) error {
	r.be.Send(fatal(codeConnectionFailure, "loopgate: the session could not be recorded; ending it"))
	r.be.Flush()
	return fmt.Errorf("record command: %w", err)
}

// push queues commands awaiting completion in a new cycle (they end at the
// next ReadyForQuery), and response types to swallow.
func (r *relay) push(cmds []*command, drop []byte) { r.queue(cmds, drop, true) }

// flushBatch forwards held extended-protocol messages. If an Execute in it
// is not allowed, the messages before it go through, the Execute is
// replaced by a Parse/Bind/Execute of a raising DO block (whose
// ParseComplete and BindComplete are swallowed), and the rest up to Sync is
// dropped, as the server would skip it after an error.
func (r *relay) flushBatch() error {
	if len(r.batch) == 0 {
		return nil
	}
	batch := r.batch
	r.batch = nil
	var cmds []*command
	denied := -1
	for i, b := range batch {
		if b.exec == nil {
			continue
		}
		cmds = append(cmds, b.exec)
		if b.exec.decision.Action == policy.Approve {
			b.exec.decision = r.approve(b.exec)
		}
		if b.exec.decision.Action != policy.Allow {
			denied = i
			break
		}
	}
	if err := r.record(cmds...); err != nil {
		return r.recordFailed(err)
	}
	endsWithSync := batch[len(batch)-1].sync
	r.unsynced = !endsWithSync
	if denied < 0 {
		for _, b := range batch {
			r.upw.Write(b.raw)
		}
		r.queue(cmds, nil, endsWithSync)
		return r.upw.Flush()
	}
	for _, b := range batch[:denied] {
		r.upw.Write(b.raw)
	}
	c := batch[denied].exec
	c.injected = true
	sql := raiseSQL(denyMessage(c), denyHint(c))
	r.forward(&pgproto3.Parse{Query: sql})
	r.forward(&pgproto3.Bind{})
	r.forward(&pgproto3.Execute{})
	if endsWithSync {
		r.upw.Write(batch[len(batch)-1].raw)
	} else {
		// The server now skips to the agent's Sync; so do we.
		r.forward(&pgproto3.Flush{})
		r.skipToSync = true
	}
	r.queue(cmds, []byte{'1', '2'}, endsWithSync)
	return r.upw.Flush()
}

// queue queues commands awaiting completion and response types to
// swallow. Only what ends in Sync (or is a simple query or function call)
// starts a new cycle; commands of a batch that does not end with the next
// ReadyForQuery.
func (r *relay) queue(cmds []*command, drop []byte, newCycle bool) {
	ready := r.sent + 1
	if newCycle {
		r.sent++
	}
	now := time.Now()
	r.mu.Lock()
	for _, c := range cmds {
		c.start, c.ready = now, ready
		r.pending = append(r.pending, c)
	}
	r.drop = append(r.drop, drop...)
	r.mu.Unlock()
}

// fromTarget frames the target's messages and passes them on, decoding only
// those that end a command; DataRow bodies are streamed, never held whole.
func (r *relay) fromTarget() error {
	br := bufio.NewReaderSize(r.up, 64<<10)
	r.br = br
	cw := r.cw
	var hdr [5]byte
	for {
		if _, err := io.ReadFull(br, hdr[:]); err != nil {
			r.clientMu.Lock()
			cw.Flush()
			r.clientMu.Unlock()
			return err
		}
		r.clientMu.Lock()
		err := r.relayMessage(br, cw, hdr)
		if err == nil && br.Buffered() == 0 {
			err = cw.Flush()
		}
		r.clientMu.Unlock()
		if err != nil {
			return err
		}
	}
}

// relayMessage passes one message from the target to the agent's buffer.
// Called with clientMu held.
func (r *relay) relayMessage(br *bufio.Reader, cw *bufio.Writer, hdr [5]byte) error {
	typ := hdr[0]
	n := int64(binary.BigEndian.Uint32(hdr[1:])) - 4
	if n < 0 || n > maxResponseBody {
		return fmt.Errorf("target sent a %q message of %d bytes", typ, n)
	}
	r.mu.Lock()
	swallow := len(r.drop) > 0 && r.drop[0] == typ
	if swallow {
		r.drop = r.drop[1:]
	}
	r.mu.Unlock()
	if swallow {
		_, err := br.Discard(int(n))
		return err
	}
	switch typ {
	case 'D': // DataRow: count; stream through unless masked
		r.mu.Lock()
		var lay *layout
		var build *command
		var fields []pgproto3.FieldDescription
		var portalRaw string
		// Rows that belong to no statement we sent cannot be laid out:
		// under masks, never pass them.
		undescribed := len(r.pending) == 0 && !r.session.Empty()
		if len(r.pending) > 0 {
			head := r.pending[0]
			head.rows++
			if !head.masker.Empty() {
				switch {
				case head.layout != nil:
					if head.layout.active() {
						lay = head.layout
					}
				default:
					// Rows of exactly this binding of the portal, or this
					// version of the statement.
					build = head
					if pd, ok := r.portalCols[head.portal]; ok && pd.ver == head.portalVer && pd.raw != "" {
						portalRaw = pd.raw
					} else {
						d, ok := r.stmtCols[head.stmt]
						fields = d.fields
						undescribed = !ok || d.ver != head.stmtVer
					}
				}
			}
		}
		r.mu.Unlock()
		if undescribed {
			// Without its description a row's columns are unknown: never
			// guess (a stale description would put a masked value under
			// another column's name).
			out, _ := fatal(codeFeatureNotSupported, "loopgate: result rows under masks need a Describe of the statement or portal first").Encode(nil)
			cw.Write(out)
			cw.Flush()
			return fmt.Errorf("result rows without their description under masks")
		}
		if build != nil && portalRaw != "" {
			// First row of an Execute whose portal was described.
			l, ok := r.layoutOf([]byte(portalRaw), build.masker)
			if !ok {
				return fmt.Errorf("target sent a malformed RowDescription")
			}
			r.mu.Lock()
			build.layout = l
			r.mu.Unlock()
			if l.active() {
				lay = l
			}
		} else if build != nil {
			// First row of an Execute whose statement was described:
			// its layout, with real column names (looked up outside the
			// lock).
			c := r.stmtLayouts[build.stmt]
			if !c.fresh(build.masker, build.formats) || c.ver != build.stmtVer {
				c = cachedLayout{m: build.masker, formats: build.formats, at: time.Now(), ver: build.stmtVer,
					l: newLayout(fields, build.formats, build.masker, r.columnNames(fields))}
				r.stmtLayouts[build.stmt] = c
			}
			l := c.l
			r.mu.Lock()
			build.layout = l
			r.mu.Unlock()
			if l.active() {
				lay = l
			}
		}
		if lay != nil {
			body := make([]byte, n)
			if _, err := io.ReadFull(br, body); err != nil {
				return err
			}
			out, ok := lay.maskRow(body)
			if !ok {
				return fmt.Errorf("target sent a malformed DataRow")
			}
			_, err := cw.Write(out)
			return err
		}
		cw.Write(hdr[:])
		if err := copyN(cw, br, n); err != nil {
			return err
		}
	case 'H', 'd':
		r.mu.Lock()
		var m *mask.Masker
		var cm *copyMask
		if len(r.pending) > 0 {
			if r.pending[0].masker.HasDetectors() {
				m = r.pending[0].masker
			}
			cm = r.pending[0].copyOut
		}
		r.mu.Unlock()
		if m == nil && cm == nil {
			cw.Write(hdr[:])
			if err := copyN(cw, br, n); err != nil {
				return err
			}
			break
		}
		body := make([]byte, n)
		if _, err := io.ReadFull(br, body); err != nil {
			return err
		}
		refuse := func(err error) error {
			out, _ := fatal(codeFeatureNotSupported, "loopgate: COPY cannot be masked: "+err.Error()).Encode(nil)
			cw.Write(out)
			cw.Flush()
			return err
		}
		if typ == 'H' {
			if len(body) > 0 && body[0] == 1 {
				// Binary COPY cannot be scanned: end the session.
				return refuse(fmt.Errorf("binary COPY of masked data is refused"))
			}
			if cm != nil && len(body) >= 3 {
				if err := cm.columns(int(binary.BigEndian.Uint16(body[1:3]))); err != nil {
					return refuse(err)
				}
			}
			cw.Write(hdr[:])
			cw.Write(body)
			break
		}
		data := body
		if cm != nil {
			var err error
			if data, err = cm.row(body); err != nil {
				return refuse(err)
			}
			if len(data) == 0 {
				break // loopgate's own header line
			}
		}
		if m != nil {
			data = m.Scan(data)
		}
		out, _ := (&pgproto3.CopyData{Data: data}).Encode(nil)
		cw.Write(out)
	case 'N': // NoticeResponse: masked like errors
		body := make([]byte, n)
		if _, err := io.ReadFull(br, body); err != nil {
			return err
		}
		r.mu.Lock()
		var m *mask.Masker
		if len(r.pending) > 0 {
			m = r.pending[0].masker
		}
		r.mu.Unlock()
		if out := r.maskReport('N', body, m); out != nil {
			cw.Write(out)
		} else {
			cw.Write(hdr[:])
			cw.Write(body)
		}
	case 'S': // ParameterStatus: a setting policy depends on must not change
		body := make([]byte, n)
		if _, err := io.ReadFull(br, body); err != nil {
			return err
		}
		var ps pgproto3.ParameterStatus
		if err := ps.Decode(body); err == nil && sqlclass.UnsafeSetting(ps.Name, ps.Value) {
			out, _ := fatal(codeFeatureNotSupported, fmt.Sprintf("loopgate: %s changed to %s, which policy cannot follow; ending the session", ps.Name, ps.Value)).Encode(nil)
			cw.Write(out)
			cw.Flush()
			return fmt.Errorf("server setting %s changed to %s", ps.Name, ps.Value)
		}
		cw.Write(hdr[:])
		cw.Write(body)
	case 't', 'T', 'n', 'A':
		body := make([]byte, n)
		if _, err := io.ReadFull(br, body); err != nil {
			return err
		}
		if out := r.describeOrNotify(typ, body); out != nil {
			cw.Write(out)
		} else {
			cw.Write(hdr[:])
			cw.Write(body)
		}
	case 'C', 'I', 's', 'E', 'Z':
		// complete keeps nothing of the body: read it into scratch.
		if int64(cap(r.scratch)) < n {
			r.scratch = make([]byte, n)
		}
		body := r.scratch[:n]
		if _, err := io.ReadFull(br, body); err != nil {
			return err
		}
		if cap(r.scratch) > 1<<20 {
			r.scratch = nil
		}
		out := r.complete(typ, body)
		if out == nil {
			cw.Write(hdr[:])
			cw.Write(body)
		} else {
			cw.Write(out)
		}
	default:
		cw.Write(hdr[:])
		if err := copyN(cw, br, n); err != nil {
			return err
		}
	}
	return nil
}

// notice sends the agent a NoticeResponse between two target messages.
func (r *relay) notice(msg string) {
	b, err := (&pgproto3.NoticeResponse{Severity: "NOTICE", SeverityUnlocalized: "NOTICE", Code: "00000", Message: msg}).Encode(nil)
	if err != nil {
		return
	}
	r.clientMu.Lock()
	defer r.clientMu.Unlock()
	r.cw.Write(b)
	r.cw.Flush()
}

// maxApprovalText is the longest statement put to an approver, whole.
const maxApprovalText = 64 << 10

// approve holds a command for approval. It returns the decision to apply:
// allow when approved, deny (with the reason) otherwise.
func (r *relay) approve(c *command) policy.Decision {
	d := c.decision
	if len(c.text) > maxApprovalText {
		// An approver must see all of what they approve.
		d.Action = policy.Deny
		d.Reason = fmt.Sprintf("not approved: the statement (%d bytes) is too long to show an approver (limit %d); split it", len(c.text), maxApprovalText)
		return d
	}
	out, err := r.s.Approve(r.ctx, d, c.text, c.params, func(q policy.Request) {
		r.notice(fmt.Sprintf("loopgate: waiting for approval %s (%s under rule %s); an approver runs: loopgate approvals approve %s", q.ID, q.Class, q.RuleID, q.ID))
	})
	c.approval = out.ID
	if err == nil && out.Approved {
		d.Action = policy.Allow
		d.Reason = out.Reason
		return d
	}
	d.Action = policy.Deny
	d.Reason = "not approved: " + nonEmpty(out.Reason, errString(err))
	return d
}

func nonEmpty(s, def string) string {
	if s != "" {
		return s
	}
	return def
}

// complete accounts a message that ends a command or a cycle. It returns a
// replacement encoding, or nil to pass the message through as it came.
func (r *relay) complete(typ byte, body []byte) []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	if typ == 'Z' {
		r.seen++
		if len(body) > 0 {
			r.txStatus = body[0]
		}
		for len(r.describes) > 0 && r.describes[0].ready <= r.seen {
			r.describes = r.describes[1:]
		}
		r.describing = nil
		for len(r.pending) > 0 && r.pending[0].ready <= r.seen {
			r.finish(r.pending[0], "", "not executed: an earlier statement failed")
			r.pending = r.pending[1:]
		}
		return nil
	}
	if len(r.pending) == 0 {
		if typ == 'E' {
			return r.maskError(body, nil)
		}
		return nil
	}
	c := r.pending[0]
	r.pending = r.pending[1:]
	switch typ {
	case 'C':
		r.finish(c, cstring(body), "")
	case 'I':
		r.finish(c, "EMPTY", "")
	case 's':
		r.finish(c, "SUSPENDED", "")
	case 'E':
		var e pgproto3.ErrorResponse
		if err := e.Decode(body); err != nil {
			r.finish(c, "", "undecodable error")
			return nil
		}
		if c.injected {
			// Our own denial: drop the PL/pgSQL context line that the
			// DO block adds, so the agent sees loopgate's message alone.
			r.finish(c, "", c.decision.Reason)
			e.Where, e.Routine, e.File, e.Line = "", "", "", 0
			out, err := e.Encode(nil)
			if err == nil {
				return out
			}
			return nil
		}
		r.finish(c, "", e.Code+": "+e.Message)
		return r.maskError(body, c.masker)
	}
	return nil
}

// maskError masks the text of an ErrorResponse (a unique violation's detail
// echoes the offending value) with the command's and the session's
// detectors. It returns nil when nothing changed.
func (r *relay) maskError(body []byte, m *mask.Masker) []byte { return r.maskReport('E', body, m) }

// detailWithheld replaces the detail of errors and notices under column
// masks: "Failing row contains (…)" and "conflicts with existing key (…)"
// print stored values, masked columns included.
const detailWithheld = "loopgate: detail withheld (it can carry stored values; the rule masks columns)"

// maskReport masks an ErrorResponse or NoticeResponse (typ 'E' or 'N'):
// value detectors over its text, and its detail withheld under column
// masks. It returns nil when nothing changed.
func (r *relay) maskReport(typ byte, body []byte, m *mask.Masker) []byte {
	columns := m.HasColumns() || r.session.HasColumns()
	if !columns && !m.HasDetectors() && !r.session.HasDetectors() {
		return nil
	}
	var e pgproto3.ErrorResponse
	if err := e.Decode(body); err != nil {
		return nil
	}
	scan := func(s string) string {
		if m.HasDetectors() {
			s = m.String(s)
		}
		if r.session.HasDetectors() {
			s = r.session.String(s)
		}
		return s
	}
	e.Message, e.Detail, e.Hint, e.Where = scan(e.Message), scan(e.Detail), scan(e.Hint), scan(e.Where)
	if columns && e.Detail != "" {
		e.Detail = detailWithheld
	}
	var out []byte
	var err error
	if typ == 'N' {
		out, err = (*pgproto3.NoticeResponse)(&e).Encode(nil)
	} else {
		out, err = e.Encode(nil)
	}
	if err != nil {
		return nil
	}
	return out
}

// layoutOf returns the layout of rows described by a RowDescription body
// under m, from the cache or built (with real column names, which may query
// the target: call it without mu held). It reports false for a malformed
// description.
func (r *relay) layoutOf(body []byte, m *mask.Masker) (*layout, bool) {
	if c := r.descLayouts[string(body)]; c.fresh(m, nil) {
		return c.l, true
	}
	var rd pgproto3.RowDescription
	if err := rd.Decode(body); err != nil {
		return nil, false
	}
	l := newLayout(rd.Fields, nil, m, r.columnNames(rd.Fields))
	if len(r.descLayouts) >= maxCachedLayouts {
		clear(r.descLayouts)
	}
	r.descLayouts[string(body)] = cachedLayout{m: m, l: l, at: time.Now()}
	return l, true
}

// describeOrNotify follows statement descriptions (their columns are
// needed to mask later Executes) and masks notification payloads. It
// returns a replacement encoding or nil.
func (r *relay) describeOrNotify(typ byte, body []byte) []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch typ {
	case 't':
		if len(r.describes) > 0 {
			d := r.describes[0]
			r.describes = r.describes[1:]
			r.describing = &d
		}
	case 'n':
		switch {
		case r.describing != nil:
			r.describing = nil
		case len(r.describes) > 0 && r.describes[0].portal:
			d := r.describes[0]
			r.describes = r.describes[1:]
			r.portalCols[d.name] = portalDesc{ver: d.ver}
		}
	case 'T':
		if r.describing == nil && len(r.describes) > 0 && r.describes[0].portal {
			// A portal's description: for its Execute's rows.
			d := r.describes[0]
			r.describes = r.describes[1:]
			r.portalCols[d.name] = portalDesc{ver: d.ver, raw: string(body)}
			return nil
		}
		if r.describing != nil {
			var rd pgproto3.RowDescription
			if err := rd.Decode(body); err != nil {
				return nil
			}
			r.stmtCols[r.describing.name] = described{ver: r.describing.ver, fields: rd.Fields}
			delete(r.stmtLayouts, r.describing.name)
			r.describing = nil
		} else if len(r.pending) > 0 && !r.pending[0].masker.Empty() {
			// A simple query's result: for its rows.
			head := r.pending[0]
			r.mu.Unlock() // the name lookup may go to the target
			l, ok := r.layoutOf(body, head.masker)
			r.mu.Lock()
			if ok {
				head.layout = l
			}
		}
	case 'A':
		if !r.session.HasDetectors() {
			return nil
		}
		var n pgproto3.NotificationResponse
		if err := n.Decode(body); err != nil {
			return nil
		}
		n.Payload = r.session.String(n.Payload)
		out, err := n.Encode(nil)
		if err != nil {
			return nil
		}
		return out
	}
	return nil
}

// finish queues the result record of a command. Called with mu held.
func (r *relay) finish(c *command, tag, errText string) {
	ev := event.Event{Kind: event.KindResult, Text: shorten(c.text, 200), Tag: tag, Decision: string(c.decision.Action),
		RuleID: c.decision.RuleID, Duration: time.Since(c.start), Rows: c.rows, Error: errText}
	if c.deferred {
		ev.Kind, ev.Text, ev.Params = event.KindCommand, c.text, c.params
	}
	// RecordAsync may wait for the writer (a full queue); never hold mu then.
	r.mu.Unlock()
	r.s.RecordAsync(ev)
	r.mu.Lock()
}

func cstring(b []byte) string {
	if i := indexByte(b, 0); i >= 0 {
		return string(b[:i])
	}
	return string(b)
}

func indexByte(b []byte, c byte) int {
	for i, x := range b {
		if x == c {
			return i
		}
	}
	return -1
}

func shorten(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

func denyMessage(c *command) string {
	return "loopgate: " + c.decision.Reason
}

func denyHint(c *command) string {
	h := "statement classes: " + strings.Join(c.classes, ", ")
	if c.decision.RuleID != "" {
		h += "; rule " + c.decision.RuleID
	}
	return h
}

// formatParams renders bind parameters for the record: text values as
// they are, binary ones as their length.
func formatParams(b *pgproto3.Bind) string {
	if len(b.Parameters) == 0 {
		return ""
	}
	parts := make([]string, len(b.Parameters))
	for i, p := range b.Parameters {
		binary := len(b.ParameterFormatCodes) == 1 && b.ParameterFormatCodes[0] == 1 ||
			i < len(b.ParameterFormatCodes) && len(b.ParameterFormatCodes) > 1 && b.ParameterFormatCodes[i] == 1
		switch {
		case p == nil:
			parts[i] = "NULL"
		case binary:
			parts[i] = fmt.Sprintf("<binary %d bytes>", len(p))
		default:
			parts[i] = shorten(string(p), 200)
		}
	}
	return strings.Join(parts, ", ")
}
