package doctor

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"

	"github.com/loopgate/loopgate/intercept"
)

// minKernel is the oldest kernel loopgate supports (README "Requirements"):
// cgroup getpeername hooks (5.8), CAP_BPF and CAP_PERFMON (5.8), bpf links
// for cgroups (5.7), BTF for CO-RE, as in Debian 12's 6.1 and Ubuntu 22.04's
// 5.15.
var minKernel = [2]int{5, 15}

func checkKernel() Check {
	c := Check{Name: "kernel"}
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return fail(c, fmt.Sprintf("uname: %v", err), "")
	}
	rel := unix.ByteSliceToString(u.Release[:])
	major, minor, ok := kernelVersion(rel)
	switch {
	case !ok:
		return warn(c, fmt.Sprintf("%s: version not understood", rel), fmt.Sprintf("loopgate needs Linux %d.%d or newer", minKernel[0], minKernel[1]))
	case major < minKernel[0] || major == minKernel[0] && minor < minKernel[1]:
		return fail(c, fmt.Sprintf("Linux %s is older than %d.%d", rel, minKernel[0], minKernel[1]),
			fmt.Sprintf("upgrade the kernel to %d.%d or newer (Debian 12: 6.1)", minKernel[0], minKernel[1]))
	}
	return ok_(c, "Linux "+rel)
}

// kernelVersion reads "6.18.44-fc-v669" as 6, 18.
func kernelVersion(rel string) (major, minor int, ok bool) {
	parts := strings.SplitN(rel, ".", 3)
	if len(parts) < 2 {
		return 0, 0, false
	}
	major, err1 := strconv.Atoi(parts[0])
	minor, err2 := strconv.Atoi(strings.TrimRightFunc(parts[1], func(r rune) bool { return r < '0' || r > '9' }))
	return major, minor, err1 == nil && err2 == nil
}

func checkBTF() Check {
	c := Check{Name: "btf"}
	if _, err := btf.LoadKernelSpec(); err != nil {
		return fail(c, fmt.Sprintf("kernel BTF not readable: %v", err),
			"use a kernel built with CONFIG_DEBUG_INFO_BTF=y (Debian's are); /sys/kernel/btf/vmlinux must exist")
	}
	return ok_(c, "/sys/kernel/btf/vmlinux")
}

type cgroupCheck struct {
	Check
	mount string
}

func checkCgroup() cgroupCheck {
	c := Check{Name: "cgroup v2"}
	mount, err := intercept.Cgroup2Mount()
	if err != nil {
		return cgroupCheck{Check: fail(c, err.Error(),
			"boot with cgroup v2 (systemd.unified_cgroup_hierarchy=1), or mount -t cgroup2 none /sys/fs/cgroup/unified")}
	}
	return cgroupCheck{Check: ok_(c, "mounted at "+mount), mount: mount}
}

// checkBPFFS looks for a bpf file system at intercept.BPFFSRoot, where the
// daemon pins its programs so that redirection outlives it.
func checkBPFFS() Check {
	c := Check{Name: "bpffs"}
	at, err := mountOf("/proc/self/mounts", "bpf")
	if err != nil {
		return fail(c, err.Error(), "")
	}
	for _, m := range at {
		if m == intercept.BPFFSRoot {
			return ok_(c, "mounted at "+m)
		}
	}
	detail := "not mounted at " + intercept.BPFFSRoot
	if len(at) > 0 {
		detail += " (bpf mounted at " + strings.Join(at, ", ") + ")"
	}
	return fail(c, detail, "mount -t bpf bpf "+intercept.BPFFSRoot+
		" (systemd mounts it at boot; without it pins, and so fail-closed redirection across restarts, are impossible)")
}

// mountOf lists the mount points of file systems of type fstype.
func mountOf(mounts, fstype string) ([]string, error) {
	f, err := os.Open(mounts)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", mounts, err)
	}
	defer f.Close()
	var at []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 3 && fields[2] == fstype {
			at = append(at, unescape(fields[1]))
		}
	}
	return at, sc.Err()
}

