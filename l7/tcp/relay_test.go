package tcp_test

import (
	"context"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/loopgate/loopgate/l7"
	"github.com/loopgate/loopgate/l7/l7test"
	"github.com/loopgate/loopgate/l7/tcp"
)

// sink accepts connections and reads each to its end, then closes it.
func sink(t testing.TB) net.Listener {
	up, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { up.Close() })
	go func() {
		for {
			c, err := up.Accept()
			if err != nil {
				return
			}
			go func() {
				io.Copy(io.Discard, c)
				c.Close()
			}()
		}
	}()
	return up
}

// relayOnce relays n bytes from a fresh client through the handler to
// addr and returns when the session has ended.
func relayOnce(t testing.TB, addr string, n int64, buf []byte) {
	cli, srvSide := l7test.TCPPair(t)
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer srvSide.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := (&tcp.Handler{}).Serve(ctx, srvSide, sessionTB(t, addr)); err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	for n > 0 {
		k, err := cli.Write(buf[:min(int64(len(buf)), n)])
		if err != nil {
			t.Fatal(err)
		}
		n -= int64(k)
	}
	cli.(*net.TCPConn).CloseWrite()
	io.Copy(io.Discard, cli)
	cli.Close()
	<-done
}

func openFDs(t testing.TB) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	return len(ents)
}

// TestRelayLeavesNoDescriptors: a session's descriptors close with it.
// Relaying with splice (io.Copy between TCP conns) leaves a pipe pair per
// direction in a pool that only the garbage collector empties: 4,000
// sessions left 12,765 descriptors open. Not parallel: it counts the
// process's descriptors.
func TestRelayLeavesNoDescriptors(t *testing.T) {
	up := sink(t)
	buf := make([]byte, 64<<10)
	relayOnce(t, up.Addr().String(), 1<<20, buf) // warm up: listeners, pollers
	before := openFDs(t)
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() { relayOnce(t, up.Addr().String(), 1<<20, make([]byte, 64<<10)) })
	}
	wg.Wait()
	if after := openFDs(t); after > before+2 {
		t.Errorf("%d descriptors open after 50 concurrent sessions ended, %d before", after, before)
	}
}

// BenchmarkRelay relays 64 MiB per op over loopback, direct and through
// the handler, and reports the proxied throughput as a fraction of direct.
func BenchmarkRelay(b *testing.B) {
	const size = 64 << 20
	up := sink(b)
	buf := make([]byte, 256<<10)
	var direct, proxied float64 // ns per op
	b.Run("direct", func(b *testing.B) {
		b.SetBytes(size)
		b.ReportAllocs()
		for b.Loop() {
			c, err := net.Dial("tcp", up.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			for n := size; n > 0; n -= len(buf) {
				c.Write(buf)
			}
			c.(*net.TCPConn).CloseWrite()
			io.Copy(io.Discard, c)
			c.Close()
		}
		direct = float64(b.Elapsed()) / float64(b.N)
	})
	b.Run("proxied", func(b *testing.B) {
		b.SetBytes(size)
		b.ReportAllocs()
		for b.Loop() {
			relayOnce(b, up.Addr().String(), size, buf)
		}
		proxied = float64(b.Elapsed()) / float64(b.N)
		if direct > 0 {
			b.ReportMetric(direct/proxied, "throughput/direct")
		}
	})
}

func sessionTB(t testing.TB, upstream string) *l7.Session {
	srv := l7test.Server(t, l7test.Config(t, testPolicy), l7test.NewRecorder())
	return l7test.Session(t, srv, "ok", "up", upstream)
}
