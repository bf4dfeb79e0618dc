package postgres

// The steady state of a plaintext session runs on one epoll loop shared by
// every session of the Handler, PgBouncer's model, instead of two
// goroutines per session. On a small machine shared with the clients and
// the database, the per-hop cost of Go's network poller (a goroutine woken
// per read, scheduler wake-ups between them) was most of the relay's CPU;
// one thread that reads, decides and writes for all sessions avoids it.
//
// Decisions are the same code either way (agentMessage, relayMessage). A
// handler that must wait (a record the store cannot take at once, an
// approval, a catalog lookup, a target message too big to hold) calls
// mayBlock first: the goroutine running the loop hands it to a new
// goroutine and goes on with that one side of that one session, off the
// loop, until its buffered messages are done, then gives the side back.
// Everything else stays on the loop, allowed statements' records included
// when the store takes them with one write to its log (sync: normal):
// handing the side off for each cost 15-20% of the loop's CPU.

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"golang.org/x/sys/unix"
)

const (
	loopRead   = 64 << 10 // room for each read
	loopHold   = 1 << 20  // a target message larger than this streams off the loop
	outHigh    = 1 << 20  // queued output at which the side feeding it pauses
	outLow     = 256 << 10
	finalFlush = 10 * time.Second // to deliver the last bytes at the end of a session
)

// errStopped ends a side that loopgate stopped (the other side ended, or
// the session was cancelled).
var errStopped = errors.New("relay stopped")

// loopSet is a Handler's event loops: one per two CPUs (one on a small
// machine, where the clients and the database need the rest), sessions
// spread over them in turn.
type loopSet struct {
	once  sync.Once
	loops []*evLoop
	next  atomic.Uint32
}

// close stops the loops (none may serve a session any more).
func (s *loopSet) close() {
	s.once.Do(func() {}) // none started after this
	for _, l := range s.loops {
		l.stop()
	}
	s.loops = nil
}

// pick returns the loop for a new session, or nil if none could start.
func (s *loopSet) pick() *evLoop {
	s.once.Do(func() {
		for range max(1, runtime.GOMAXPROCS(0)/2) {
			l := &evLoop{}
			if l.start() == nil {
				s.loops = append(s.loops, l)
			}
		}
	})
	if len(s.loops) == 0 {
		return nil
	}
	return s.loops[int(s.next.Add(1))%len(s.loops)]
}

// evLoop is the event loop. One goroutine at a time runs it (holds the
// baton); fds belongs to whoever does.
type evLoop struct {
	once sync.Once
	err  error
	epfd int
	wake int // eventfd: commands are queued

	mu   sync.Mutex
	cmds []func()

	fds    map[int]*loopFD
	ids    atomic.Uint32
	quit   bool          // baton holder: stop (set by stop's command)
	exited chan struct{} // closed by the holder that stops
}

// stop ends the loop and closes its descriptors.
func (l *evLoop) stop() {
	l.post(func() { l.quit = true })
	<-l.exited
	unix.Close(l.epfd)
	unix.Close(l.wake)
}

func (l *evLoop) start() error {
	l.once.Do(func() {
		if l.epfd, l.err = unix.EpollCreate1(unix.EPOLL_CLOEXEC); l.err != nil {
			return
		}
		if l.wake, l.err = unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC); l.err != nil {
			unix.Close(l.epfd)
			return
		}
		l.fds = map[int]*loopFD{}
		l.exited = make(chan struct{})
		l.err = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, l.wake, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(l.wake)})
		if l.err == nil {
			go l.run()
		}
	})
	return l.err
}

// post queues f to run on the loop, between events.
func (l *evLoop) post(f func()) {
	l.mu.Lock()
	l.cmds = append(l.cmds, f)
	l.mu.Unlock()
	one := [8]byte{1}
	unix.Write(l.wake, one[:])
}

