package doctor

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestKernelVersion(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, rel    string
		major, minor int
		ok           bool
	}{
		{"debian", "6.1.0-18-amd64", 6, 1, true},
		{"firecracker", "6.18.44-fc-v669", 6, 18, true},
		{"suffix on minor", "5.15+", 5, 15, true},
		{"garbage", "linux", 0, 0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			major, minor, ok := kernelVersion(tc.rel)
			if major != tc.major || minor != tc.minor || ok != tc.ok {
				t.Errorf("kernelVersion(%q) = %d, %d, %v", tc.rel, major, minor, ok)
			}
		})
	}
}

func TestUnescape(t *testing.T) {
	t.Parallel()
	if got := unescape(`/mnt/my\040bpf`); got != "/mnt/my bpf" {
		t.Errorf("unescape = %q", got)
	}
}

func TestPrivateFile(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("ownership checks expect root's files")
	}
	dir := t.TempDir()
	for _, tc := range []struct {
		name string
		mode os.FileMode
		want Status
	}{
		{"0600", 0o600, StatusOK},
		{"0400", 0o400, StatusOK},
		{"0640", 0o640, StatusFail},
		{"0644", 0o644, StatusFail},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(dir, tc.name)
			os.WriteFile(p, nil, tc.mode)
			os.Chmod(p, tc.mode)
			if c := privateFile(Check{}, p, ""); c.Status != tc.want || (c.Status == StatusFail && c.Fix == "") {
				t.Errorf("%v: %+v", tc.mode, c)
			}
		})
	}
	if c := privateFile(Check{}, filepath.Join(dir, "absent"), "later"); c.Status != StatusOK {
		t.Errorf("absent file: %+v", c)
	}
}

func TestClock(t *testing.T) {
	t.Parallel()
	if c := checkClock(time.Date(2001, 1, 1, 0, 0, 0, 0, time.UTC)); c.Status != StatusFail {
		t.Errorf("a clock in 2001: %+v", c)
	}
	if c := checkClock(time.Now()); c.Status == StatusFail {
		t.Errorf("now: %+v", c)
	}
}
