package tests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/loopgate/loopgate/tests/lgtest"
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

// BenchmarkSSHLogin times `ssh host true` direct and through loopgate,
// alternating, and reports what loopgate adds to a login. Both clients
// are started the same way (as nobody, straight from the test); the
// proxied one is placed in the workload's cgroup at clone.
func BenchmarkSSHLogin(b *testing.B) {
	s := newSSHSetup(b)
	s.run(b, "admin", nil, "true") // the workload's cgroup exists from here
	cg, err := os.Open(filepath.Join(lgtest.Cgroup2Mount(b), s.workloadCgroup("admin")))
	if err != nil {
		b.Fatal(err)
	}
	defer cg.Close()
	directArgs := append(append([]string{"ssh"}, s.directArgs(b)...), "-p", s.port, "lgtest-ssh@127.0.0.1", "true")
	proxiedArgs := append(append([]string{"ssh"}, s.sshArgs()...), "-p", s.port, "deploy@127.0.0.1", "true")
	timeRun := func(args []string, cgroup *os.File) time.Duration {
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Dir = "/"
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		if cgroup != nil {
			cmd.SysProcAttr.UseCgroupFD, cmd.SysProcAttr.CgroupFD = true, int(cgroup.Fd())
		}
		start := time.Now()
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("%v: %v %s", args, err, out)
		}
		return time.Since(start)
	}
	var direct, proxied time.Duration
	for range b.N {
		direct += timeRun(directArgs, nil)
		proxied += timeRun(proxiedArgs, cg)
	}
	b.ReportMetric(float64(direct.Milliseconds())/float64(b.N), "direct-ms/login")
	b.ReportMetric(float64(proxied.Milliseconds())/float64(b.N), "loopgate-ms/login")
	b.ReportMetric(float64((proxied-direct).Milliseconds())/float64(b.N), "added-ms/login")
}

// BenchmarkSSHConcurrent holds 100 exec sessions open at once through
// loopgate and reports the daemon's resident memory before and at the
// peak.
func BenchmarkSSHConcurrent(b *testing.B) {
	s := newSSHSetup(b)
	const n = 100
	before := rss(b, s.daemon.PID())
	peak := before
	for range b.N {
		script := fmt.Sprintf(`for i in $(seq %d); do ssh %s -p %s deploy@127.0.0.1 'sleep 4; echo ok' > /dev/null & done; wait`,
			n, shellQuote(s.sshArgs()), s.port)
		done := make(chan struct{})
		go func() {
			defer close(done)
			if _, stderr, code := s.run(b, "admin", nil, "sh", "-c", script); code != 0 {
				b.Errorf("concurrent: %d %s", code, stderr)
			}
		}()
		tick := time.NewTicker(100 * time.Millisecond)
	wait:
		for {
			select {
			case <-done:
				break wait
			case <-tick.C:
				peak = max(peak, rss(b, s.daemon.PID()))
			}
		}
		tick.Stop()
	}
	// Session ends are written with the store's next commit.
	var sessions []lgtest.Session
	lgtest.Eventually(b, 20*time.Second, "every session's end recorded", func() bool {
		sessions = lgtest.Sessions(b, s.cfg, "--workload", "admin")
		for _, ss := range sessions {
			if ss.Outcome == "open" {
				return false
			}
		}
		return true
	})
	ok := 0
	for _, ss := range sessions {
		if ss.Outcome == "closed" {
			ok++
		} else {
			b.Logf("session %s: %s %s", ss.ID, ss.Outcome, ss.Error)
		}
	}
	if ok < n*b.N {
		b.Errorf("%d of %d sessions closed cleanly", ok, n*b.N)
	}
	b.ReportMetric(float64(before)/(1<<20), "rss-before-MiB")
	b.ReportMetric(float64(peak)/(1<<20), "rss-peak-MiB")
	b.ReportMetric(float64(peak-before)/float64(n)/(1<<10), "KiB/session")
}

// rss is a process's resident set size in bytes.
func rss(b *testing.B, pid int) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range strings.Split(string(data), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}
