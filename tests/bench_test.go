package tests

import (
	"encoding/json"
	"os/exec"
	"strconv"
	"testing"
)

// BenchmarkRoundTrip measures connect + one echo round trip + close from an
// unmodified client in a workload cgroup, through loopgate and direct to an
// identical echo server, interleaved in the same run. The ratio is the
// number to watch; ns/op of the benchmark itself includes process start and
// means nothing.
func BenchmarkRoundTrip(b *testing.B) {
	s := newSetup(b)
	n := max(b.N, 200)
	var r benchResult
	b.ResetTimer()
	client(b, s.cfg, "open", "", &r, "bench", strconv.Itoa(n), s.echo4.Addr().String(), s.other.Addr().String())
	if r.Err != "" {
		b.Fatal(r.Err)
	}
	b.ReportMetric(r.ProxiedNS, "proxied-ns/rt")
	b.ReportMetric(r.DirectNS, "direct-ns/rt")
	b.ReportMetric(r.ProxiedNS/r.DirectNS, "ratio")
}

// BenchmarkConnectNonTarget measures connect()+close to a non-target from a
// process in a workload cgroup (programs attached) against the same from a
// process outside any workload (no programs), in the same run.
func BenchmarkConnectNonTarget(b *testing.B) {
	s := newSetup(b)
	n := max(b.N, 500)
	addr := s.other.Addr().String()
	var with, without benchResult
	b.ResetTimer()
	client(b, s.cfg, "open", "", &with, "connects", strconv.Itoa(n), addr)
	cmd := exec.Command(clientBin, strconv.Itoa(n), addr)
	cmd.Env = append(cmd.Environ(), "LG_CLIENT=connects")
	out, err := cmd.Output()
	if err != nil {
		b.Fatal(err)
	}
	if err := json.Unmarshal(out, &without); err != nil {
		b.Fatal(err)
	}
	if with.Err != "" || without.Err != "" {
		b.Fatal(with.Err, without.Err)
	}
	b.ReportMetric(with.DirectNS, "attached-ns/connect")
	b.ReportMetric(without.DirectNS, "none-ns/connect")
	b.ReportMetric(with.DirectNS/without.DirectNS, "ratio")
}
