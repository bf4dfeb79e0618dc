package postgres

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/loopgate/loopgate/l7"
	"github.com/loopgate/loopgate/policy"
	"github.com/loopgate/loopgate/policy/mask"
	"github.com/loopgate/loopgate/policy/sqlclass"
)

// maxResponseBody bounds one message from the target (PostgreSQL's own
// limit on a row is 1 GiB).
const maxResponseBody = 1<<30 + 1<<20

// command is one statement on its way through the target: decided,
// forwarded, waiting for its completion message.
type command struct {
	l7.Command      // text, classes, decision and approval: l7.Session.Authorize settles it
	injected   bool // a denial raised in its place
	// tooBig: a statement over max_statement_bytes, denied unread
	// (limit.go); its denial raises SQLSTATE 54000.
	tooBig bool
	// deferred: the command's record waits for its result and is written
	// once, complete (record: async rules).
	deferred bool
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

// dropped is a response to one of loopgate's own messages, swallowed on
// its way to the agent: the nth (from 0) message of type typ ('1' or '2')
// in the cycle that ReadyForQuery number ready ends. Counting places it
// exactly: matching the first of its type would swallow the agent's own
// ParseComplete of a statement before the denied one, and pass ours
// after the rows of that statement.
type dropped struct {
	typ   byte
	ready int64
	nth   int
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
	client *l7.CountingConn
	up     *l7.CountingConn
	upw    *bufio.Writer

	batch       []batched
	held        []byte // the bytes batch's messages point into
	skipToSync  bool
	stmts       map[string]prepared // protocol-level prepared statements
	portals     map[string]portal
	sqlPrepared map[string][]string // SQL-level PREPARE name -> classes
	// sqlPreparedRefs: SQL-level PREPARE name -> how it uses columns.
	sqlPreparedRefs map[string]sqlclass.Refs
	sent            int64 // cycles sent (each ends in one ReadyForQuery)
	// cycleParses and cycleBinds count the Parse and Bind messages sent
	// in the cycle not yet closed (a batch that ended with Flush).
	cycleParses, cycleBinds int
	stmtVer                 map[string]int // Parses seen per statement name
	portalVer               map[string]int // Binds seen per portal name

	mu      sync.Mutex
	pending []*command
	drop    []dropped // injected responses to swallow, in order
	seen    int64     // ReadyForQuery messages seen
	// gotParses and gotBinds count the ParseComplete and BindComplete
	// messages of the cycle under way (the one ReadyForQuery seen+1 ends).
	gotParses, gotBinds int
	describes           []describe

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

	// maskers by rule id, built on first use (agent side); session masks
	// error details and notifications.
	maskers        map[string]*mask.Masker
	maskersCfg     *policy.Config // the config maskers were built from
	maskersLearned uint64         // and the Learned version
	session        *mask.Masker

	// How the session ended, for reusing the server connection: the agent
	// sent Terminate (terminated), the last ReadyForQuery said txStatus,
	// an extended batch went out without Sync (unsynced), both sides
	// stopped without error (cleanEnd).
	terminated bool
	txStatus   byte
	unsynced   bool
	cleanEnd   bool

	params map[string]string // the agent's startup parameters
	ro     readOnlyState     // readonly.go

	// t moves the bytes (transport.go); stopMu guards setting it, and
	// stopped (stop was called).
	stopMu  sync.Mutex
	t       transport
	stopped bool
	// targetIdle: nothing the target sent was left unread (after run).
	targetIdle bool
}

// endedFatal is what the agent is told when loopgate ends its session
// (shutdown, revocation): why, as PostgreSQL says it at its own shutdown.
func (r *relay) endedFatal() *pgproto3.ErrorResponse {
	return fatal(codeAdminShutdown, "loopgate: session ended: "+context.Cause(r.ctx).Error())
}

// parsing is called before the classifier parses a statement it has not
// seen: parsing a long one takes long enough to hold up other sessions on
// the event loop, so the agent side leaves it.
func (r *relay) parsing() { r.mayBlock(false) }

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
	why     string               // vetted: what the catalog found (readonly.go)
	deny    string               // vetted: denied whatever the rule says
	parsed  []sqlclass.Statement // read-only: shared with the classifier's cache
}

func newRelay(ctx context.Context, h *Handler, s *l7.Session, be *pgproto3.Backend, in *agentReader, client, up *l7.CountingConn) *relay {
	r := &relay{
		ctx: ctx, h: h, s: s, be: be, in: in, client: client, up: up,
		upw:             pooledWriter(up),
		cw:              pooledWriter(client),
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
	r.t = &goTransport{r: r} // until run is given one
	return r
}

// release gives the relay's buffers back once it has ended.
func (r *relay) release() {
	releaseWriter(r.upw)
	releaseWriter(r.cw)
	r.upw, r.cw = nil, nil
}

func isEnd(err error) bool {
	var ne net.Error
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, errStopped) ||
		errors.As(err, &ne) && ne.Timeout() || isReset(err)
}

// reusable reports whether the server connection is between transactions
// with nothing in flight after the session: the agent said goodbye (after
// run has returned).
func (r *relay) reusable() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.terminated && r.cleanEnd && r.txStatus == 'I' && !r.unsynced && !r.skipToSync && len(r.batch) == 0 &&
		len(r.pending) == 0 && len(r.drop) == 0 && r.sent == r.seen && r.targetIdle
}

// violation ends the session on a malformed or unexpected message, telling
// the agent why.
func (r *relay) violation(err error) error {
	r.be.Send(fatal(codeProtocolViolation, "loopgate: protocol violation: "+err.Error()))
	r.be.Flush()
	return fmt.Errorf("protocol violation: %w", err)
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
