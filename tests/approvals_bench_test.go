package tests

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/loopgate/loopgate/tests/lgtest"
)

// approvalBench is a daemon whose "gated" workload needs an approval to
// connect to the echo target, with root (uid 0) as approver.
func approvalBench(b *testing.B) (cfg, socket string, echo *lgtest.Echo, daemonPID func() int) {
	echo = lgtest.StartEcho(b, "127.0.0.2:0")
	dir := b.TempDir()
	socket = filepath.Join(lgtest.SharedDir(b), "api.sock")
	cfg = lgtest.WriteConfig(b, fmt.Sprintf(`listen: 127.0.0.1:%d
store: %s
bpffs: %s
daemon_cgroup: %s
api: {socket: %s}
approvals: {timeout: 5m, max_pending: 5000}
approvers:
  - {name: root, uid: 0}
targets:
  - {name: echo, protocol: tcp, address: %s}
workloads:
  - {name: gated, cgroup: %s}
rules:
  - {id: gated, workloads: [gated], targets: [echo], approve: [connect], record: async}
`, lgtest.FreePort(b), filepath.Join(dir, "lg.db"), lgtest.PinDir(b), lgtest.CgroupName(b)+"-daemon", socket, echo.Addr(), lgtest.CgroupName(b)))
	d := lgtest.StartDaemon(b, cfg)
	return cfg, socket, echo, d.PID
}

func unixClient(socket string) *http.Client {
	return &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socket)
	}}}
}

// BenchmarkApprovalRoundTrip: a connection that needs approval, with an
// approver that approves as soon as the request shows on the event stream,
// against the same connection with no approval needed... measured inside
// the workload as connect-to-echo time.
func BenchmarkApprovalRoundTrip(b *testing.B) {
	cfg, socket, echo, _ := approvalBench(b)
	hc := unixClient(socket)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// The approver: approve every request the moment it arrives.
	go func() {
		// The API starts just after the daemon says ready: retry.
		var resp *http.Response
		for range 100 {
			req, _ := http.NewRequestWithContext(ctx, "GET", "http://lg/v1/approvals/stream", nil)
			var err error
			if resp, err = hc.Do(req); err == nil {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if resp == nil {
			return
		}
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			data, ok := strings.CutPrefix(sc.Text(), "data: ")
			if !ok {
				continue
			}
			var r struct{ ID, State string }
			json.Unmarshal([]byte(data), &r)
			if r.State == "pending" {
				go func() {
					resp, err := hc.Post("http://lg/v1/approvals/"+r.ID+"/approve", "application/json", strings.NewReader(`{}`))
					if err == nil {
						resp.Body.Close()
					}
				}()
			}
		}
	}()
	n := max(b.N, 50)
	var r benchResult
	b.ResetTimer()
	client(b, cfg, "gated", "nobody", &r, "bench", strconv.Itoa(n), echo.Addr().String(), echo.Addr().String())
	if r.Err != "" {
		var errs []string
		for _, x := range lgtest.Sessions(b, cfg, "--limit", "5") {
			errs = append(errs, x.Outcome+": "+x.Error)
		}
		b.Fatalf("%s; sessions: %v", r.Err, errs)
	}
	// "bench" interleaves two addresses; both are the gated target here, so
	// each number is a round trip with an approval in it.
	b.ReportMetric((r.ProxiedNS+r.DirectNS)/2/1e6, "ms/approved-connect")
}

// BenchmarkApprovalCapacity holds 1000 connections waiting for approval at
// once and reports the daemon's memory per waiting session, then approves
// them all.
func BenchmarkApprovalCapacity(b *testing.B) {
	cfg, socket, echo, pid := approvalBench(b)
	hc := unixClient(socket)
	rss := func() int64 {
		s, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid()))
		for _, line := range strings.Split(string(s), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				return kb << 10
			}
		}
		return 0
	}
	before := rss()
	const waiting = 1000
	done := make(chan struct{})
	go func() {
		var rs []clientResult
		client(b, cfg, "gated", "nobody", &rs, "many", strconv.Itoa(waiting), echo.Addr().String())
		close(done)
	}()
	var ids []string
	lgtest.Eventually(b, 60*time.Second, "1000 pending", func() bool {
		resp, err := hc.Get("http://lg/v1/approvals?state=pending")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var out struct{ Approvals []struct{ ID string } }
		json.NewDecoder(resp.Body).Decode(&out)
		ids = ids[:0]
		for _, a := range out.Approvals {
			ids = append(ids, a.ID)
		}
		return len(ids) == waiting
	})
	after := rss()
	b.ReportMetric(float64(after-before)/waiting/1024, "KiB/waiting-session")
	start := time.Now()
	for _, id := range ids {
		resp, err := hc.Post("http://lg/v1/approvals/"+id+"/approve", "application/json", strings.NewReader(`{}`))
		if err != nil {
			b.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("approve %s: %s", id, resp.Status)
		}
	}
	<-done
	b.ReportMetric(float64(time.Since(start).Milliseconds()), "ms/approve-1000")
}