func (l *evLoop) runCmds() {
	var b [8]byte
	unix.Read(l.wake, b[:])
	l.mu.Lock()
	cmds := l.cmds
	l.cmds = nil
	l.mu.Unlock()
	for _, f := range cmds {
		f()
	}
}

// run holds the baton until a handler takes it off the loop.
func (l *evLoop) run() {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	events := make([]unix.EpollEvent, 128)
	for {
		n, err := unix.EpollWait(l.epfd, events, -1)
		if err != nil {
			if err != unix.EINTR {
				time.Sleep(10 * time.Millisecond) // cannot happen with a valid epfd
			}
			continue
		}
		for _, ev := range events[:n] {
			if int(ev.Fd) == l.wake {
				if l.runCmds(); l.quit {
					close(l.exited)
					return
				}
				continue
			}
			// Level-triggered: an event skipped here (stale, or left when
			// the baton passes) is reported again if it still holds.
			f := l.fds[int(ev.Fd)]
			if f == nil || f.id != uint32(ev.Pad) {
				continue
			}
			if !f.ready(ev.Events) {
				return // this goroutine went off the loop with a session side
			}
		}
	}
}

// loopSession is one session's sides on the loop.
type loopSession struct {
	l      *evLoop
	r      *relay
	client *loopFD
	up     *loopFD
	agent  *loopDir
	target *loopDir
	done   chan struct{}

	ending   atomic.Bool // no more messages are handled
	finished bool        // loop: taken off the loop, done closed
}

// loopDir is one side of the session: the messages read from one socket.
type loopDir struct {
	s      *loopSession
	fd     *loopFD
	out    *loopFD // where its messages go
	target bool
	in     []byte
	start  int
	end    int
	src    memSource
	err    error // how this side ended (loop)
	// streaming: a message too big to hold is half passed on (set by the
	// goroutine running the side, read once the session is off the loop).
	streaming bool
	// discard: bytes still to come of a statement over the size limit,
	// dropped as they arrive (limit.go; the goroutine running the side).
	discard int64

	// Owned by the loop.
	paused   bool // out is backed up
	detached bool // a goroutine off the loop is running its messages
	// offLoop mirrors detached for writers, which may run anywhere.
	offLoop atomic.Bool
	// onLoop: the goroutine running its messages holds the baton (owned by
	// that goroutine).
	onLoop bool
}

// loopTransport relays on the event loop l. Both connections are plain
// TCP; their sockets leave Go's poller for the loop, and the server socket
// is given back to Go at the end (for the pool, or to close). buffered is
// what the agent sent after its startup that was already read.
type loopTransport struct {
	r        *relay
	l        *evLoop
	buffered []byte
	s        *loopSession // nil until pump has the sockets
	cfd, ufd int
	up       net.Conn // the server connection while Go has it
	stopped  bool     // stop came before the loop had the session (r.stopMu)
}

func newLoopTransport(r *relay, l *evLoop, buffered []byte) *loopTransport {
	return &loopTransport{r: r, l: l, buffered: buffered, cfd: -1, ufd: -1, up: r.up.Conn}
}

