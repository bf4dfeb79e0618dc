package tests

import (
	"strings"
	"testing"
	"time"
)

// BenchmarkSSHTransfer pipes 256 MiB through ssh to sshd, direct and
// through loopgate in the same run, and reports the throughput ratio.
func BenchmarkSSHTransfer(b *testing.B) {
	s := newSSHSetup(b)
	const size = 256 << 20
	pipe := "head -c 268435456 /dev/zero | ssh "
	var direct, proxied time.Duration
	for range b.N {
		start := time.Now()
		out, stderr, code := s.direct(b, nil, "sh", "-c", pipe+shellQuote(s.directArgs(b))+" -p "+s.port+" lgtest-ssh@127.0.0.1 'wc -c'")
		direct += time.Since(start)
		if code != 0 || strings.TrimSpace(out) != "268435456" {
			b.Fatalf("direct: %d %q %q", code, out, stderr)
		}
		start = time.Now()
		out, stderr, code = s.run(b, "admin", nil, "sh", "-c", pipe+shellQuote(s.sshArgs())+" -p "+s.port+" deploy@127.0.0.1 'wc -c'")
		proxied += time.Since(start)
		if code != 0 || strings.TrimSpace(out) != "268435456" {
			b.Fatalf("proxied: %d %q %q", code, out, stderr)
		}
	}
	b.ReportMetric(float64(size)*float64(b.N)/direct.Seconds()/(1<<20), "direct-MiB/s")
	b.ReportMetric(float64(size)*float64(b.N)/proxied.Seconds()/(1<<20), "loopgate-MiB/s")
	b.ReportMetric(direct.Seconds()/proxied.Seconds(), "ratio")
}
