package postgres

// The target side of the relay: messages from the target are framed and
// passed on, masked where a rule says so, and close the commands they end.

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/loopgate/loopgate/policy/mask"
	"github.com/loopgate/loopgate/policy/sqlclass"
	"github.com/loopgate/loopgate/store/event"
)

// columnNames finds the real table and column of result columns. Called
// without mu held: it may query the target.
func (r *relay) columnNames(fields []pgproto3.FieldDescription) []colName {
	r.mayBlock(true)
	return r.h.names.resolve(r.ctx, r.s.Subject.Target, r.s.Subject.OrigDst.String(), r.params, fields)
}

// relayMessage passes one message from the target to the agent's buffer.
// Called with clientMu held.
func (r *relay) relayMessage(src msgSource, cw *bufio.Writer, hdr [5]byte) error {
	typ := hdr[0]
	n := int64(binary.BigEndian.Uint32(hdr[1:])) - 4
	if n < 0 || n > maxResponseBody {
		return fmt.Errorf("target sent a %q message of %d bytes", typ, n)
	}
	if typ == '1' || typ == '2' {
		r.mu.Lock()
		swallow := r.swallow(typ)
		r.mu.Unlock()
		if swallow {
			return src.skip(n)
		}
	}
	switch typ {
	case 'D':
		return r.dataRow(src, cw, hdr, n)
	case 'H', 'd':
		return r.copyData(src, cw, hdr, n)
	case 'N':
		return r.noticeFrom(src, cw, hdr, n)
	case 'S':
		return r.parameterStatus(src, cw, hdr, n)
	case 't', 'T', 'n', 'A':
		return r.described(src, cw, hdr, n)
	case 'C', 'I', 's', 'E', 'Z':
		return r.completion(src, cw, hdr, n)
	}
	cw.Write(hdr[:])
	return src.passOn(cw, n)
}

// dataRow passes a DataRow on: counted, streamed through unless its
// command's masks apply, laid out (once per statement) when they do.
func (r *relay) dataRow(src msgSource, cw *bufio.Writer, hdr [5]byte, n int64) error {
	lay, err := r.rowLayout(cw)
	if err != nil {
		return err
	}
	if lay != nil {
		body, err := src.body(n)
		if err != nil {
			return err
		}
		out, ok := lay.maskRow(body)
		if !ok {
			return fmt.Errorf("target sent a malformed DataRow")
		}
		_, err = cw.Write(out)
		return err
	}
	cw.Write(hdr[:])
	return src.passOn(cw, n)
}

// rowLayout counts a row for the command it belongs to and returns the
// layout that masks it: nil when no masks apply (the row streams
// through). The layout is built on the command's first row, from its
// portal's or statement's description.
func (r *relay) rowLayout(cw *bufio.Writer) (*layout, error) {
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
		return nil, fmt.Errorf("result rows without their description under masks")
	}
	if build != nil && portalRaw != "" {
		// First row of an Execute whose portal was described.
		l, ok := r.layoutOf([]byte(portalRaw), build.masker)
		if !ok {
			return nil, fmt.Errorf("target sent a malformed RowDescription")
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
	return lay, nil
}

// copyData passes COPY OUT data on (CopyOutResponse 'H', CopyData 'd'):
// through column masks and detectors where a rule has them; binary COPY
// under masks ends the session.
func (r *relay) copyData(src msgSource, cw *bufio.Writer, hdr [5]byte, n int64) error {
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
		return src.passOn(cw, n)
	}
	body, err := src.body(n)
	if err != nil {
		return err
	}
	refuse := func(err error) error {
		out, _ := fatal(codeFeatureNotSupported, "loopgate: COPY cannot be masked: "+err.Error()).Encode(nil)
		cw.Write(out)
		cw.Flush()
		return err
	}
	if hdr[0] == 'H' {
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
		return nil
	}
	data := body
	if cm != nil {
		var err error
		if data, err = cm.row(body); err != nil {
			return refuse(err)
		}
		if len(data) == 0 {
			return nil // loopgate's own header line
		}
	}
	if m != nil {
		data = m.Scan(data)
	}
	out, _ := (&pgproto3.CopyData{Data: data}).Encode(nil)
	cw.Write(out)
	return nil
}