func (t *loopTransport) pump() sides {
	r, l := t.r, t.l
	cfd, ok := socketFD(r.client.Conn)
	if !ok {
		return sides{agent: fmt.Errorf("event loop: agent connection not taken")}
	}
	t.cfd = cfd
	ufd, ok := socketFD(r.up.Conn)
	if !ok {
		return sides{agent: fmt.Errorf("event loop: server connection not taken")}
	}
	t.ufd, t.up = ufd, nil
	s := &loopSession{l: l, r: r, done: make(chan struct{})}
	s.client = &loopFD{s: s, fd: cfd, id: l.ids.Add(1), count: &r.client.Out}
	s.up = &loopFD{s: s, fd: ufd, id: l.ids.Add(1), count: &r.up.Out}
	s.agent = &loopDir{s: s, fd: s.client, out: s.up, in: (*inputPool.Get().(*[]byte))[:0]}
	s.target = &loopDir{s: s, fd: s.up, out: s.client, target: true, in: (*inputPool.Get().(*[]byte))[:0]}
	s.agent.in = append(s.agent.in, t.buffered...)
	s.agent.end = len(s.agent.in)
	s.agent.in = s.agent.in[:cap(s.agent.in)]
	s.target.in = s.target.in[:cap(s.target.in)]
	for _, f := range []*loopFD{s.client, s.up} {
		f.room.L = &f.mu
	}
	s.client.reader, s.client.feeder = s.agent, s.target
	s.up.reader, s.up.feeder = s.target, s.agent
	r.upw.Reset(s.up)
	r.cw.Reset(s.client)
	r.be = pgproto3.NewBackend(nil, noWait{s.client})
	// Under stopMu, so that a stop's post comes after the registration.
	r.stopMu.Lock()
	t.s = s
	l.post(func() {
		for _, f := range []*loopFD{s.client, s.up} {
			l.fds[f.fd] = f
			f.mu.Lock()
			if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, f.fd, &unix.EpollEvent{Fd: int32(f.fd), Pad: int32(f.id)}); err != nil {
				f.mu.Unlock()
				s.fail(nil, fmt.Errorf("event loop: %w", err))
				return
			}
			f.mu.Unlock()
		}
		s.agent.rearm()
		s.target.rearm()
		if s.agent.end > 0 {
			// The agent's first messages came with its startup.
			s.agent.fd.setWantIn(false)
			s.agent.detached = true
			s.agent.offLoop.Store(true)
			go func() {
				err := s.agent.handleSafe()
				l.post(func() { s.agent.back(err) })
			}()
		}
	})
	if t.stopped {
		l.post(func() { s.fail(nil, errStopped) })
	}
	r.stopMu.Unlock()
	<-s.done
	return sides{agent: s.agent.err, target: s.target.err, midMessage: s.target.streaming}
}

func (t *loopTransport) final(msg []byte) {
	if t.s != nil {
		t.s.client.write(msg, false)
	}
}

func (t *loopTransport) close() (net.Conn, bool) {
	s := t.s
	if s == nil {
		// The loop never had them: the agent's socket (if taken) is a
		// duplicate to close; the server connection is still Go's.
		if t.cfd >= 0 {
			unix.Close(t.cfd)
		}
		if t.ufd >= 0 {
			unix.Close(t.ufd)
		}
		if t.up == nil {
			return closedConn{}, false
		}
		return t.up, false
	}
	for _, d := range []*loopDir{s.agent, s.target} {
		if cap(d.in) == loopRead { // not grown: back to the pool
			b := d.in[:loopRead]
			d.in = nil
			inputPool.Put(&b)
		}
	}
	// Deliver what is still queued, then hand the server socket back.
	s.client.flushBlocking()
	s.up.flushBlocking()
	unix.Close(t.cfd)
	var up net.Conn = closedConn{}
	if nc, err := netConn(t.ufd); err == nil { // closes ufd either way
		up = nc
	}
	return up, s.target.end == s.target.start
}

func (t *loopTransport) stop() {
	if s := t.s; s != nil {
		s.l.post(func() { s.fail(nil, errStopped) })
		return
	}
	t.stopped = true
}

func (t *loopTransport) mayBlock(target bool) {
	if t.s == nil {
		return
	}
	if target {
		t.s.target.mayBlock()
	} else {
		t.s.agent.mayBlock()
	}
}

func (t *loopTransport) evented() bool { return t.s != nil }

func (d *loopDir) armed() bool { return !d.s.ending.Load() && !d.detached && !d.paused }

// rearm reads again if the side may (loop).
func (d *loopDir) rearm() { d.fd.setWantIn(d.armed()) }

