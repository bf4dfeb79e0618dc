package main

import (
	"fmt"
	"net"
	"os"
)

// sdNotify sends state ("READY=1", "STOPPING=1", "STATUS=...") to the
// service manager over $NOTIFY_SOCKET, as sd_notify(3) does, and reports
// whether it was sent. Without NOTIFY_SOCKET (not started by systemd with
// Type=notify) it does nothing and returns false, nil.
//
// It is the documented datagram write itself, not go-systemd's daemon
// package: that module is not among the ones this project may fetch, and
// the protocol is one sendto(2) on a unixgram socket whose name may start
// with '@' for the abstract namespace (systemd.exec(5), sd_notify(3)).
func sdNotify(state string) (bool, error) {
	name := os.Getenv("NOTIFY_SOCKET")
	if name == "" {
		return false, nil
	}
	if name[0] != '/' && name[0] != '@' {
		return false, fmt.Errorf("NOTIFY_SOCKET %q: want an absolute path or @abstract name", name)
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		return false, fmt.Errorf("notify %s: %w", name, err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return false, fmt.Errorf("notify %s: %w", name, err)
	}
	return true, nil
}
