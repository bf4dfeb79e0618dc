package sftpwire

import (
	"bytes"
	"errors"
	"fmt"
	"path"
	"strconv"
)

// Legacy scp (scp -O) runs "scp -t DIR" (upload) or "scp -f PATH"
// (download) on the target and speaks its own protocol over the exec
// channel: the source sends control lines (C<mode> <size> <name> for a
// file, then its bytes and a \0; D<mode> 0 <name> to enter a directory, E
// to leave it; T<mtime> 0 <atime> 0 for times) and the sink answers each
// with \0, or \1/\2 and a message (OpenSSH scp.c). SCPSource follows the
// source's stream to name the files for the record; SCPAcks reads the
// sink's answers for its errors. Neither keeps file data.

// Limits of the scp parsers.
const (
	// MaxSCPLine is the longest control line or message accepted.
	MaxSCPLine = 4096
	// MaxSCPDepth is how deep directories may nest.
	MaxSCPDepth = 64
)

// ErrSCP is a legacy scp stream that breaks the protocol; it ends the
// stream.
var ErrSCP = errors.New("malformed scp stream")

// SCPEvent is something a legacy scp source did.
type SCPEvent struct {
	// Kind is "file" (a file was sent whole: Path, Mode, Size), "dir" (a
	// directory was entered), or "error" (the source reported Message,
	// about Path when it was sending a file).
	Kind string
	// Path is relative to the transfer's root (the scp -t directory, or
	// the scp -f path's parent).
	Path    string
	Mode    uint32
	Size    int64
	Message string
}

type scpState int

const (
	scpLine   scpState = iota // reading a control line
	scpData                   // passing a file's bytes
	scpStatus                 // the byte after a file's data
)

// SCPSource follows a legacy scp source's stream. Not safe for concurrent
// use.
type SCPSource struct {
	state scpState
	line  []byte
	dirs  []string
	file  SCPEvent // the file being sent
	left  int64    // its bytes still to come
	// failed: the source reported an error instead of a file's final
	// \0; the error line is about that file.
	failed bool
	err    error
}

// Feed follows p and returns what the source finished doing in it. An
// error is final.
func (s *SCPSource) Feed(p []byte) ([]SCPEvent, error) {
	var evs []SCPEvent
	for len(p) > 0 && s.err == nil {
		switch s.state {
		case scpData:
			n := int64(len(p))
			if n > s.left {
				n = s.left
			}
			s.left -= n
			p = p[n:]
			if s.left == 0 {
				s.state = scpStatus
			}
		case scpStatus:
			if p[0] == 0 {
				evs = append(evs, s.file)
				s.state = scpLine
				p = p[1:]
				continue
			}
			if p[0] != 1 && p[0] != 2 {
				s.err = fmt.Errorf("%w: byte %d after a file's data", ErrSCP, p[0])
				break
			}
			s.state, s.failed = scpLine, true // an error line follows
		case scpLine:
			i := bytes.IndexByte(p, '\n')
			take := p
			if i >= 0 {
				take = p[:i]
			}
			if len(s.line)+len(take) > MaxSCPLine {
				s.err = fmt.Errorf("%w: control line over %d bytes", ErrSCP, MaxSCPLine)
				break
			}
			s.line = append(s.line, take...)
			if i < 0 {
				return evs, nil
			}
			p = p[i+1:]
			if ev, ok := s.control(); ok {
				evs = append(evs, ev)
			}
			s.line = s.line[:0]
		}
	}
	return evs, s.err
}

// control acts on one whole control line.
func (s *SCPSource) control() (SCPEvent, bool) {
	l := s.line
	if len(l) == 0 {
		s.err = fmt.Errorf("%w: empty control line", ErrSCP)
		return SCPEvent{}, false
	}
	switch l[0] {
	case 1, 2:
		ev := SCPEvent{Kind: "error", Message: string(l[1:])}
		if s.failed {
			ev.Path = s.file.Path
		}
		s.file, s.failed = SCPEvent{}, false
		return ev, true
	case 'T':
		return SCPEvent{}, false
	case 'E':
		if len(s.dirs) == 0 {
			s.err = fmt.Errorf("%w: E outside a directory", ErrSCP)
			return SCPEvent{}, false
		}
		s.dirs = s.dirs[:len(s.dirs)-1]
		return SCPEvent{}, false
	case 'C', 'D':
	default:
		s.err = fmt.Errorf("%w: control line starts with %q", ErrSCP, l[0])
		return SCPEvent{}, false
	}
	// C<mode> <size> <name> or D<mode> 0 <name>.
	fields := bytes.SplitN(l[1:], []byte(" "), 3)
	if len(fields) != 3 {
		s.err = fmt.Errorf("%w: %q", ErrSCP, l)
		return SCPEvent{}, false
	}
	mode, err1 := strconv.ParseUint(string(fields[0]), 8, 32)
	size, err2 := strconv.ParseInt(string(fields[1]), 10, 64)
	name := string(fields[2])
	if err1 != nil || err2 != nil || size < 0 || name == "" || name == "." || name == ".." || bytes.IndexByte(fields[2], '/') >= 0 {
		s.err = fmt.Errorf("%w: %q", ErrSCP, l)
		return SCPEvent{}, false
	}
	p := path.Join(append(append([]string(nil), s.dirs...), name)...)
	if l[0] == 'D' {
		if len(s.dirs) >= MaxSCPDepth {
			s.err = fmt.Errorf("%w: directories nest over %d deep", ErrSCP, MaxSCPDepth)
			return SCPEvent{}, false
		}
		s.dirs = append(s.dirs, name)
		return SCPEvent{Kind: "dir", Path: p, Mode: uint32(mode)}, true
	}
	s.file = SCPEvent{Kind: "file", Path: p, Mode: uint32(mode), Size: size}
	s.left = size
	s.state = scpData
	if size == 0 {
		s.state = scpStatus
	}
	return SCPEvent{}, false
}

// SCPAcks reads a legacy scp sink's answers and returns the messages of
// its warnings (\1) and errors (\2). Not safe for concurrent use.
type SCPAcks struct {
	msg   []byte
	inMsg bool
	err   error
}

// Feed reads p and returns the messages it completes. An error (a
// message over MaxSCPLine) is final.
func (a *SCPAcks) Feed(p []byte) ([]string, error) {
	var out []string
	for len(p) > 0 && a.err == nil {
		if !a.inMsg {
			switch p[0] {
			case 0:
			case 1, 2:
				a.inMsg = true
			default:
				a.err = fmt.Errorf("%w: answer byte %d", ErrSCP, p[0])
			}
			p = p[1:]
			continue
		}
		i := bytes.IndexByte(p, '\n')
		take := p
		if i >= 0 {
			take = p[:i]
		}
		if len(a.msg)+len(take) > MaxSCPLine {
			a.err = fmt.Errorf("%w: message over %d bytes", ErrSCP, MaxSCPLine)
			break
		}
		a.msg = append(a.msg, take...)
		if i < 0 {
			break
		}
		out = append(out, string(a.msg))
		a.msg, a.inMsg = a.msg[:0], false
		p = p[i+1:]
	}
	return out, a.err
}
