package sftpwire

import (
	"fmt"
)

// Classes of SFTP requests, as in policy/shellclass.
const (
	ClassRead    = "file-read"
	ClassWrite   = "file-write"
	ClassUnknown = "unknown"
)

// Request is what one client packet asks for.
type Request struct {
	Type byte
	// ID is the request id (the version for INIT).
	ID uint32
	// Op names the operation: init, open, opendir, close, read, write,
	// stat, lstat, fstat, setstat, fsetstat, readdir, remove, mkdir,
	// rmdir, realpath, rename, readlink, symlink, or the extension's name
	// for EXTENDED (posix-rename@openssh.com, ...), or "type N".
	Op string
	// Path is the file the request names; Target the second one (rename
	// and hardlink: the new name; symlink: the link's target).
	Path, Target string
	// Handle is the handle a request on an open file or directory uses.
	Handle string
	// Flags are OPEN's pflags.
	Flags uint32
	// Offset and Length are READ's and WRITE's (Length is the data's
	// length for WRITE).
	Offset uint64
	Length uint32
	// Mode is the permissions SETSTAT, FSETSTAT, MKDIR or OPEN set, when
	// given.
	Mode    uint32
	HasMode bool
	// Class is ClassRead, ClassWrite, ClassUnknown (an extension this
	// package does not know), or "" for INIT.
	Class string
	// OnHandle is true for requests that act on an open handle within
	// what its OPEN or OPENDIR was allowed (read, write, close, fstat,
	// readdir, fsync): the bridge decides the open, not each of them.
	// FSETSTAT is not: it changes the file, and is decided on its own.
	OnHandle bool
	// Quiet is true for metadata reads (stat, realpath, readlink, ...)
	// that a record may leave out.
	Quiet bool
}

// Paths returns the request's paths, for policy and records.
func (r Request) Paths() []string {
	switch {
	case r.Path == "" && r.Target == "":
		return nil
	case r.Target == "":
		return []string{r.Path}
	}
	return []string{r.Path, r.Target}
}

var opNames = map[byte]string{
	TypeInit: "init", TypeOpen: "open", TypeClose: "close", TypeRead: "read", TypeWrite: "write",
	TypeLstat: "lstat", TypeFstat: "fstat", TypeSetstat: "setstat", TypeFsetstat: "fsetstat",
	TypeOpendir: "opendir", TypeReaddir: "readdir", TypeRemove: "remove", TypeMkdir: "mkdir",
	TypeRmdir: "rmdir", TypeRealpath: "realpath", TypeStat: "stat", TypeRename: "rename",
	TypeReadlink: "readlink", TypeSymlink: "symlink", TypeExtended: "extended",
}

// ParseRequest reads a client packet as returned by Decoder.Next. An
// error means the packet is malformed (fields past its end); the bridge
// should answer it with StatusBadMessage, or end the session. A request
// type this package does not know is ClassUnknown, not an error.
func ParseRequest(frame []byte) (Request, error) {
	if len(frame) < 5 {
		return Request{}, fmt.Errorf("%w: %d bytes", ErrMalformed, len(frame))
	}
	r := reader{b: frame[5:]}
	q := Request{Type: frame[4], ID: r.u32()}
	q.Op = opNames[q.Type]
	switch q.Type {
	case TypeInit:
		// The ID field is the version; extension pairs follow.
	case TypeOpen:
		q.Path = r.str()
		q.Flags = r.u32()
		q.Mode, q.HasMode = r.attrs()
		q.Class = ClassRead
		if q.Flags&(FlagWrite|FlagAppend|FlagCreate|FlagTrunc|FlagExcl) != 0 {
			q.Class = ClassWrite
		}
	case TypeClose, TypeFstat, TypeReaddir:
		q.Handle = r.str()
		q.Class, q.OnHandle, q.Quiet = ClassRead, true, q.Type == TypeFstat
	case TypeRead:
		q.Handle = r.str()
		q.Offset = r.u64()
		q.Length = r.u32()
		q.Class, q.OnHandle = ClassRead, true
	case TypeWrite:
		q.Handle = r.str()
		q.Offset = r.u64()
		q.Length = uint32(len(r.bytes()))
		q.Class, q.OnHandle = ClassWrite, true
	case TypeLstat, TypeStat, TypeRealpath, TypeReadlink:
		q.Path = r.str()
		q.Class, q.Quiet = ClassRead, true
	case TypeOpendir:
		q.Path = r.str()
		q.Class = ClassRead
	case TypeSetstat:
		q.Path = r.str()
		q.Mode, q.HasMode = r.attrs()
		q.Class = ClassWrite
	case TypeFsetstat:
		q.Handle = r.str()
		q.Mode, q.HasMode = r.attrs()
		q.Class = ClassWrite
	case TypeRemove, TypeRmdir:
		q.Path = r.str()
		q.Class = ClassWrite
	case TypeMkdir:
		q.Path = r.str()
		q.Mode, q.HasMode = r.attrs()
		q.Class = ClassWrite
	case TypeRename:
		q.Path, q.Target = r.str(), r.str()
		q.Class = ClassWrite
	case TypeSymlink:
		// OpenSSH sends the target first and the new link second, the
		// reverse of the draft (OpenSSH PROTOCOL §4.1); every common
		// client follows OpenSSH. Path is the new link (what is
		// written), Target what it points to.
		q.Target, q.Path = r.str(), r.str()
		q.Class = ClassWrite
	case TypeExtended:
		q.extended(&r)
	default:
		q.Op = fmt.Sprintf("type %d", q.Type)
		q.Class = ClassUnknown
		return q, nil
	}
	if r.err {
		return q, fmt.Errorf("%w: %s request %d ends early", ErrMalformed, q.Op, q.ID)
	}
	return q, nil
}

