package tcp_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/loopgate/loopgate/l7"
	"github.com/loopgate/loopgate/l7/tcp"
	"github.com/loopgate/loopgate/policy"
)

func session(t *testing.T, upstream string) *l7.Session {
	return &l7.Session{
		ID:      "s",
		Subject: &policy.Subject{KernelFacts: policy.KernelFacts{OrigDst: netip.MustParseAddrPort(upstream)}},
		Log:     slog.New(slog.NewTextHandler(t.Output(), nil)),
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
	front, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer front.Close()
	cli, err := net.Dial("tcp", front.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	srvSide, err := front.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer srvSide.Close()

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
