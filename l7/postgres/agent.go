package postgres

// The agent side of the relay: messages from the agent are framed,
// decided (classified, approved, recorded) and forwarded or replaced.

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/loopgate/loopgate/l7"
	"github.com/loopgate/loopgate/policy"
	"github.com/loopgate/loopgate/policy/mask"
	"github.com/loopgate/loopgate/policy/sqlclass"
)

// fromAgent reads the agent's messages, decides, and forwards them as they
// came (decoding only what policy needs).
func (r *relay) fromAgent() error {
	for {
		typ, raw, err := r.nextAgentMessage()
		if err != nil {
			return err
		}
		if err := r.agentMessage(typ, raw); err != nil {
			return err // errTerminated: the agent said goodbye
		}
	}
}

// errTerminated is agentMessage's answer to Terminate: the agent is done.
var errTerminated = errors.New("agent terminated the session")

// agentMessage decides and forwards one message of the agent (type typ,
// whole encoding raw, valid only during the call).
func (r *relay) agentMessage(typ byte, raw []byte) error {
	body := raw[5:]
	if r.skipToSync && typ != 'S' {
		return nil
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
		res := r.h.classifier().ClassifyMiss(m.Query, r.lookupSQLPrepared, r.parsing)
		v := r.vet(res)
		r.stmts[m.Name] = prepared{text: m.Query, classes: v.classes, why: v.why, deny: v.deny, parsed: res.Statements}
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
		v := vetted{classes: st.classes, why: st.why, deny: st.deny}
		if !p.bound {
			v = vetted{classes: []string{sqlclass.Unknown}}
		}
		classes := v.classes
		c := &command{Command: l7.Command{Text: st.text, Params: p.params, Classes: classes}, stmt: p.stmt, stmtVer: p.ver,
			portal: m.Portal, portalVer: p.pver, formats: p.formats}
		c.Decision = r.decide(v)
		r.checkMasks(c, st.parsed, false)
		c.masker = r.maskerFor(c.Decision)
		if c.masker.HasDetectors() {
			c.Params = c.masker.String(c.Params)
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
		return errTerminated
	default:
		return r.violation(fmt.Errorf("unexpected message type %q", typ))
	}
	return nil
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
// Copies go to one buffer the session reuses (flushBatch empties it).
func (r *relay) hold(raw []byte, exec *command, sync bool) {
	start := len(r.held)
	r.held = append(r.held, raw...)
	r.batch = append(r.batch, batched{raw: r.held[start:len(r.held):len(r.held)], exec: exec, sync: sync})
}

// maxHeldKept is the largest held-message buffer kept for reuse.
const maxHeldKept = 1 << 20

// authorize settles and records decided commands before they are
// forwarded, through the session's one decision path (l7.Session.Authorize):
// a command the policy holds for approval waits for approvers there; the
// records are durable (no record, no forward) unless every command is
// allowed under a rule that says record: async, in which case each record
// waits for its result and is written once, complete, behind the relay. On
// the event loop, allowed commands' records the store takes without
// waiting are written on the loop; the rest leave it first (mayBlock).
// Commands after the first not allowed are refused unrecorded, as the
// server skips a pipeline after an error. An error: not recorded.
func (r *relay) authorize(cmds ...*command) error {
	async, allowed := true, true
	for _, c := range cmds {
		async = async && c.Decision.Action == policy.Allow && c.Decision.AsyncRecord
		allowed = allowed && c.Decision.Action == policy.Allow
	}
	if async {
		for _, c := range cmds {
			c.deferred = true
		}
		return nil
	}
	if len(cmds) == 0 {
		return nil
	}
	lc := make([]*l7.Command, len(cmds))
	for i, c := range cmds {
		lc[i] = &c.Command
		if c.Decision.Action == policy.Approve {
			c.Notify = func(q policy.Request) {
				r.notice(fmt.Sprintf("loopgate: waiting for approval %s (%s under rule %s); an approver runs: loopgate approvals approve %s", q.ID, q.Class, q.RuleID, q.ID))
			}
		}
	}
	if r.t.evented() && allowed {
		if ok, err := r.s.AuthorizeNow(lc...); ok || err != nil {
			return err
		}
	}
	r.mayBlock(false)
	return r.s.Authorize(r.ctx, lc...)
}

// query handles a simple-protocol Query: every statement in the string is
// classified; if any is not allowed, the whole string is replaced.
func (r *relay) query(sql string, raw []byte) error {
	res := r.h.classifier().ClassifyMiss(sql, r.lookupSQLPrepared, r.parsing)
	v := r.vet(res)
	c := &command{Command: l7.Command{Text: sql, Classes: v.classes}}
	c.Decision = r.decide(v)
	r.checkMasks(c, res.Statements, true)
	if err := r.authorize(c); err != nil {
		return r.recordFailed(err)
	}
	if c.Decision.Action != policy.Allow {
		return r.deny(c, func() error { return r.forward(&pgproto3.Query{String: raiseSQL(denyMessage(c), denyHint(c))}) })
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
	m := r.maskerFor(c.Decision)
	for i := range cmds {
		cmds[i] = &command{Command: l7.Command{Text: sql, Classes: c.Classes, Decision: c.Decision}, masker: m}
		if i < len(res.Statements) {
			cmds[i].Text = res.Statements[i].Text
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
	c := &command{Command: l7.Command{Text: fmt.Sprintf("function call oid %d", oid), Classes: []string{sqlclass.Unknown}}}
	if err := r.authorize(c); err != nil {
		return r.recordFailed(err)
	}
	if c.Decision.Action != policy.Allow {
		return r.deny(c, func() error { return r.forward(&pgproto3.Query{String: raiseSQL(denyMessage(c), denyHint(c))}) })
	}
	r.push([]*command{c}, nil)
	if _, err := r.upw.Write(raw); err != nil {
		return err
	}
	return r.upw.Flush()
}

// deny sends the replacement of a denied simple command (authorized, so
// recorded, before).
func (r *relay) deny(c *command, send func() error) error {
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
func (r *relay) push(cmds []*command, drop []dropped) { r.queue(cmds, drop, true) }

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
	defer func() {
		if len(r.batch) > 0 {
			return // held again meanwhile: the buffers are in use
		}
		clear(batch)
		r.batch = batch[:0]
		r.held = r.held[:0]
		if cap(r.held) > maxHeldKept {
			r.held, r.batch = nil, nil
		}
	}()
	var cmds []*command
	for _, b := range batch {
		if b.exec != nil {
			cmds = append(cmds, b.exec)
		}
	}
	if err := r.authorize(cmds...); err != nil {
		return r.recordFailed(err)
	}
	denied := -1
	cmds = cmds[:0]
	for i, b := range batch {
		if b.exec == nil {
			continue
		}
		cmds = append(cmds, b.exec)
		if b.exec.Decision.Action != policy.Allow {
			denied = i
			break
		}
	}
	endsWithSync := batch[len(batch)-1].sync
	r.unsynced = !endsWithSync
	// Parses and Binds sent in this cycle: the server answers each with
	// ParseComplete or BindComplete, in order.
	parses, binds := r.cycleParses, r.cycleBinds
	count := func(bs []batched) {
		for _, b := range bs {
			switch {
			case len(b.raw) == 0:
			case b.raw[0] == 'P':
				parses++
			case b.raw[0] == 'B':
				binds++
			}
		}
	}
	if denied < 0 {
		for _, b := range batch {
			r.upw.Write(b.raw)
		}
		count(batch)
		r.queue(cmds, nil, endsWithSync)
		if !endsWithSync {
			r.cycleParses, r.cycleBinds = parses, binds
		}
		return r.upw.Flush()
	}
	for _, b := range batch[:denied] {
		r.upw.Write(b.raw)
	}
	count(batch[:denied])
	c := batch[denied].exec
	c.injected = true
	sql := raiseFor(c)
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
	// Swallow the ParseComplete and BindComplete of our Parse and Bind
	// exactly: they come after those of the messages before them, which
	// the agent must see, in the order the server sends them.
	r.queue(cmds, []dropped{{typ: '1', nth: parses}, {typ: '2', nth: binds}}, endsWithSync)
	if !endsWithSync {
		r.cycleParses, r.cycleBinds = parses+1, binds+1
	}
	return r.upw.Flush()
}

// queue queues commands awaiting completion and responses to swallow
// (in the cycle the commands belong to). Only what ends in Sync (or is a
// simple query or function call) starts a new cycle; commands of a batch
// that does not end with the next ReadyForQuery.
func (r *relay) queue(cmds []*command, drop []dropped, newCycle bool) {
	ready := r.sent + 1
	if newCycle {
		r.sent++
		r.cycleParses, r.cycleBinds = 0, 0
	}
	now := time.Now()
	r.mu.Lock()
	for _, c := range cmds {
		c.start, c.ready = now, ready
		r.pending = append(r.pending, c)
	}
	for _, d := range drop {
		d.ready = ready
		r.drop = append(r.drop, d)
	}
	r.mu.Unlock()
}

func denyMessage(c *command) string {
	return "loopgate: " + c.Decision.Reason
}

func denyHint(c *command) string {
	h := "statement classes: " + strings.Join(c.Classes, ", ")
	if c.Decision.RuleID != "" {
		h += "; rule " + c.Decision.RuleID
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