// noticeFrom passes a NoticeResponse on, masked like errors.
func (r *relay) noticeFrom(src msgSource, cw *bufio.Writer, hdr [5]byte, n int64) error {
	body, err := src.body(n)
	if err != nil {
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
	return nil
}

// parameterStatus passes a ParameterStatus on, unless it changes a
// setting policy depends on: that ends the session.
func (r *relay) parameterStatus(src msgSource, cw *bufio.Writer, hdr [5]byte, n int64) error {
	body, err := src.body(n)
	if err != nil {
		return err
	}
	var ps pgproto3.ParameterStatus
	if err := ps.Decode(body); err == nil && (sqlclass.UnsafeSetting(ps.Name, ps.Value) || r.readOnlyLost(ps.Name, ps.Value)) {
		out, _ := fatal(codeFeatureNotSupported, fmt.Sprintf("loopgate: %s changed to %s, which policy cannot follow; ending the session", ps.Name, ps.Value)).Encode(nil)
		cw.Write(out)
		cw.Flush()
		return fmt.Errorf("server setting %s changed to %s", ps.Name, ps.Value)
	}
	cw.Write(hdr[:])
	cw.Write(body)
	return nil
}

// described passes on what describes results or notifies (parameter and
// row descriptions, NoData, notifications), noting layouts and masking
// payloads.
func (r *relay) described(src msgSource, cw *bufio.Writer, hdr [5]byte, n int64) error {
	body, err := src.body(n)
	if err != nil {
		return err
	}
	if out := r.describeOrNotify(hdr[0], body); out != nil {
		cw.Write(out)
	} else {
		cw.Write(hdr[:])
		cw.Write(body)
	}
	return nil
}

// completion passes on what ends a command or a cycle (CommandComplete,
// EmptyQueryResponse, PortalSuspended, ErrorResponse, ReadyForQuery),
// closing the pending command it ends.
func (r *relay) completion(src msgSource, cw *bufio.Writer, hdr [5]byte, n int64) error {
	// complete keeps nothing of the body.
	body, err := src.transient(n)
	if err != nil {
		return err
	}
	out := r.complete(hdr[0], body)
	if out == nil {
		cw.Write(hdr[:])
		cw.Write(body)
	} else {
		cw.Write(out)
	}
	return nil
}

// swallow counts a ParseComplete or BindComplete (typ '1' or '2') in the
// cycle under way and reports whether it answers one of loopgate's own
// messages. Called with mu held.
func (r *relay) swallow(typ byte) bool {
	n := &r.gotParses
	if typ == '2' {
		n = &r.gotBinds
	}
	nth := *n
	*n++
	for i, d := range r.drop {
		if d.typ == typ && d.ready == r.seen+1 && d.nth == nth {
			r.drop = slices.Delete(r.drop, i, i+1)
			return true
		}
	}
	return false
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

// complete accounts a message that ends a command or a cycle. It returns a
// replacement encoding, or nil to pass the message through as it came.
func (r *relay) complete(typ byte, body []byte) []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	if typ == 'Z' {
		r.seen++
		r.gotParses, r.gotBinds = 0, 0
		// Ours that never came (an earlier message failed, and the
		// server skipped to Sync) are not waited for any more.
		r.drop = slices.DeleteFunc(r.drop, func(d dropped) bool { return d.ready <= r.seen })
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
			r.finish(c, "", c.Decision.Reason)
			e.Where, e.Routine, e.File, e.Line = "", "", "", 0
			out, err := e.Encode(nil)
			if err == nil {
				return out
			}
			return nil
		}
		r.finish(c, "", r.serverError(e.Code, e.Message))
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
	ev := event.Event{Kind: event.KindResult, Text: shorten(c.Text, 200), Tag: tag, Decision: string(c.Decision.Action),
		RuleID: c.Decision.RuleID, Duration: time.Since(c.start), Rows: c.rows, Error: errText}
	if c.deferred {
		ev.Kind, ev.Text, ev.Params = event.KindCommand, c.Text, c.Params
	}
	// RecordAsync may wait for the writer (a full queue); never hold mu then.
	r.mu.Unlock()
	r.s.RecordAsync(ev)
	r.mu.Lock()
}
