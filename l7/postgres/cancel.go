package postgres

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// cancelKeys maps the BackendKeyData loopgate gives agents to the real
// backends, so a CancelRequest (which arrives on a new connection, itself
// redirected) reaches the right one. It is safe for concurrent use.
//
// The agent sees its backend's real PID (a session holds one server
// connection for its whole life, so pg_terminate_backend, pg_stat_activity
// and pg_cancel_backend act on the right process) and a secret loopgate
// made up; the real secret never leaves the daemon. A key lives exactly as
// long as the session owns the backend: forget runs before the server
// connection can go to the pool, and waits for cancels already on their
// way, so a late cancel never reaches the next session on that backend.
type cancelKeys struct {
	mu   sync.Mutex // guards keys
	keys map[cancelID]*cancelEntry
}

// cancelID names a backend: the target address the agent dialled and the
// backend's PID (two servers may have backends with one PID).
type cancelID struct {
	addr string
	pid  uint32
}

type cancelEntry struct {
	secret     []byte // what the agent must present
	workload   string // whose session owns the backend
	realSecret []byte
	// sending counts cancels on their way to the backend; forget waits
	// for them. Add only under cancelKeys.mu while the entry is in keys.
	sending sync.WaitGroup
}

// issue makes a secret for the session of workload that owns backend pid
// (real secret realSecret) at target addr, and remembers it. The returned
// forget ends the key; it waits for cancels already being sent.
func (c *cancelKeys) issue(addr string, pid uint32, realSecret []byte, workload string) (secret []byte, forget func()) {
	e := &cancelEntry{secret: make([]byte, 4), workload: workload, realSecret: realSecret}
	rand.Read(e.secret)
	id := cancelID{addr: addr, pid: pid}
	c.mu.Lock()
	if c.keys == nil {
		c.keys = map[cancelID]*cancelEntry{}
	}
	// A backend serves one session at a time; an entry still here is a
	// leftover whose session cannot cancel any more.
	c.keys[id] = e
	c.mu.Unlock()
	var once sync.Once
	return e.secret, func() {
		once.Do(func() {
			c.mu.Lock()
			if c.keys[id] == e {
				delete(c.keys, id)
			}
			c.mu.Unlock()
			e.sending.Wait()
		})
	}
}

// errUnknownCancelKey refuses a cancel whose key no live session holds.
var errUnknownCancelKey = fmt.Errorf("cancel request with an unknown key")

// cancel forwards a CancelRequest that came to target addr from workload
// to the real backend, if a live session of that workload holds the key.
func (c *cancelKeys) cancel(ctx context.Context, addr, workload string, req *pgproto3.CancelRequest) error {
	c.mu.Lock()
	e, ok := c.keys[cancelID{addr: addr, pid: req.ProcessID}]
	ok = ok && e.workload == workload && subtle.ConstantTimeCompare(e.secret, req.SecretKey) == 1
	if ok {
		e.sending.Add(1)
	}
	c.mu.Unlock()
	if !ok {
		return errUnknownCancelKey
	}
	defer e.sending.Done()
	d := net.Dialer{Timeout: 10 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("dial upstream for cancel: %w", err)
	}
	defer conn.Close()
	buf, err := (&pgproto3.CancelRequest{ProcessID: req.ProcessID, SecretKey: e.realSecret}).Encode(nil)
	if err != nil {
		return err
	}
	if _, err := conn.Write(buf); err != nil {
		return fmt.Errorf("send cancel: %w", err)
	}
	// The server closes the connection once it has signalled the backend;
	// until then the session keeps its key (forget waits for this).
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	conn.Read(make([]byte, 1))
	return nil
}