// unescape undoes /proc/mounts' octal escapes (\040 for a space).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func readSysctl(name string) (string, error) {
	b, err := os.ReadFile("/proc/sys/" + strings.ReplaceAll(name, ".", "/"))
	return strings.TrimSpace(string(b)), err
}

func checkTIOCSTI() Check {
	c := Check{Name: "dev.tty.legacy_tiocsti"}
	v, err := readSysctl("dev.tty.legacy_tiocsti")
	switch {
	case errors.Is(err, os.ErrNotExist):
		return warn(c, "absent (kernel before 6.2): TIOCSTI always works",
			"run agents with loopgate run, which gives them a pty of their own; or use Linux 6.2+ with dev.tty.legacy_tiocsti=0")
	case err != nil:
		return warn(c, err.Error(), "")
	case v == "0":
		return ok_(c, "0: no process can push input into a terminal")
	}
	return warn(c, v+": a process can push input into a terminal it holds (loopgate run gives agents their own pty)",
		"sysctl -w dev.tty.legacy_tiocsti=0, and put it in /etc/sysctl.d/")
}

// checkUserNS reports whether unprivileged users may create user
// namespaces: a workload can then make a network namespace of its own,
// where its connections are refused (the redirect points at a listener that
// is not there) rather than served.
func checkUserNS() Check {
	c := Check{Name: "unprivileged user namespaces"}
	if v, err := readSysctl("kernel.unprivileged_userns_clone"); err == nil && v == "0" {
		return ok_(c, "kernel.unprivileged_userns_clone=0")
	}
	if v, err := readSysctl("kernel.apparmor_restrict_unprivileged_userns"); err == nil && v == "1" {
		return ok_(c, "restricted by AppArmor (kernel.apparmor_restrict_unprivileged_userns=1)")
	}
	v, err := readSysctl("user.max_user_namespaces")
	if err != nil {
		return warn(c, err.Error(), "")
	}
	if v == "0" {
		return ok_(c, "user.max_user_namespaces=0")
	}
	return warn(c, "allowed (user.max_user_namespaces="+v+"): a workload can enter a network namespace of its own, where it fails closed instead of being served",
		"sysctl -w kernel.unprivileged_userns_clone=0 (Debian kernels) or user.max_user_namespaces=0, if no workload needs them")
}

// earliest is a time no correct clock reads before: this code did not
// exist then.
var earliest = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// checkClock: records carry wall-clock times and OIDC tokens and
// certificates are checked against it.
func checkClock(now time.Time) Check {
	c := Check{Name: "clock"}
	if now.Before(earliest) {
		return fail(c, "wall clock reads "+now.UTC().Format(time.RFC3339)+", before this build existed",
			"set the clock (timedatectl set-ntp true, or chrony): record times, OIDC expiry and certificates depend on it")
	}
	var tx unix.Timex
	state, err := unix.Adjtimex(&tx)
	if err != nil {
		return warn(c, "adjtimex: "+err.Error(), "")
	}
	if state == unix.TIME_ERROR {
		return warn(c, now.UTC().Format(time.RFC3339)+", not synchronized (adjtimex: TIME_ERROR)",
			"synchronize the clock (timedatectl set-ntp true, or install chrony): record times and OIDC expiry checks depend on it")
	}
	return ok_(c, now.UTC().Format(time.RFC3339)+", synchronized")
}

func ok_(c Check, detail string) Check {
	c.Status, c.Detail = StatusOK, detail
	return c
}

func warn(c Check, detail, fix string) Check {
	c.Status, c.Detail, c.Fix = StatusWarn, detail, fix
	return c
}

func fail(c Check, detail, fix string) Check {
	c.Status, c.Detail, c.Fix = StatusFail, detail, fix
	return c
}

func skip(c Check, detail string) Check {
	c.Status, c.Detail = StatusSkip, detail
	return c
}
