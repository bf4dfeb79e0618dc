package sftpwire

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Packet types (draft-ietf-secsh-filexfer-02 §3).
const (
	TypeInit          = 1
	TypeVersion       = 2
	TypeOpen          = 3
	TypeClose         = 4
	TypeRead          = 5
	TypeWrite         = 6
	TypeLstat         = 7
	TypeFstat         = 8
	TypeSetstat       = 9
	TypeFsetstat      = 10
	TypeOpendir       = 11
	TypeReaddir       = 12
	TypeRemove        = 13
	TypeMkdir         = 14
	TypeRmdir         = 15
	TypeRealpath      = 16
	TypeStat          = 17
	TypeRename        = 18
	TypeReadlink      = 19
	TypeSymlink       = 20
	TypeStatus        = 101
	TypeHandle        = 102
	TypeData          = 103
	TypeName          = 104
	TypeAttrs         = 105
	TypeExtended      = 200
	TypeExtendedReply = 201
)

// Status codes (draft-ietf-secsh-filexfer-02 §7).
const (
	StatusOK               = 0
	StatusEOF              = 1
	StatusNoSuchFile       = 2
	StatusPermissionDenied = 3
	StatusFailure          = 4
	StatusBadMessage       = 5
	StatusNoConnection     = 6
	StatusConnectionLost   = 7
	StatusOpUnsupported    = 8
)

// StatusText names a status code.
func StatusText(code uint32) string {
	switch code {
	case StatusOK:
		return "ok"
	case StatusEOF:
		return "eof"
	case StatusNoSuchFile:
		return "no such file"
	case StatusPermissionDenied:
		return "permission denied"
	case StatusFailure:
		return "failure"
	case StatusBadMessage:
		return "bad message"
	case StatusNoConnection:
		return "no connection"
	case StatusConnectionLost:
		return "connection lost"
	case StatusOpUnsupported:
		return "operation unsupported"
	}
	return fmt.Sprintf("status %d", code)
}

// Open flags (pflags of SSH_FXP_OPEN).
const (
	FlagRead   = 0x01
	FlagWrite  = 0x02
	FlagAppend = 0x04
	FlagCreate = 0x08
	FlagTrunc  = 0x10
	FlagExcl   = 0x20
)

// MaxPacket is the longest packet accepted, counting its 4-byte length:
// OpenSSH's sftp-server takes at most 256 KiB (SFTP_MAX_MSG_LENGTH), and
// its client writes 32 KiB at a time.
const MaxPacket = 256<<10 + 4

// Errors of the packet stream. Both end it: the stream cannot be
// re-synchronised.
var (
	ErrTooLarge  = errors.New("sftp packet longer than 256 KiB")
	ErrMalformed = errors.New("malformed sftp packet")
)

// Decoder reassembles SFTP packets from a byte stream split at any
// point.
type Decoder struct {
	buf []byte
	off int // start of unconsumed bytes in buf
	max int
	err error
}

// NewDecoder returns a decoder refusing packets longer than max bytes
// (length included); max ≤ 0 means MaxPacket.
func NewDecoder(max int) *Decoder {
	if max <= 0 {
		max = MaxPacket
	}
	return &Decoder{max: max}
}

// Feed appends stream bytes. Frames returned by Next before Feed stay
// valid until this call.
func (d *Decoder) Feed(p []byte) {
	if d.off > 0 && d.off == len(d.buf) {
		d.buf, d.off = d.buf[:0], 0
	} else if d.off > 0 && d.off >= cap(d.buf)/2 {
		n := copy(d.buf, d.buf[d.off:])
		d.buf, d.off = d.buf[:n], 0
	}
	d.buf = append(d.buf, p...)
}

// Next returns the next whole packet (its length prefix included), or nil
// when more bytes are needed. The frame is valid until the next Feed. An
// error is final: a length over the limit or under 5 (no type and id).
func (d *Decoder) Next() ([]byte, error) {
	if d.err != nil {
		return nil, d.err
	}
	rest := d.buf[d.off:]
	if len(rest) < 4 {
		return nil, nil
	}
	n := binary.BigEndian.Uint32(rest)
	switch {
	case uint64(n)+4 > uint64(d.max):
		d.err = fmt.Errorf("%w: %d bytes", ErrTooLarge, uint64(n)+4)
		return nil, d.err
	case n < 1:
		d.err = fmt.Errorf("%w: length %d", ErrMalformed, n)
		return nil, d.err
	}
	if len(rest) < int(n)+4 {
		return nil, nil
	}
	frame := rest[: n+4 : n+4]
	d.off += int(n) + 4
	return frame, nil
}

// Buffered returns how many bytes wait for the rest of their packet.
func (d *Decoder) Buffered() int { return len(d.buf) - d.off }

// reader reads the fields of one packet.
type reader struct {
	b   []byte
	err bool
}

func (r *reader) u32() uint32 {
	if len(r.b) < 4 {
		r.err = true
		r.b = nil
		return 0
	}
	v := binary.BigEndian.Uint32(r.b)
	r.b = r.b[4:]
	return v
}

func (r *reader) u64() uint64 {
	if len(r.b) < 8 {
		r.err = true
		r.b = nil
		return 0
	}
	v := binary.BigEndian.Uint64(r.b)
	r.b = r.b[8:]
	return v
}

// bytes reads an SSH string without copying.
func (r *reader) bytes() []byte {
	n := r.u32()
	if r.err || uint64(n) > uint64(len(r.b)) {
		r.err = true
		r.b = nil
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) str() string { return string(r.bytes()) }

// attrs skips an ATTRS structure, returning its permissions when given.
func (r *reader) attrs() (perm uint32, hasPerm bool) {
	flags := r.u32()
	if flags&0x1 != 0 { // size
		r.u64()
	}
	if flags&0x2 != 0 { // uid, gid
		r.u32()
		r.u32()
	}
	if flags&0x4 != 0 {
		perm, hasPerm = r.u32(), true
	}
	if flags&0x8 != 0 { // atime, mtime
		r.u32()
		r.u32()
	}
	if flags&0x80000000 != 0 {
		n := r.u32()
		for i := uint32(0); i < n && !r.err; i++ {
			r.bytes()
			r.bytes()
		}
	}
	return perm, hasPerm
}

// Status returns an SSH_FXP_STATUS packet answering request id: what the
// bridge sends the agent for a request it does not forward.
func Status(id, code uint32, msg string) []byte {
	n := 1 + 4 + 4 + 4 + len(msg) + 4 + 2
	b := make([]byte, 0, 4+n)
	b = binary.BigEndian.AppendUint32(b, uint32(n))
	b = append(b, TypeStatus)
	b = binary.BigEndian.AppendUint32(b, id)
	b = binary.BigEndian.AppendUint32(b, code)
	b = binary.BigEndian.AppendUint32(b, uint32(len(msg)))
	b = append(b, msg...)
	b = binary.BigEndian.AppendUint32(b, 2)
	return append(b, "en"...)
}