// serve reads what the socket has and handles the complete messages
// (loop). It reports false when this goroutine no longer holds the baton.
func (d *loopDir) serve() bool {
	if len(d.in)-d.end < loopRead/4 {
		d.compact(0)
	}
	n, err := unix.Read(d.fd.fd, d.in[d.end:])
	switch {
	case err == unix.EAGAIN || err == unix.EINTR:
		return true
	case err != nil:
		d.s.fail(d, err)
		return true
	case n == 0:
		d.s.fail(d, io.EOF)
		return true
	}
	d.end += n
	d.countRead(n)
	d.onLoop = true
	err = d.handleSafe()
	held := d.onLoop
	d.onLoop = false
	if !held {
		// Went off the loop on the way: the rest was done on this
		// goroutine; give the side back.
		d.s.l.post(func() { d.back(err) })
		return false
	}
	if err != nil {
		d.s.fail(d, err)
		return true
	}
	if d.out.pendingLen() > outHigh {
		d.paused = true
		d.rearm()
	}
	return true
}

func (d *loopDir) countRead(n int) {
	if d.target {
		d.s.r.up.In.Add(int64(n))
	} else {
		d.s.r.client.In.Add(int64(n))
	}
}

// back returns a side to the loop after it ran off it (loop).
func (d *loopDir) back(err error) {
	d.detached = false
	d.offLoop.Store(false)
	if err != nil {
		d.s.fail(d, err)
		return
	}
	if d.s.ending.Load() {
		d.s.wrapUp()
		return
	}
	if d.out.pendingLen() > outHigh {
		d.paused = true
	}
	d.rearm()
}

// mayBlock is called before anything that can wait: if the side is on the
// loop, the loop goes on in a new goroutine and this one leaves it.
func (d *loopDir) mayBlock() {
	if !d.onLoop {
		return
	}
	d.onLoop = false
	d.detached = true
	d.offLoop.Store(true)
	d.fd.setWantIn(false)
	go d.s.l.run()
}

// panicked is a panic in a handler, caught so that the loop (and every
// other session on it) goes on; the session's own goroutine raises it
// again, where the server records the session as an internal error.
type panicked struct {
	val   any
	stack []byte
}

func (p *panicked) Error() string { return fmt.Sprint("panic: ", p.val) }

// handleSafe is handle, with a panic turned into the side's error.
func (d *loopDir) handleSafe() (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = &panicked{val: v, stack: debug.Stack()}
		}
	}()
	return d.handle()
}

// handle runs every complete message in the buffer.
func (d *loopDir) handle() error {
	r := d.s.r
	if d.target {
		r.clientMu.Lock()
		defer r.clientMu.Unlock()
		defer r.cw.Flush()
	}
	for !d.s.ending.Load() {
		if d.discard > 0 {
			k := min(d.discard, int64(d.end-d.start))
			d.start += int(k)
			if d.discard -= k; d.discard > 0 {
				break
			}
		}
		avail := d.in[d.start:d.end]
		if len(avail) < 5 {
			break
		}
		typ := avail[0]
		n := int64(binary.BigEndian.Uint32(avail[1:5])) - 4
		limit := int64(r.in.max)
		if d.target {
			limit = maxResponseBody
		}
		if n < 0 || n > limit {
			if d.target {
				return fmt.Errorf("target sent a %q message of %d bytes", typ, n)
			}
			return r.violation(fmt.Errorf("%q message of %d bytes (limit %d)", typ, n, limit))
		}
		if !d.target && isStatement(typ) && n > minStmtLimit && n > int64(r.stmtLimit()) {
			// Denied unread: keep its start, drop the rest as it comes.
			prefix := avail[5 : 5+min(n, oversizeKept, int64(len(avail))-5)]
			here := min(5+n, int64(len(avail)))
			d.start += int(here)
			d.discard = 5 + n - here
			if err := r.oversized(typ, int(n), prefix); err != nil {
				return err
			}
			continue
		}
		if int64(len(avail)) < 5+n {
			if d.target && 5+n > loopHold {
				if err := d.streamOne(); err != nil {
					return err
				}
				continue
			}
			d.compact(int(5 + n))
			break
		}
		msg := avail[:5+n]
		d.start += int(5 + n)
		var err error
		if d.target {
			d.src.b = msg[5:]
			err = r.relayMessage(&d.src, r.cw, [5]byte(msg[:5]))
			d.src.b = nil
		} else {
			err = r.agentMessage(typ, msg)
		}
		if err != nil {
			return err
		}
	}
	if d.start == d.end {
		d.start, d.end = 0, 0
		if cap(d.in) > loopHold {
			d.in = make([]byte, loopRead)
		}
	}
	return nil
}

