package tests

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/loopgate/loopgate/tests/lgtest"
)

type doctorReport struct {
	OK     bool `json:"ok"`
	Checks []struct {
		Name   string `json:"name"`
		Status string `json:"status"`
		Detail string `json:"detail"`
		Fix    string `json:"fix"`
	} `json:"checks"`
}

// doctor runs the command (prefixed by wrap, e.g. unshare) with --json and
// returns its report and exit status.
func runDoctor(t *testing.T, cfg string, wrap []string, extra ...string) (doctorReport, int) {
	t.Helper()
	args := append(append([]string{}, wrap...), lgtest.Binary(t), "doctor", "--json", "--config", cfg)
	cmd := exec.Command(args[0], append(args[1:], extra...)...)
	out, err := cmd.Output()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	var r doctorReport
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("doctor --json: %v\n%s", err, out)
	}
	return r, code
}

func (r doctorReport) check(t *testing.T, name string) (status, detail, fix string) {
	t.Helper()
	for _, c := range r.Checks {
		if c.Name == name {
			return c.Status, c.Detail, c.Fix
		}
	}
	t.Fatalf("doctor has no %q line: %+v", name, r.Checks)
	return "", "", ""
}

func sysctl(name string) string {
	b, _ := os.ReadFile("/proc/sys/" + strings.ReplaceAll(name, ".", "/"))
	return strings.TrimSpace(string(b))
}

