package tcp_test

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/loopgate/loopgate/l7"
	"github.com/loopgate/loopgate/l7/l7test"
	"github.com/loopgate/loopgate/l7/tcp"
)

const testPolicy = `targets:
  - {name: up, protocol: tcp, address: 127.0.0.1:1}
workloads:
  - {name: ok, cgroup: lg/ok}
  - {name: nope, cgroup: lg/nope}
rules:
  - {id: ok-up, workloads: [ok], targets: [up], allow: [connect]}
`

func session(t *testing.T, upstream string) *l7.Session {
	return sessionOf(t, "ok", upstream, l7test.NewRecorder())
}

func sessionOf(t *testing.T, workload, upstream string, rec *l7test.Recorder) *l7.Session {
	srv := l7test.Server(t, l7test.Config(t, testPolicy), rec)
	return l7test.Session(t, srv, workload, "up", upstream)
}

func TestDeniedNeverDials(t *testing.T) {
	t.Parallel()
	up, _ := net.Listen("tcp", "127.0.0.1:0")
	defer up.Close()
	rec := l7test.NewRecorder()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	_, err := (&tcp.Handler{}).Serve(context.Background(), a, sessionOf(t, "nope", up.Addr().String(), rec))
	if !errors.Is(err, l7.ErrDenied) {
		t.Fatalf("err = %v, want ErrDenied", err)
	}
	up.(*net.TCPListener).SetDeadline(time.Now().Add(100 * time.Millisecond))
	if c, err := up.Accept(); err == nil {
		c.Close()
		t.Error("denied session dialled the target")
	}
	evs := rec.EventsOf()
	if len(evs) != 1 || evs[0].Decision != "deny" || !strings.Contains(evs[0].Error, "default deny") {
		t.Errorf("events = %+v", evs)
	}
}

// TestRelayCountsAndHalfClose relays a request that ends with a FIN and a
// response that follows it, and counts bytes both ways.
func TestRelayCountsAndHalfClose(t *testing.T) {
	t.Parallel()
	up, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	go func() {
		c, err := up.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		req, _ := io.ReadAll(c) // until the client's FIN
		io.WriteString(c, "got "+string(req))
	}()
	cli, srvSide := l7test.TCPPair(t)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resc := make(chan l7.Result)
	go func() {
		res, err := (&tcp.Handler{}).Serve(ctx, srvSide, session(t, up.Addr().String()))
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
		resc <- res
	}()
	io.WriteString(cli, "hello")
	cli.(*net.TCPConn).CloseWrite()
	resp, _ := io.ReadAll(cli)
	if string(resp) != "got hello" {
		t.Errorf("resp = %q", resp)
	}
	res := <-resc
	if res.BytesUp != 5 || res.BytesDown != 9 {
		t.Errorf("result = %+v", res)
	}
}

func TestUpstreamDown(t *testing.T) {
	t.Parallel()
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	_, err := (&tcp.Handler{DialTimeout: time.Second}).Serve(context.Background(), a, session(t, addr))
	if err == nil || !strings.Contains(err.Error(), "dial upstream") {
		t.Errorf("err = %v", err)
	}
}

func TestCancelStopsRelay(t *testing.T) {
	t.Parallel()
	up, _ := net.Listen("tcp", "127.0.0.1:0")
	defer up.Close()
	accepted := make(chan struct{})
	go func() {
		c, err := up.Accept()
		if err == nil {
			close(accepted)
			defer c.Close()
			io.Copy(io.Discard, c)
		}
	}()
	a, b := net.Pipe()
	defer b.Close()
	ctx, cancel := context.WithCancelCause(context.Background())
	done := make(chan error)
	go func() {
		_, err := (&tcp.Handler{}).Serve(ctx, a, session(t, up.Addr().String()))
		done <- err
	}()
	<-accepted
	b.Write([]byte("x")) // returns once the relay has read it: relaying now
	cancel(l7.ErrShutdown)
	select {
	case err := <-done:
		if err != l7.ErrShutdown {
			t.Errorf("err = %v, want ErrShutdown", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("relay did not stop on cancel")
	}
}