// compact moves unhandled bytes to the front, and grows the buffer toward
// a message of need bytes (by doubling: a declared length is only a claim).
func (d *loopDir) compact(need int) {
	n := copy(d.in, d.in[d.start:d.end])
	d.start, d.end = 0, n
	if need > len(d.in) || len(d.in)-n < loopRead/4 {
		b := make([]byte, max(n+loopRead, min(need, 2*len(d.in))))
		copy(b, d.in[:n])
		d.in = b
	}
}

// streamOne relays a target message too big to hold, off the loop, as the
// goroutine relay does: read as it comes.
func (d *loopDir) streamOne() error {
	d.mayBlock()
	hdr := [5]byte(d.in[d.start : d.start+5])
	d.start += 5
	br := bufio.NewReaderSize(&blockingReader{d: d}, 64<<10)
	d.streaming = true
	err := d.s.r.relayMessage(&bufSource{br: br}, d.s.r.cw, hdr)
	if err == nil {
		d.streaming = false
	}
	// What came after the message goes back in front of the buffer.
	rest, _ := br.Peek(br.Buffered())
	left := append(append([]byte(nil), rest...), d.in[d.start:d.end]...)
	d.in = append(left, make([]byte, loopRead)...)
	d.start, d.end = 0, len(left)
	return err
}

// blockingReader reads a side's buffer, then its socket, waiting for it
// (off the loop).
type blockingReader struct{ d *loopDir }

func (b *blockingReader) Read(p []byte) (int, error) {
	d := b.d
	if d.start < d.end {
		n := copy(p, d.in[d.start:d.end])
		d.start += n
		return n, nil
	}
	for {
		if d.s.ending.Load() {
			return 0, errStopped
		}
		n, err := unix.Read(d.fd.fd, p)
		switch {
		case n > 0:
			d.countRead(n)
			return n, nil
		case err == unix.EAGAIN || err == unix.EINTR:
			unix.Poll([]unix.PollFd{{Fd: int32(d.fd.fd), Events: unix.POLLIN}}, 200)
		case err != nil:
			return 0, err
		default:
			return 0, io.ErrUnexpectedEOF
		}
	}
}

// fail ends the session (loop): d ended with err (nil: loopgate stopped
// the session).
func (s *loopSession) fail(d *loopDir, err error) {
	if d != nil && d.err == nil {
		d.err = err
	}
	if !s.ending.Swap(true) {
		for _, f := range []*loopFD{s.client, s.up} {
			f.mu.Lock()
			f.wantIn = false
			f.apply()
			f.room.Broadcast()
			f.mu.Unlock()
		}
	}
	s.wrapUp()
}

// wrapUp takes the session off the loop once no side runs elsewhere.
func (s *loopSession) wrapUp() {
	if s.finished || s.agent.detached || s.target.detached {
		return
	}
	s.finished = true
	for _, d := range []*loopDir{s.agent, s.target} {
		if d.err == nil {
			d.err = errStopped
		}
	}
	for _, f := range []*loopFD{s.client, s.up} {
		f.mu.Lock()
		if !f.removed {
			unix.EpollCtl(s.l.epfd, unix.EPOLL_CTL_DEL, f.fd, nil)
		}
		f.closed = true
		f.room.Broadcast()
		f.mu.Unlock()
		delete(s.l.fds, f.fd)
	}
	close(s.done)
}
