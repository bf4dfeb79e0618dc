package main

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestSDNotify sends to a real unixgram socket, by path and in the
// abstract namespace, as systemd's NOTIFY_SOCKET is given.
func TestSDNotify(t *testing.T) {
	for _, tc := range []struct{ name, addr string }{
		{"path", filepath.Join(t.TempDir(), "notify.sock")},
		{"abstract", fmt.Sprintf("@loopgate-notify-test-%d", os.Getpid())},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: tc.addr, Net: "unixgram"})
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			t.Setenv("NOTIFY_SOCKET", tc.addr)
			sent, err := sdNotify("READY=1\nSTATUS=redirecting")
			if !sent || err != nil {
				t.Fatalf("sdNotify = %v, %v", sent, err)
			}
			ln.SetReadDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, 256)
			n, err := ln.Read(buf)
			if err != nil {
				t.Fatal(err)
			}
			if got := string(buf[:n]); got != "READY=1\nSTATUS=redirecting" {
				t.Errorf("got %q", got)
			}
		})
	}
	t.Run("unset", func(t *testing.T) {
		t.Setenv("NOTIFY_SOCKET", "")
		if sent, err := sdNotify("READY=1"); sent || err != nil {
			t.Errorf("sdNotify without NOTIFY_SOCKET = %v, %v; want false, nil", sent, err)
		}
	})
	t.Run("relative", func(t *testing.T) {
		t.Setenv("NOTIFY_SOCKET", "notify.sock")
		if sent, err := sdNotify("READY=1"); sent || err == nil {
			t.Errorf("sdNotify to a relative name = %v, %v; want an error", sent, err)
		}
	})
}
