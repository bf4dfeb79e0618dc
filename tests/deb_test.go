package tests

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/loopgate/loopgate/tests/lgtest"
)

// repoRoot is the module's root directory.
func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..")
}

// buildDeb builds the binary stamped with version and the .deb as `make
// deb` does, into dir, and returns the .deb's path.
func buildDeb(t *testing.T, dir, version string) string {
	t.Helper()
	bin := filepath.Join(dir, "loopgate")
	for _, args := range [][]string{
		{"build", "-ldflags", "-X main.version=" + version, "-o", bin, "./cmd/loopgate"},
		{"run", "./packaging/mkdeb", "-binary", bin, "-version", version, "-commits", "7", "-out", dir, "-require-completion"},
	} {
		cmd := exec.Command("go", args...)
		cmd.Dir = repoRoot()
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, exitStderr(err))
		}
		if args[0] == "run" {
			return strings.TrimSpace(string(out))
		}
	}
	return ""
}

func exitStderr(err error) string {
	if ee, ok := err.(*exec.ExitError); ok {
		return string(ee.Stderr)
	}
	return ""
}

// scratchRoot is an empty dpkg installation for dpkg --root.
func scratchRoot(t *testing.T) string {
	t.Helper()
	root := t.TempDir()
	for _, d := range []string{"info", "updates", "triggers"} {
		if err := os.MkdirAll(filepath.Join(root, "var/lib/dpkg", d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"status", "available"} {
		if err := os.WriteFile(filepath.Join(root, "var/lib/dpkg", f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// dpkg runs dpkg on the scratch root with maintainer scripts run outside a
// chroot (the root has no shell), DPKG_ROOT telling them where to act, and
// a systemctl on PATH that records its calls in calls.
func dpkg(t *testing.T, root, calls string, args ...string) string {
	t.Helper()
	fake := filepath.Join(filepath.Dir(calls), "fakebin")
	os.MkdirAll(fake, 0o755)
	os.WriteFile(filepath.Join(fake, "systemctl"), []byte("#!/bin/sh\necho \"$@\" >> "+calls+"\n"), 0o755)
	full := append([]string{"--root=" + root, "--force-script-chrootless", "--force-depends"}, args...)
	cmd := exec.Command("dpkg", full...)
	cmd.Env = append(os.Environ(), "PATH="+fake+":"+os.Getenv("PATH"), "DEBIAN_FRONTEND=noninteractive")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("dpkg %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

func mustStat(t *testing.T, path string, mode os.FileMode) {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Errorf("%s: %v", path, err)
		return
	}
	if got := fi.Mode() & (os.ModePerm | os.ModeDir); got != mode {
		t.Errorf("%s: mode %v, want %v", path, got, mode)
	}
}

func exists(path string) bool { _, err := os.Lstat(path); return err == nil }

// TestDebPackage builds the .deb as `make deb` does, checks its control
// data and file modes, installs it into a scratch root with dpkg --root,
// verifies the unit with systemd-analyze, runs the installed daemon on an
// edited conffile (READY over a real NOTIFY_SOCKET), reinstalls (the edit
// stays), removes (config, store and pins stay: fail closed) and purges
// (teardown runs, state goes).
func TestDebPackage(t *testing.T) {
	lgtest.RequireRoot(t)
	for _, tool := range []string{"dpkg", "dpkg-deb", "systemd-analyze"} {
		if _, err := exec.LookPath(tool); err != nil {
			lgtest.Unavailable(t, "%s: %v (scripts/deps.sh installs it)", tool, err)
		}
	}
	work := t.TempDir()
	const version = "v1.2.3-4-gabcdef0"
	deb := buildDeb(t, work, version)
	if filepath.Base(deb) != "loopgate_1.2.3+4.gabcdef0_amd64.deb" {
		t.Errorf("package file %s, want loopgate_1.2.3+4.gabcdef0_amd64.deb", filepath.Base(deb))
	}

	// Control data.
	out, err := exec.Command("dpkg-deb", "-f", deb, "Package", "Version", "Architecture", "Depends", "Section").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"Package: loopgate", "Version: 1.2.3+4.gabcdef0", "Architecture: amd64", "Depends: libc6", "Section: admin"} {
		if !strings.Contains(string(out), want+"\n") {
			t.Errorf("control lacks %q:\n%s", want, out)
		}
	}
	ctrl := filepath.Join(work, "control")
	if out, err := exec.Command("dpkg-deb", "-e", deb, ctrl).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb -e: %v\n%s", err, out)
	}
	if b, _ := os.ReadFile(filepath.Join(ctrl, "conffiles")); strings.TrimSpace(string(b)) != "/etc/loopgate/loopgate.yaml" {
		t.Errorf("conffiles = %q, want /etc/loopgate/loopgate.yaml", b)
	}
	for _, s := range []string{"postinst", "prerm", "postrm"} {
		mustStat(t, filepath.Join(ctrl, s), 0o755)
		if out, err := exec.Command("sh", "-n", filepath.Join(ctrl, s)).CombinedOutput(); err != nil {
			t.Errorf("%s: %v\n%s", s, err, out)
		}
	}

	// Install into the scratch root.
	root := scratchRoot(t)
	calls := filepath.Join(work, "systemctl.calls")
	msg := dpkg(t, root, calls, "-i", deb)
	if !strings.Contains(msg, "not running, and redirects nothing yet") {
		t.Errorf("first install does not say the daemon is not started:\n%s", msg)
	}
	lgBin := filepath.Join(root, "usr/bin/loopgate")
	for path, mode := range map[string]os.FileMode{
		"usr/bin/loopgate":                        0o755,
		"lib/systemd/system/loopgate.service":     0o644,
		"etc/loopgate":                            os.ModeDir | 0o755,
		"etc/loopgate/loopgate.yaml":              0o640,
		"var/lib/loopgate":                        os.ModeDir | 0o700,
		"usr/share/doc/loopgate/copyright":        0o644,
		"usr/share/man/man1/loopgate.1.gz":        0o644,
		"usr/share/man/man1/loopgate-daemon.1.gz": 0o644,
	} {
		mustStat(t, filepath.Join(root, path), mode)
	}
	if out, _ := exec.Command(lgBin, "--version").Output(); !strings.Contains(string(out), version) {
		t.Errorf("installed loopgate --version = %q, want %s in it", out, version)
	}
	conf := filepath.Join(root, "etc/loopgate/loopgate.yaml")
	if out, err := exec.Command(lgBin, "policy", "check", conf).CombinedOutput(); err != nil {
		t.Errorf("the shipped config does not validate: %v\n%s", err, out)
	} else if !strings.Contains(string(out), "0 workloads") {
		t.Errorf("the shipped config protects something: %s", out)
	}
	// Every top-level command has its page, and each shell its completion.
	top, _ := exec.Command(lgBin, "--help").Output()
	for _, c := range []string{"daemon", "run", "teardown", "doctor"} {
		if !bytes.Contains(top, []byte("   "+c)) {
			continue
		}
		mustStat(t, filepath.Join(root, "usr/share/man/man1/loopgate-"+c+".1.gz"), 0o644)
	}
	{
		for _, p := range []string{"usr/share/bash-completion/completions/loopgate", "usr/share/zsh/vendor-completions/_loopgate",
			"usr/share/fish/vendor_completions.d/loopgate.fish"} {
			mustStat(t, filepath.Join(root, p), 0o644)
		}
	}

	t.Run("systemd-analyze", func(t *testing.T) { verifyUnit(t, root) })

	// The admin edits the conffile; the installed daemon runs on it.
	cg := lgtest.CgroupName(t)
	pins := lgtest.PinDir(t)
	edited := fmt.Sprintf(`# edited by the admin
listen: 127.0.0.1:%d
store: %s
bpffs: %s
daemon_cgroup: %s-daemon
api: {socket: %s}
targets:
  - {name: echo, protocol: tcp, address: "127.0.0.2:7"}
workloads:
  - {name: w, cgroup: %s/w}
rules: []
`, lgtest.FreePort(t), filepath.Join(root, "var/lib/loopgate/loopgate.db"), pins, cg,
		filepath.Join(work, "api.sock"), cg)
	if err := os.WriteFile(conf, []byte(edited), 0o640); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { exec.Command(lgtest.Binary(t), "teardown", "--force", "--config", conf).Run() })
	d, ready := startService(t, lgBin, conf)
	if !ready {
		t.Fatalf("installed daemon sent no READY=1:\n%s", d.Log())
	}
	d.stop(t)
	if !exists(filepath.Join(pins, "links")) {
		t.Fatalf("no pinned links under %s after the daemon ran", pins)
	}

	// Reinstall (an upgrade to the same version): the edit stays, no prompt.
	dpkg(t, root, calls, "-i", deb)
	if b, _ := os.ReadFile(conf); string(b) != edited {
		t.Errorf("reinstall replaced the edited conffile:\n%s", b)
	}

	// Remove: binary and unit go; config, store and pins stay.
	dpkg(t, root, calls, "-r", "loopgate")
	for _, gone := range []string{"usr/bin/loopgate", "lib/systemd/system/loopgate.service"} {
		if exists(filepath.Join(root, gone)) {
			t.Errorf("remove left %s", gone)
		}
	}
	for _, kept := range []string{"etc/loopgate/loopgate.yaml", "var/lib/loopgate/loopgate.db", "var/lib/loopgate/audit.key"} {
		if !exists(filepath.Join(root, kept)) {
			t.Errorf("remove deleted %s", kept)
		}
	}
	if !exists(filepath.Join(pins, "links")) {
		t.Errorf("remove tore down the redirect: workloads must stay fail closed until purge")
	}
	status, _ := exec.Command("dpkg-query", "--admindir="+filepath.Join(root, "var/lib/dpkg"), "-W", "-f=${db:Status-Abbrev}", "loopgate").Output()
	if strings.TrimSpace(string(status)) != "rc" {
		t.Errorf("after remove dpkg status %q, want rc (config files kept)", status)
	}

	// Purge: teardown from the copy prerm kept, then the state goes.
	dpkg(t, root, calls, "-P", "loopgate")
	if exists(pins) {
		t.Errorf("purge left the pins at %s: teardown did not run", pins)
	}
	for _, gone := range []string{"var/lib/loopgate", "etc/loopgate"} {
		if exists(filepath.Join(root, gone)) {
			t.Errorf("purge left %s", gone)
		}
	}
	if b, err := os.ReadFile(calls); err == nil {
		t.Errorf("maintainer scripts called systemctl for a DPKG_ROOT install:\n%s", b)
	}
}

var exposure = regexp.MustCompile(`Overall exposure level for loopgate\.service: ([0-9.]+)`)

// verifyUnit runs systemd-analyze verify on the installed unit (its
// ExecStart pointed at the scratch root's binary, man pages looked up
// there) and prints systemd-analyze security's table and score.
func verifyUnit(t *testing.T, root string) {
	unit, err := os.ReadFile(filepath.Join(root, "lib/systemd/system/loopgate.service"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "loopgate.service")
	text := strings.ReplaceAll(string(unit), "/usr/bin/loopgate", filepath.Join(root, "usr/bin/loopgate"))
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("systemd-analyze", "verify", path)
	cmd.Env = append(os.Environ(), "MANPATH="+filepath.Join(root, "usr/share/man"), "SYSTEMD_LOG_COLOR=0")
	out, err := cmd.CombinedOutput()
	var ours []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, "loopgate") {
			ours = append(ours, l)
		}
	}
	if err != nil || len(ours) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}

	out, err = exec.Command("systemd-analyze", "security", "--offline=true", "--no-pager", path).CombinedOutput()
	m := exposure.FindSubmatch(out)
	if m == nil {
		t.Fatalf("systemd-analyze security: %v\n%s", err, out)
	}
	t.Logf("systemd-analyze security --offline=true loopgate.service:\n%s", out)
	score, _ := strconv.ParseFloat(string(m[1]), 64)
	// 2.8 when written; a rise means hardening was lost.
	if score > 3.0 {
		t.Errorf("exposure %.1f, want at most 3.0", score)
	}
}
