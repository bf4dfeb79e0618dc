package tests

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/loopgate/loopgate/tests/lgtest"
)

// wrkResult is what wrk reports.
type wrkResult struct {
	RPS      float64
	P50, P99 time.Duration
}

var (
	wrkRPS = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	wrkPct = regexp.MustCompile(`(?m)^\s+(50|99)%\s+([0-9.]+)(us|ms|s)\s*$`)
)

func parseWrk(out string) (wrkResult, error) {
	var r wrkResult
	m := wrkRPS.FindStringSubmatch(out)
	if m == nil {
		return r, fmt.Errorf("no Requests/sec in %q", out)
	}
	r.RPS, _ = strconv.ParseFloat(m[1], 64)
	for _, p := range wrkPct.FindAllStringSubmatch(out, -1) {
		v, _ := strconv.ParseFloat(p[2], 64)
		unit := map[string]time.Duration{"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second}[p[3]]
		d := time.Duration(v * float64(unit))
		if p[1] == "50" {
			r.P50 = d
		} else {
			r.P99 = d
		}
	}
	return r, nil
}

// BenchmarkHTTP measures small GETs over kept-alive HTTPS against nginx
// with wrk, direct and through loopgate (TLS terminated with a minted leaf,
// the bearer injected, each request decided and recorded durably), at 1
// and 64 connections, in the same run; and the first request on a fresh
// connection for a name never seen (so the leaf is minted), direct and
// through loopgate. The ratios and differences are the numbers to watch.
func BenchmarkHTTP(b *testing.B) {
	lgtest.RequireRoot(b)
	if _, err := exec.LookPath("wrk"); err != nil {
		lgtest.Unavailable(b, "wrk not installed (scripts/deps.sh)")
	}
	const fresh = 7 // names for first-request runs
	names := []string{lgtest.HostsEntry(b, "127.0.0.1")}
	for range fresh {
		names = append(names, lgtest.HostsEntry(b, "127.0.0.1"))
	}
	ngx := startNginx(b, names...)
	dir := b.TempDir()
	tok := filepath.Join(dir, "tok")
	os.WriteFile(tok, []byte("bench-token-value"), 0o600)
	shared := lgtest.SharedDir(b)
	caFile := filepath.Join(shared, "nginx-ca.pem")
	os.WriteFile(caFile, ngx.CA.PEM, 0o644)
	cfg := lgtest.WriteConfig(b, fmt.Sprintf(`listen: 127.0.0.1:%d
store: %s
bpffs: %s
daemon_cgroup: %s
targets:
  - {name: nginx, protocol: http, address: "127.0.0.1:%d", tls: {ca_file: %s}, credentials: {password_file: %s}}
workloads:
  - {name: bench, cgroup: %s}
rules:
  - {id: bench, workloads: [bench], targets: [nginx], allow: [read]}
`, lgtest.FreePort(b), filepath.Join(dir, "state", "lg.db"), lgtest.PinDir(b), lgtest.CgroupName(b)+"-daemon",
		ngx.Port, caFile, tok, lgtest.CgroupName(b)))
	lgtest.StartDaemon(b, cfg)
	url := func(name string) string { return "https://" + name + ":" + strconv.Itoa(ngx.Port) + "/small" }
	// via: "direct", "loopgate", or "nginx" (nginx as a TLS-terminating
	// reverse proxy to itself, the peer).
	wrk := func(via string, conns int) wrkResult {
		threads := min(conns, 2)
		target := url(names[0])
		if via == "nginx" {
			target = "https://" + names[0] + ":" + strconv.Itoa(ngx.ProxyPort) + "/small"
		}
		args := []string{"wrk", "-t", strconv.Itoa(threads), "-c", strconv.Itoa(conns), "-d", "5s", "--latency", target}
		var out string
		if via == "loopgate" {
			var stderr string
			var code int
			out, stderr, code = lgtest.Run(b, cfg, "bench", nil, []string{"--user", "nobody"}, args...)
			if code != 0 {
				b.Fatalf("wrk through loopgate: %d %s", code, stderr)
			}
		} else {
			o, err := exec.Command(args[0], args[1:]...).CombinedOutput()
			if err != nil {
				b.Fatalf("wrk direct: %v %s", err, o)
			}
			out = string(o)
		}
		r, err := parseWrk(out)
		if err != nil {
			b.Fatal(err)
		}
		if strings.Contains(out, "Non-2xx") || strings.Contains(out, "Socket errors") {
			b.Fatalf("wrk saw errors: %s", out)
		}
		return r
	}
	b.ResetTimer()
	for _, conns := range []int{1, 64} {
		b.Run(fmt.Sprintf("conns=%d", conns), func(b *testing.B) {
			// Interleaved: direct, loopgate, the nginx proxy, twice;
			// best of each.
			var direct, proxied, peer wrkResult
			for range 2 {
				if d := wrk("direct", conns); d.RPS > direct.RPS {
					direct = d
				}
				if p := wrk("loopgate", conns); p.RPS > proxied.RPS {
					proxied = p
				}
				if p := wrk("nginx", conns); p.RPS > peer.RPS {
					peer = p
				}
			}
			b.ReportMetric(peer.RPS, "nginx-proxy-req/s")
			b.ReportMetric(peer.RPS/direct.RPS, "nginx-proxy-ratio")
			b.ReportMetric(proxied.RPS/peer.RPS, "loopgate/nginx-proxy")
			b.ReportMetric(float64(peer.P50.Microseconds()), "nginx-proxy-p50-µs")
			b.ReportMetric(direct.RPS, "direct-req/s")
			b.ReportMetric(proxied.RPS, "proxied-req/s")
			b.ReportMetric(proxied.RPS/direct.RPS, "ratio")
			b.ReportMetric(float64(direct.P50.Microseconds()), "direct-p50-µs")
			b.ReportMetric(float64(proxied.P50.Microseconds()), "proxied-p50-µs")
			b.ReportMetric(float64((proxied.P50 - direct.P50).Microseconds()), "added-p50-µs")
			b.ReportMetric(float64(direct.P99.Microseconds()), "direct-p99-µs")
			b.ReportMetric(float64(proxied.P99.Microseconds()), "proxied-p99-µs")
		})
	}
	b.Run("first-request", func(b *testing.B) {
		// The daemon's resolver reads /etc/hosts at most every 5 s: the
		// fresh names were added before it started.
		var added, again []float64
		for _, name := range names[1:] {
			var d, p httpResult
			cmd := exec.Command(clientBin, url(name))
			cmd.Env = append(os.Environ(), "LG_CLIENT=http-first", "SSL_CERT_FILE="+caFile)
			out, err := cmd.Output()
			if err != nil || jsonInto(out, &d) != nil || d.Status != 200 {
				b.Fatalf("direct first request: %v %s", err, out)
			}
			client(b, cfg, "bench", "nobody", &p, "http-first", url(name))
			if p.Status != 200 {
				b.Fatalf("proxied first request: %+v", p)
			}
			added = append(added, float64(p.NS-d.NS)/1e3)
			// Again on a new connection: the leaf is cached now, the
			// session's start is still a commit of its own.
			client(b, cfg, "bench", "nobody", &p, "http-first", url(name))
			again = append(again, float64(p.NS-d.NS)/1e3)
		}
		slices.Sort(added)
		slices.Sort(again)
		b.ReportMetric(added[len(added)/2], "added-first-µs")
		b.ReportMetric(again[len(again)/2], "added-reconnect-µs")
	})
}

func jsonInto(b []byte, v any) error { return json.Unmarshal(b, v) }
