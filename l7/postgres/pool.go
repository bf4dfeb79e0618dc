package postgres

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"golang.org/x/sys/unix"
)

// Server connections of sessions that ended cleanly are kept for the next
// session of the same workload with the same login (target, address,
// credentials, database, startup parameters), as PgBouncer's session mode
// does: an agent that connects once per step does not pay a login each
// time. A connection is kept only when the agent said goodbye (Terminate)
// outside any transaction, with nothing in flight, and only after the
// server has run DISCARD ALL (closing cursors, dropping temporary tables,
// prepared statements and advisory locks, unlistening, resetting every
// setting and the session authorization). Session roles (dynamic
// credentials) are never kept: they are dropped with their session.
const (
	poolIdle   = 60 * time.Second // an idle server connection is closed after this
	poolPerKey = 8                // idle connections kept per login
)

type serverPool struct {
	mu   sync.Mutex
	idle map[string][]pooledServer
	// onPut, if set, runs as a connection is given to the pool, before
	// anything else (a test seam: nil in the daemon).
	onPut func()
}

type pooledServer struct {
	hj    *pgconn.HijackedConn
	since time.Time
}

// poolKey names a login: connections are shared only between sessions of
// one workload that would have logged in exactly alike.
func poolKey(workload string, cfg *pgconn.Config) string {
	h := sha256.New()
	field := func(s string) {
		h.Write([]byte(strconv.Itoa(len(s))))
		h.Write([]byte{':'})
		h.Write([]byte(s))
	}
	field(workload)
	field(cfg.Host)
	field(strconv.Itoa(int(cfg.Port)))
	field(cfg.User)
	field(cfg.Password)
	field(cfg.Database)
	if cfg.TLSConfig != nil {
		field("tls:" + cfg.TLSConfig.ServerName + ":" + strconv.FormatBool(cfg.TLSConfig.InsecureSkipVerify))
	}
	keys := make([]string, 0, len(cfg.RuntimeParams))
	for k := range cfg.RuntimeParams {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		field(k)
		field(cfg.RuntimeParams[k])
	}
	return hex.EncodeToString(h.Sum(nil))
}

// get returns an idle server connection for key that is still open, or nil.
func (p *serverPool) get(key string) *pgconn.HijackedConn {
	for {
		p.mu.Lock()
		list := p.idle[key]
		if len(list) == 0 {
			p.mu.Unlock()
			return nil
		}
		ps := list[len(list)-1]
		p.idle[key] = list[:len(list)-1]
		p.mu.Unlock()
		if time.Since(ps.since) < poolIdle && quiet(ps.hj.Conn) {
			return ps.hj
		}
		ps.hj.Conn.Close()
	}
}

// quiet reports whether an idle connection has sent nothing (a server
// that closed it, or said anything unasked, is not reused). It peeks at
// the socket without waiting (a read deadline in the past would not even
// try).
func quiet(c net.Conn) bool {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	var perr error
	err = rc.Read(func(fd uintptr) bool {
		var b [1]byte
		_, _, perr = unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		return true // never wait
	})
	return err == nil && errors.Is(perr, unix.EAGAIN)
}

// put resets a server connection and keeps it, or closes it.
func (p *serverPool) put(ctx context.Context, key string, hj *pgconn.HijackedConn) error {
	if p.onPut != nil {
		p.onPut()
	}
	if err := discardAll(ctx, hj); err != nil {
		hj.Conn.Close()
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.idle == nil {
		p.idle = map[string][]pooledServer{}
	}
	list := p.idle[key]
	// Drop the stale ones while here.
	kept := list[:0]
	for _, ps := range list {
		if time.Since(ps.since) < poolIdle {
			kept = append(kept, ps)
		} else {
			ps.hj.Conn.Close()
		}
	}
	if len(kept) >= poolPerKey {
		hj.Conn.Close()
		p.idle[key] = kept
		return nil
	}
	p.idle[key] = append(kept, pooledServer{hj: hj, since: time.Now()})
	return nil
}

// discardAll runs DISCARD ALL and reads up to the server's ReadyForQuery,
// which must say idle. Parameters the reset reports are noted for the next
// session's startup.
func discardAll(ctx context.Context, hj *pgconn.HijackedConn) error {
	deadline := time.Now().Add(5 * time.Second)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	hj.Conn.SetDeadline(deadline)
	defer hj.Conn.SetDeadline(time.Time{})
	fe := pgproto3.NewFrontend(hj.Conn, hj.Conn)
	fe.Send(&pgproto3.Query{String: "DISCARD ALL"})
	if err := fe.Flush(); err != nil {
		return err
	}
	done := false
	for {
		msg, err := fe.Receive()
		if err != nil {
			return err
		}
		switch m := msg.(type) {
		case *pgproto3.CommandComplete:
			done = string(m.CommandTag) == "DISCARD ALL"
		case *pgproto3.ParameterStatus:
			hj.ParameterStatuses[m.Name] = m.Value
		case *pgproto3.NoticeResponse:
		case *pgproto3.ErrorResponse:
			return fmt.Errorf("DISCARD ALL: %s", m.Message)
		case *pgproto3.ReadyForQuery:
			if !done || m.TxStatus != 'I' {
				return fmt.Errorf("DISCARD ALL left the connection in state %q", m.TxStatus)
			}
			if fe.ReadBufferLen() != 0 {
				return fmt.Errorf("server sent more after DISCARD ALL")
			}
			hj.TxStatus = 'I'
			return nil
		default:
			return fmt.Errorf("unexpected %T after DISCARD ALL", msg)
		}
	}
}
