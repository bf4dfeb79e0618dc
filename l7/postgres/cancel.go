package postgres

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// cancelKeys maps the BackendKeyData loopgate gives agents to the real
// backends, so a CancelRequest (which arrives on a new connection, itself
// redirected) reaches the right one. It is safe for concurrent use.
type cancelKeys struct {
	mu   sync.Mutex
	keys map[uint32]cancelTarget
}

type cancelTarget struct {
	secret     []byte // what the agent must present
	addr       string // the target
	pid        uint32 // the real backend
	realSecret []byte
}

// issue returns a fresh (pid, secret) for t and remembers it.
func (c *cancelKeys) issue(t cancelTarget) (uint32, []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.keys == nil {
		c.keys = map[uint32]cancelTarget{}
	}
	for {
		var b [8]byte
		rand.Read(b[:])
		pid := binary.BigEndian.Uint32(b[:4]) &^ (1 << 31) // positive, like a real pid
		if _, used := c.keys[pid]; used || pid == 0 {
			continue
		}
		t.secret = append([]byte(nil), b[4:]...)
		c.keys[pid] = t
		return pid, t.secret
	}
}

func (c *cancelKeys) forget(pid uint32) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.keys, pid)
}

// cancel forwards a CancelRequest to the real backend if the key matches.
func (c *cancelKeys) cancel(ctx context.Context, req *pgproto3.CancelRequest) error {
	c.mu.Lock()
	t, ok := c.keys[req.ProcessID]
	c.mu.Unlock()
	if !ok || !bytes.Equal(t.secret, req.SecretKey) {
		return fmt.Errorf("cancel request with an unknown key")
	}
	d := net.Dialer{Timeout: 10 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", t.addr)
	if err != nil {
		return fmt.Errorf("dial upstream for cancel: %w", err)
	}
	defer conn.Close()
	buf, err := (&pgproto3.CancelRequest{ProcessID: t.pid, SecretKey: t.realSecret}).Encode(nil)
	if err != nil {
		return err
	}
	if _, err := conn.Write(buf); err != nil {
		return fmt.Errorf("send cancel: %w", err)
	}
	// The server closes the connection when it has read the request.
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	conn.Read(make([]byte, 1))
	return nil
}
