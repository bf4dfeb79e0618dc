package sftpwire

import (
	"errors"
	"fmt"
	"sync"
)

// Limits of a Tracker, past which a request is an error (the bridge
// should end the session): sftp clients keep at most 64 requests in
// flight (OpenSSH) and a few handles open.
const (
	MaxPending = 1024
	MaxHandles = 256
)

// ErrTooMany means a client has more requests in flight or handles open
// than the Tracker keeps.
var ErrTooMany = errors.New("too many sftp requests in flight or handles open")

// Record is one finished operation.
type Record struct {
	// Op is the request's Op ("open" for a file, "opendir" for a
	// listing, "remove", "rename", ...).
	Op string
	// Path and Target are the request's (for a handle, the path it was
	// opened with).
	Path, Target string
	Class        string
	// Flags are an open's pflags.
	Flags uint32
	// Read and Written are the bytes moved through a file handle (or
	// names listed through a directory handle, in Read).
	Read, Written int64
	// Status is the server's answer (of the CLOSE, for a file that was
	// opened); StatusText names it or carries the server's message.
	Status     uint32
	StatusText string
	// Denied is true when the bridge answered the request itself.
	Denied bool
	// Quiet is the request's Quiet: a metadata read.
	Quiet bool
}

// pending is a forwarded request awaiting its reply.
type pending struct {
	req Request
}

// openHandle is an open file or directory.
type openHandle struct {
	rec Record
}

// Tracker pairs replies with requests and keeps handles' paths and byte
// counts. Safe for concurrent use: the request and reply pumps share one.
type Tracker struct {
	mu      sync.Mutex // guards pending and handles
	pending map[uint32]pending
	handles map[string]*openHandle
}

// NewTracker returns an empty tracker.
func NewTracker() *Tracker {
	return &Tracker{pending: map[uint32]pending{}, handles: map[string]*openHandle{}}
}

// Path returns the path handle was opened with, or "" for a handle this
// tracker did not see opened.
func (t *Tracker) Path(handle string) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.path(handle)
}

func (t *Tracker) path(handle string) string {
	if h := t.handles[handle]; h != nil {
		return h.rec.Path
	}
	return ""
}

// Request notes a request the bridge forwards. INIT is not tracked.
func (t *Tracker) Request(q Request) error {
	if q.Type == TypeInit {
		return nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.pending) >= MaxPending {
		return fmt.Errorf("%w: %d requests in flight", ErrTooMany, len(t.pending))
	}
	t.pending[q.ID] = pending{req: q}
	return nil
}

// Denied returns the record of a request the bridge answered itself.
func (t *Tracker) Denied(q Request, reason string) Record {
	t.mu.Lock()
	defer t.mu.Unlock()
	rec := t.record(q)
	rec.Denied, rec.Status, rec.StatusText = true, StatusPermissionDenied, reason
	return rec
}

func (t *Tracker) record(q Request) Record {
	rec := Record{Op: q.Op, Path: q.Path, Target: q.Target, Class: q.Class, Flags: q.Flags, Quiet: q.Quiet}
	if q.Handle != "" && rec.Path == "" {
		rec.Path = t.path(q.Handle)
	}
	return rec
}

// Reply matches a server reply to its request. It returns a record when
// an operation finishes: at once for most requests, at the CLOSE of a
// handle (with the bytes moved through it) for OPEN and OPENDIR, and
// never for the reads and writes on a handle, which only count. A reply
// to no forwarded request returns false.
func (t *Tracker) Reply(p Reply) (Record, bool, error) {
	if p.Type == TypeVersion {
		return Record{}, false, nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	pq, ok := t.pending[p.ID]
	if !ok {
		return Record{}, false, nil
	}
	delete(t.pending, p.ID)
	q := pq.req
	h := t.handles[q.Handle] // the handle's open, for requests on one
	switch q.Type {
	case TypeOpen, TypeOpendir:
		if p.Type == TypeHandle {
			if len(t.handles) >= MaxHandles {
				return Record{}, false, fmt.Errorf("%w: %d handles open", ErrTooMany, len(t.handles))
			}
			t.handles[p.Handle] = &openHandle{rec: t.record(q)}
			return Record{}, false, nil
		}
	case TypeRead:
		if h != nil && p.Type == TypeData {
			h.rec.Read += int64(p.DataLen)
		}
		return Record{}, false, nil
	case TypeReaddir:
		if h != nil && p.Type == TypeName {
			h.rec.Read += int64(p.Names)
		}
		return Record{}, false, nil
	case TypeWrite:
		if h != nil && p.Type == TypeStatus && p.Status == StatusOK {
			h.rec.Written += int64(q.Length)
		}
		return Record{}, false, nil
	case TypeClose:
		if h != nil {
			delete(t.handles, q.Handle)
			rec := h.rec
			rec.Status, rec.StatusText = status(p)
			return rec, true, nil
		}
	}
	if q.OnHandle && q.Type != TypeClose {
		return Record{}, false, nil
	}
	rec := t.record(q)
	rec.Status, rec.StatusText = status(p)
	return rec, true, nil
}

// status is a reply's status: STATUS's, or OK for a data reply.
func status(p Reply) (uint32, string) {
	if p.Type != TypeStatus {
		return StatusOK, StatusText(StatusOK)
	}
	if p.Message != "" && p.Status != StatusOK {
		return p.Status, p.Message
	}
	return p.Status, StatusText(p.Status)
}

// Close returns the records of handles still open (the session ended
// without closing them), with StatusText "not closed", and forgets
// everything.
func (t *Tracker) Close() []Record {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []Record
	for _, h := range t.handles {
		rec := h.rec
		rec.Status, rec.StatusText = StatusConnectionLost, "not closed"
		out = append(out, rec)
	}
	t.handles = map[string]*openHandle{}
	t.pending = map[uint32]pending{}
	return out
}
