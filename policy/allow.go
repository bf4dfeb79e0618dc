package policy

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
)

// Protocols of an allow entry.
const (
	AllowTCP  = "tcp"
	AllowUDP  = "udp"
	AllowUnix = "unix"
)

// maxUnixPath is the longest unix socket name, without its terminating NUL
// (sun_path is 108 bytes).
const maxUnixPath = 107

// AllowEntry is one parsed entry of a workload's allow list: a destination a
// default-deny workload may reach directly, by one protocol.
type AllowEntry struct {
	// Proto is AllowTCP, AllowUDP or AllowUnix.
	Proto string
	// Addr is "ip", "ip:port", "host" or "host:port" for tcp and udp (no
	// port: any port); for unix an absolute socket path, or "@name" for an
	// abstract socket.
	Addr string
}

// String is the entry as written in the config's canonical form.
func (a AllowEntry) String() string { return a.Proto + "://" + a.Addr }

// ParseAllow parses an allow entry:
//
//	10.0.0.5:443, db.internal, tcp://10.0.0.5:443   TCP (the scheme is optional)
//	udp://127.0.0.53:53                             UDP datagrams and connects
//	unix:///run/app.sock                            a unix socket path, as dialled
//	unix:@name                                      an abstract unix socket
//
// A unix path is matched byte for byte as the process passes it, so it must
// be absolute and clean.
func ParseAllow(s string) (AllowEntry, error) {
	scheme, rest, ok := strings.Cut(s, "://")
	if !ok {
		if name, ok := strings.CutPrefix(s, "unix:@"); ok {
			return abstractAllow(name)
		}
		scheme, rest = AllowTCP, s
	}
	switch scheme {
	case AllowTCP, AllowUDP:
		if err := checkHostPort(rest, false); err != nil {
			return AllowEntry{}, err
		}
		return AllowEntry{Proto: scheme, Addr: rest}, nil
	case AllowUnix:
		if name, ok := strings.CutPrefix(rest, "@"); ok {
			return abstractAllow(name)
		}
		if !strings.HasPrefix(rest, "/") || filepath.Clean(rest) != rest {
			return AllowEntry{}, fmt.Errorf("unix socket path %q must be absolute and clean (it is compared as dialled)", rest)
		}
		if len(rest) > maxUnixPath || strings.ContainsRune(rest, 0) {
			return AllowEntry{}, fmt.Errorf("unix socket path %q is longer than %d bytes or holds a NUL", rest, maxUnixPath)
		}
		return AllowEntry{Proto: AllowUnix, Addr: rest}, nil
	}
	return AllowEntry{}, fmt.Errorf("unknown scheme %q (want tcp://, udp:// or unix://)", scheme)
}

func abstractAllow(name string) (AllowEntry, error) {
	if name == "" || len(name) > maxUnixPath-1 {
		return AllowEntry{}, errors.New("abstract unix socket name must be 1 to 106 bytes")
	}
	return AllowEntry{Proto: AllowUnix, Addr: "@" + name}, nil
}