// extended reads an EXTENDED request (OpenSSH PROTOCOL §4).
func (q *Request) extended(r *reader) {
	q.Op = r.str()
	switch q.Op {
	case "posix-rename@openssh.com", "hardlink@openssh.com":
		q.Path, q.Target = r.str(), r.str()
		q.Class = ClassWrite
	case "lsetstat@openssh.com":
		q.Path = r.str()
		q.Mode, q.HasMode = r.attrs()
		q.Class = ClassWrite
	case "statvfs@openssh.com", "expand-path@openssh.com":
		q.Path = r.str()
		q.Class, q.Quiet = ClassRead, true
	case "fstatvfs@openssh.com", "fsync@openssh.com":
		q.Handle = r.str()
		q.Class, q.OnHandle, q.Quiet = ClassRead, true, true
	case "limits@openssh.com", "home-directory", "users-groups-by-id@openssh.com":
		q.Class, q.Quiet = ClassRead, true
	case "copy-data":
		q.Handle = r.str()
		q.Offset = r.u64()
		r.u64()
		q.Target = r.str() // the write handle
		q.Class = ClassWrite
	default:
		q.Class = ClassUnknown
	}
}

// Reply is what one server packet answers.
type Reply struct {
	Type byte
	// ID is the request id answered (the version for VERSION).
	ID uint32
	// Status and Message are STATUS's.
	Status  uint32
	Message string
	// Handle is HANDLE's.
	Handle string
	// DataLen is DATA's data length.
	DataLen int
	// Names is NAME's entry count; Name its first file name (REALPATH's
	// answer).
	Names int
	Name  string
}

// ParseReply reads a server packet as returned by Decoder.Next.
func ParseReply(frame []byte) (Reply, error) {
	if len(frame) < 5 {
		return Reply{}, fmt.Errorf("%w: %d bytes", ErrMalformed, len(frame))
	}
	r := reader{b: frame[5:]}
	p := Reply{Type: frame[4], ID: r.u32()}
	switch p.Type {
	case TypeStatus:
		p.Status = r.u32()
		if len(r.b) > 0 { // message and language are optional before v3
			p.Message = r.str()
		}
	case TypeHandle:
		p.Handle = r.str()
	case TypeData:
		p.DataLen = len(r.bytes())
	case TypeName:
		n := r.u32()
		p.Names = int(n)
		if n > 0 {
			p.Name = r.str()
		}
	case TypeVersion, TypeAttrs, TypeExtendedReply:
	default:
		return p, fmt.Errorf("%w: reply type %d", ErrMalformed, p.Type)
	}
	if r.err {
		return p, fmt.Errorf("%w: reply %d to request %d ends early", ErrMalformed, p.Type, p.ID)
	}
	return p, nil
}
