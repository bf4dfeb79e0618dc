package l7

import (
	"net"
	"sync/atomic"
)

// CountingConn counts the bytes read from and written to a connection:
// a handler wraps the agent's connection in one and reports Result.
type CountingConn struct {
	net.Conn
	// In and Out are the bytes read (agent to target) and written.
	In, Out atomic.Int64
}

func (c *CountingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.In.Add(int64(n))
	return n, err
}

func (c *CountingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.Out.Add(int64(n))
	return n, err
}

// Result is the session's byte counts so far.
func (c *CountingConn) Result() Result {
	return Result{BytesUp: c.In.Load(), BytesDown: c.Out.Load()}
}
