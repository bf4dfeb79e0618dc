package http

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	stdhttp "net/http"
	"sync"
	"testing"
	"time"
)

// BenchmarkProxy sends small GETs over kept-alive HTTP/1.1 TLS
// connections, direct to the upstream and through the handler (in
// process, in-memory recorder), in the same run; the ratio is the number
// to watch.
func BenchmarkProxy(b *testing.B) {
	for _, conns := range []int{1, 64} {
		b.Run(fmt.Sprintf("conns=%d", conns), func(b *testing.B) {
			r := newRigTB(b, baseRule)
			direct := func() *stdhttp.Client {
				return &stdhttp.Client{Transport: &stdhttp.Transport{
					DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
						var d net.Dialer
						return d.DialContext(ctx, "tcp", "127.0.0.1:"+r.port)
					},
					TLSClientConfig: &tls.Config{RootCAs: r.upCA.pool(), NextProtos: []string{"http/1.1"}}, MaxIdleConnsPerHost: conns}}
			}()
			proxied := r.newClient(r.lgCA.pool(), "")
			proxied.Transport.(*stdhttp.Transport).TLSClientConfig.NextProtos = []string{"http/1.1"}
			proxied.Transport.(*stdhttp.Transport).MaxIdleConnsPerHost = conns
			run := func(c *stdhttp.Client, n int) time.Duration {
				start := time.Now()
				var wg sync.WaitGroup
				per := max(n/conns, 1)
				for range conns {
					wg.Go(func() {
						for range per {
							resp, err := c.Get(r.url("/hello"))
							if err != nil {
								b.Error(err)
								return
							}
							io.Copy(io.Discard, resp.Body)
							resp.Body.Close()
						}
					})
				}
				wg.Wait()
				return time.Since(start) / time.Duration(per*conns)
			}
			n := max(b.N, 2000)
			run(direct, conns*4)
			run(proxied, conns*4)
			b.ResetTimer()
			d := run(direct, n)
			p := run(proxied, n)
			b.ReportMetric(float64(d.Nanoseconds()), "direct-ns/req")
			b.ReportMetric(float64(p.Nanoseconds()), "proxied-ns/req")
			b.ReportMetric(float64(d)/float64(p), "throughput-ratio")
		})
	}
}

// BenchmarkMint is the cost of minting a leaf for a name not seen yet.
func BenchmarkMint(b *testing.B) {
	ca := newTestCA(b)
	m, err := NewMinter(ca.cert, ca.key, "")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		if _, err := m.Leaf(fmt.Sprintf("h%d.test", i)); err != nil {
			b.Fatal(err)
		}
	}
}
