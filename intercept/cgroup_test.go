package intercept_test

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/loopgate/loopgate/intercept"
	"github.com/loopgate/loopgate/tests/lgtest"
)

// TestTeardownRemovesWhatItCreated: teardown removes the workload cgroups
// and parents loopgate created, once empty, whatever their names, and
// never one it found.
func TestTeardownRemovesWhatItCreated(t *testing.T) {
	lgtest.RequireRoot(t)
	mount := lgtest.Cgroup2Mount(t)
	base := lgtest.CgroupName(t)
	// Found: the base, a parent someone else made, a workload cgroup
	// made beforehand (say, a systemd unit's).
	for _, d := range []string{"foreign", "premade"} {
		if err := os.MkdirAll(filepath.Join(mount, base, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	workloads := []string{base + "/lg-sec/deny", base + "/lg-sec/allow", base + "/foreign/w", base + "/premade", base + "/busy/w"}
	for _, w := range workloads {
		if _, _, err := intercept.EnsureCgroup(mount, w); err != nil {
			t.Fatal(err)
		}
	}
	// A cgroup loopgate created that is not empty stays, and so do its
	// parents.
	if err := os.Mkdir(filepath.Join(mount, base, "busy/w/child"), 0o755); err != nil {
		t.Fatal(err)
	}
	removed, err := intercept.Teardown(lgtest.PinDir(t), workloads)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{base + "/lg-sec/deny", base + "/lg-sec/allow", base + "/lg-sec", base + "/foreign/w"}
	if !slices.Equal(removed, want) {
		t.Errorf("removed %q, want %q", removed, want)
	}
	for _, d := range []string{"", "foreign", "premade", "busy/w/child"} {
		if _, err := os.Stat(filepath.Join(mount, base, d)); err != nil {
			t.Errorf("%s/%s: %v", base, d, err)
		}
	}
	for _, d := range []string{"lg-sec", "foreign/w"} {
		if _, err := os.Stat(filepath.Join(mount, base, d)); !os.IsNotExist(err) {
			t.Errorf("%s/%s still there (%v)", base, d, err)
		}
	}
}

// TestTeardownKnowsTheUserMark: a daemon without CAP_SYS_ADMIN (the
// systemd unit's capability set) cannot set the trusted.* mark and marks
// the cgroups it creates with user.loopgate.created instead; teardown
// removes those too.
func TestTeardownKnowsTheUserMark(t *testing.T) {
	lgtest.RequireRoot(t)
	mount := lgtest.Cgroup2Mount(t)
	base := lgtest.CgroupName(t)
	dir := filepath.Join(mount, base, "w")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(dir, "user.loopgate.created", []byte("1"), 0); err != nil {
		t.Fatalf("cgroup2 takes no user.* attribute here: %v", err)
	}
	removed, err := intercept.Teardown(lgtest.PinDir(t), []string{base + "/w"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(removed, []string{base + "/w"}) {
		t.Errorf("removed %q, want the user-marked cgroup", removed)
	}
}

// TestCgroupPathsCache: a cached cgroup path is used while it still names
// the same cgroup; once the cgroup is gone and another takes its name, the
// old id no longer finds that path.
func TestCgroupPathsCache(t *testing.T) {
	lgtest.RequireRoot(t)
	mount := lgtest.Cgroup2Mount(t)
	base := lgtest.CgroupName(t)
	dir, id, err := intercept.EnsureCgroup(mount, base+"/a")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(dir); os.Remove(filepath.Join(mount, base)) })
	roots := []string{filepath.Join(mount, base)}
	for range 2 { // the second from the cache
		if got := intercept.LookupCgroupPath(mount, id, roots); got != base+"/a" {
			t.Fatalf("path %q", got)
		}
	}
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	_, id2, err := intercept.EnsureCgroup(mount, base+"/a")
	if err != nil {
		t.Fatal(err)
	}
	if id2 == id {
		t.Fatal("a new cgroup has the old one's id")
	}
	if got := intercept.LookupCgroupPath(mount, id, roots); got != "" {
		t.Errorf("the removed cgroup's id still names %q", got)
	}
	if got := intercept.LookupCgroupPath(mount, id2, roots); got != base+"/a" {
		t.Errorf("the new cgroup: path %q", got)
	}
}
