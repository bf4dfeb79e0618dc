package postgres

// A session is two things: the protocol session (relay: statements,
// portals, pending commands, masks), which decides what messages mean and
// does, and a transport, which moves the bytes. The goroutine transport
// runs each side on its own goroutine with Go's poller (TLS sessions, and
// anything the event loop cannot take); the event-loop transport runs
// both on the Handler's shared epoll loop (loop.go). The relay's handlers
// are the same code on either; how a session ends (what the agent is told,
// whether the server connection can be reused, which error counts) is
// decided once, here, from what the transport reports.

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

// transport moves one session's messages between the agent and the
// target for a relay.
type transport interface {
	// pump relays until either side ends and reports how each ended.
	pump() sides
	// final writes msg to the agent after pump, before close.
	final(msg []byte)
	// close delivers what is still queued and gives back the server
	// connection (for the pool or to close), reporting whether every
	// byte the target sent was read.
	close() (up net.Conn, targetIdle bool)
	// stop ends pump from outside (cancelled, the session's role
	// expired); safe from any goroutine, any number of times.
	stop()
	// mayBlock is called before anything that can wait on one side: the
	// event loop hands that side to a goroutine of its own.
	mayBlock(target bool)
	// evented reports whether the relay's handlers run on a loop shared
	// with other sessions (and must not wait there).
	evented() bool
}

// sides is how a transport's two sides ended.
type sides struct {
	// agent and target are each side's error: nil, errTerminated (the
	// agent said goodbye) or errStopped (loopgate stopped the side) for
	// an ordinary end.
	agent, target error
	// midMessage: the agent may have received part of a message, so
	// nothing more can be sent to it.
	midMessage bool
}

// run relays through t until the session ends: the one place a session's
// end is decided whichever transport ran it. It returns the server
// connection and the first error that was not an ordinary end.
func (r *relay) run(t transport) (net.Conn, error) {
	r.stopMu.Lock()
	r.t = t
	if r.stopped {
		t.stop() // stopped before it began
	}
	r.stopMu.Unlock()
	end := t.pump()
	if r.ctx.Err() != nil && !end.midMessage {
		// Cancelled (shutdown, revoked): tell the agent why, between two
		// whole messages, as PostgreSQL does when it is shut down.
		if b, err := r.endedFatal().Encode(nil); err == nil {
			t.final(b)
		}
	}
	up, idle := t.close()
	for _, err := range []error{end.agent, end.target} {
		if p, ok := err.(*panicked); ok {
			panic(fmt.Sprintf("%v\n\nrelay side's stack:\n%s", p.val, p.stack))
		}
	}
	if end.agent == errTerminated {
		end.agent = nil
	}
	r.targetIdle = idle
	r.cleanEnd = end.agent == nil && (end.target == nil || end.target == errStopped)
	switch {
	case end.agent != nil && !isEnd(end.agent):
		return up, end.agent
	case end.target != nil && !isEnd(end.target):
		return up, end.target
	}
	return up, nil
}

// stop ends the relay from outside: cancelled, or its role expired.
func (r *relay) stop() {
	r.stopMu.Lock()
	defer r.stopMu.Unlock()
	r.stopped = true
	r.t.stop()
}

// mayBlock is called before anything that can wait on one side (target
// or agent): on the event loop, that side leaves the loop for a while.
func (r *relay) mayBlock(target bool) { r.t.mayBlock(target) }

// goTransport relays with a goroutine per side, through Go's poller.
type goTransport struct {
	r        *relay
	br       *bufio.Reader // the target side's reader
	stopOnce sync.Once
}

func (t *goTransport) pump() sides {
	r := t.r
	var end sides
	var down sync.WaitGroup
	down.Go(func() {
		end.target, end.midMessage = t.fromTarget()
		r.client.SetReadDeadline(time.Unix(1, 0)) // stop the agent side
	})
	end.agent = r.fromAgent()
	r.up.SetReadDeadline(time.Unix(1, 0)) // stop the target side
	down.Wait()
	var ne net.Error
	if errors.As(end.target, &ne) && ne.Timeout() {
		end.target = errStopped
	}
	return end
}

// fromTarget frames the target's messages and passes them on, decoding only
// those that end a command; DataRow bodies are streamed, never held whole.
// midMessage: it ended inside a message, part of which may have gone out.
func (t *goTransport) fromTarget() (err error, midMessage bool) {
	r := t.r
	br := readerPool.Get().(*bufio.Reader) // given back by close
	br.Reset(r.up)
	t.br = br
	src := &bufSource{br: br}
	cw := r.cw
	var hdr [5]byte
	for {
		if n, err := io.ReadFull(br, hdr[:]); err != nil {
			r.clientMu.Lock()
			cw.Flush()
			r.clientMu.Unlock()
			return err, n > 0
		}
		r.clientMu.Lock()
		err := r.relayMessage(src, cw, hdr)
		if err == nil && br.Buffered() == 0 {
			err = cw.Flush()
		}
		r.clientMu.Unlock()
		if err != nil {
			return err, true
		}
	}
}

func (t *goTransport) final(msg []byte) {
	t.stop() // a late stop must not cut this short
	t.r.clientMu.Lock()
	defer t.r.clientMu.Unlock()
	t.r.client.SetWriteDeadline(time.Now().Add(finalFlush))
	t.r.client.Write(msg)
}

func (t *goTransport) close() (net.Conn, bool) {
	idle := false
	if t.br != nil {
		idle = t.br.Buffered() == 0
		t.br.Reset(nil)
		readerPool.Put(t.br)
		t.br = nil
	}
	return t.r.up.Conn, idle
}

func (t *goTransport) stop() {
	t.stopOnce.Do(func() {
		t.r.up.SetDeadline(time.Unix(1, 0))
		// A side blocked writing to an agent that does not read.
		t.r.client.SetWriteDeadline(time.Unix(1, 0))
	})
}

func (t *goTransport) mayBlock(bool) {}
func (t *goTransport) evented() bool { return false }