// TestDoctor runs `loopgate doctor` on this host next to a running daemon
// and checks each line against what the host says by other means; then
// takes bpffs away in a private mount namespace, simulates a kernel
// without connect_unix, and breaks the config and the key's mode, and
// checks that doctor names each fault, with a fix, and exits 3.
func TestDoctor(t *testing.T) {
	lgtest.RequireRoot(t)
	cg := lgtest.CgroupName(t)
	dir := t.TempDir()
	cfg := lgtest.WriteConfig(t, fmt.Sprintf(`listen: 127.0.0.1:%d
store: %s
bpffs: %s
daemon_cgroup: %s-daemon
api: {socket: %s}
targets:
  - {name: echo, protocol: tcp, address: "127.0.0.2:7"}
workloads:
  - {name: locked, cgroup: %s/locked, default: deny}
`, lgtest.FreePort(t), filepath.Join(dir, "db", "loopgate.db"), lgtest.PinDir(t), cg, filepath.Join(lgtest.SharedDir(t), "api.sock"), cg))
	d := lgtest.StartDaemon(t, cfg)

	t.Run("this host", func(t *testing.T) {
		before := time.Now().Truncate(time.Second)
		r, code := runDoctor(t, cfg, nil)
		after := time.Now()
		if code != 0 || !r.OK {
			t.Fatalf("doctor exit %d, ok %v: %+v", code, r.OK, r.Checks)
		}
		var u unix.Utsname
		unix.Uname(&u)
		okIf := func(name string, want bool, detailHas string) {
			t.Helper()
			status, detail, fix := r.check(t, name)
			if (status == "ok") != want {
				t.Errorf("%s: %s (%s), want ok=%v", name, status, detail, want)
			}
			if status != "ok" && fix == "" {
				t.Errorf("%s: %s without a fix", name, status)
			}
			if !strings.Contains(detail, detailHas) {
				t.Errorf("%s: detail %q lacks %q", name, detail, detailHas)
			}
		}
		_, btfErr := os.Stat("/sys/kernel/btf/vmlinux")
		okIf("kernel", true, unix.ByteSliceToString(u.Release[:]))
		okIf("btf", btfErr == nil, "")
		okIf("cgroup v2", true, lgtest.Cgroup2Mount(t))
		okIf("bpffs", true, "/sys/fs/bpf")
		for _, h := range []string{"connect4", "connect6", "getpeername4", "getpeername6", "sendmsg4", "sendmsg6", "sock_create", "sockops"} {
			okIf("hook "+h, true, "attached")
		}
		// The daemon says so itself when it cannot cover unix sockets.
		unixCovered := !strings.Contains(d.Log(), "unix sockets are not covered")
		okIf("hook connect_unix", unixCovered, "")
		okIf("hook sendmsg_unix", unixCovered, "")
		okIf("dev.tty.legacy_tiocsti", sysctl("dev.tty.legacy_tiocsti") == "0", "")
		okIf("unprivileged user namespaces", sysctl("user.max_user_namespaces") == "0" || sysctl("kernel.unprivileged_userns_clone") == "0", "")
		okIf("config", true, "1 targets, 1 workloads")
		okIf("store", true, filepath.Join(dir, "db"))
		okIf("audit key", true, "-rw-------")
		okIf("ca key", true, "-rw-------")
		okIf("ssh ca keys", true, "")
		okIf("api socket", true, "the daemon answers")
		// The clock line shows the time doctor read: between ours.
		status, detail, _ := r.check(t, "clock")
		stamp, _, _ := strings.Cut(detail, ",")
		at, err := time.Parse(time.RFC3339, stamp)
		if status == "fail" || err != nil || at.Before(before) || at.After(after) {
			t.Errorf("clock: %s %q (%v)", status, detail, err)
		}
	})

	t.Run("bpffs unmounted", func(t *testing.T) {
		if _, err := exec.LookPath("unshare"); err != nil {
			lgtest.Unavailable(t, "unshare: %v", err)
		}
		// Only in a mount namespace of its own: the host keeps its bpffs.
		wrap := []string{"unshare", "--mount", "--propagation", "private", "sh", "-c",
			`while umount /sys/fs/bpf 2>/dev/null; do :; done; exec "$@"`, "sh"}
		r, code := runDoctor(t, cfg, wrap)
		status, detail, fix := r.check(t, "bpffs")
		if code != 3 || r.OK || status != "fail" || !strings.Contains(detail, "not mounted at /sys/fs/bpf") || !strings.Contains(fix, "mount -t bpf") {
			t.Errorf("exit %d, ok %v, bpffs: %s %q fix %q", code, r.OK, status, detail, fix)
		}
		if s, _, _ := r.check(t, "hook connect4"); s != "ok" {
			t.Errorf("hook connect4: %s; a missing bpffs must not hide the hooks", s)
		}
		if out, _ := os.ReadFile("/proc/self/mounts"); !strings.Contains(string(out), " /sys/fs/bpf bpf ") {
			t.Fatalf("the host lost its bpffs")
		}
	})

	t.Run("kernel without connect_unix", func(t *testing.T) {
		r, code := runDoctor(t, cfg, nil, "--simulate-missing", "connect_unix")
		status, detail, fix := r.check(t, "hook connect_unix")
		if code != 3 || status != "fail" || !strings.Contains(detail, "simulated") || !strings.Contains(detail, "locked is default: deny") || !strings.Contains(fix, "6.7") {
			t.Errorf("exit %d, connect_unix: %s %q fix %q", code, status, detail, fix)
		}
		// Without a default: deny workload nothing depends on it: a warning.
		open := lgtest.WriteConfig(t, "workloads: [{name: w, cgroup: x/w}]\nstore: "+filepath.Join(t.TempDir(), "db", "l.db")+"\n")
		r, code = runDoctor(t, open, nil, "--simulate-missing", "connect_unix")
		if status, _, _ := r.check(t, "hook connect_unix"); status != "warn" || code != 0 {
			t.Errorf("without default: deny: exit %d, connect_unix %s; want 0, warn", code, status)
		}
	})

	t.Run("bad config and key mode", func(t *testing.T) {
		bad := lgtest.WriteConfig(t, "listen: 127.0.0.1:15001\nworkloads:\n  - {name: w, cgroup: x/w, default: maybe}\n")
		r, code := runDoctor(t, bad, nil)
		status, detail, _ := r.check(t, "config")
		if code != 3 || status != "fail" || !strings.Contains(detail, bad+":3:") {
			t.Errorf("exit %d, config: %s %q; want fail naming %s:3:", code, status, detail, bad)
		}
		if s, _, _ := r.check(t, "store"); s != "skip" {
			t.Errorf("store with no config: %s, want skip", s)
		}

		store := t.TempDir()
		os.Chmod(store, 0o700)
		key := filepath.Join(store, "audit.key")
		os.WriteFile(key, []byte("not a key"), 0o644)
		loose := lgtest.WriteConfig(t, "store: "+filepath.Join(store, "l.db")+"\n")
		r, code = runDoctor(t, loose, nil)
		status, detail, fix := r.check(t, "audit key")
		if code != 3 || status != "fail" || !strings.Contains(fix, "chmod 600 "+key) {
			t.Errorf("exit %d, audit key: %s %q fix %q", code, status, detail, fix)
		}
		// SSH CA keys, and anything else in the store's directory.
		os.Chmod(key, 0o600)
		hostCA := filepath.Join(store, "ssh_host_ca")
		os.WriteFile(hostCA, []byte("not a key"), 0o640)
		os.WriteFile(hostCA+".pub", []byte("public"), 0o644)
		r, code = runDoctor(t, loose, nil)
		status, detail, fix = r.check(t, "ssh ca keys")
		if code != 3 || status != "fail" || !strings.Contains(fix, "chmod 600 "+hostCA) {
			t.Errorf("exit %d, ssh ca keys: %s %q fix %q", code, status, detail, fix)
		}
		status, detail, _ = r.check(t, "store")
		if status != "fail" || !strings.Contains(detail, hostCA) || strings.Contains(detail, ".pub") {
			t.Errorf("store: %s %q; want fail naming %s only", status, detail, hostCA)
		}
	})

	t.Run("table", func(t *testing.T) {
		out, _ := exec.Command(lgtest.Binary(t), "doctor", "--config", cfg, "--simulate-missing", "sockops").CombinedOutput()
		text := string(out)
		for _, want := range []string{"✓ kernel", "✗ hook sockops", "fix: loopgate needs this hook", "blocker(s)"} {
			if !strings.Contains(text, want) {
				t.Errorf("table lacks %q:\n%s", want, text)
			}
		}
	})
}
