package intercept

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// ErrNoCgroup2 is returned when no cgroup2 file system is mounted.
var ErrNoCgroup2 = errors.New("no cgroup2 mount in /proc/mounts")

// Cgroup2Mount returns the mount point of the cgroup2 file system, read from
// /proc/mounts. On hybrid hosts it is /sys/fs/cgroup/unified.
func Cgroup2Mount() (string, error) {
	return findMount("/proc/mounts", "cgroup2", "")
}

// findMount returns the first mount point of fstype in a mounts file, or
// the one equal to want if want is set.
func findMount(mounts, fstype, want string) (string, error) {
	f, err := os.Open(mounts)
	if err != nil {
		return "", fmt.Errorf("read mounts: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 3 || fields[2] != fstype {
			continue
		}
		mp := unescapeMount(fields[1])
		if want == "" || mp == want {
			return mp, nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", fmt.Errorf("read mounts: %w", err)
	}
	if fstype == "cgroup2" {
		return "", ErrNoCgroup2
	}
	return "", fs.ErrNotExist
}

// unescapeMount undoes the octal escapes /proc/mounts uses for spaces etc.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v byte
			ok := true
			for _, c := range s[i+1 : i+4] {
				if c < '0' || c > '7' {
					ok = false
					break
				}
				v = v*8 + byte(c-'0')
			}
			if ok {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// CgroupID returns the id of the cgroup at dir: on cgroup2 it is the
// directory's inode number, the value bpf_get_current_cgroup_id returns.
func CgroupID(dir string) (uint64, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(dir, &st); err != nil {
		return 0, fmt.Errorf("stat cgroup %q: %w", dir, err)
	}
	return st.Ino, nil
}

// createdXattr marks a cgroup directory loopgate created, so Teardown
// removes exactly those and never one it found. The mark lives and dies
// with the directory: nothing to keep in step with the cgroup tree, and a
// directory someone else makes later under the same name is not marked.
// cgroup2 (kernfs) keeps trusted.* attributes; setting one needs
// CAP_SYS_ADMIN, so a workload cannot mark its own cgroups. A daemon
// without CAP_SYS_ADMIN (the systemd unit's capability set) marks with
// userXattr instead (kernel 5.7+): setting it needs write permission on
// the directory, which is root's and not writable by others, so a
// workload cannot set that one either.
const (
	createdXattr = "trusted.loopgate.created"
	userXattr    = "user.loopgate.created"
)

// EnsureCgroup creates the cgroup rel (relative to mount) and its parents,
// owned by root and not writable by others, marks each directory it
// creates as loopgate's, and returns its absolute path and id. A directory
// left unmarked (the mark could not be set) is only ever left behind.
func EnsureCgroup(mount, rel string) (string, uint64, error) {
	clean := filepath.Clean("/" + rel)
	dir := filepath.Join(mount, clean)
	p := mount
	for _, part := range strings.Split(clean, "/") {
		if part == "" {
			continue
		}
		p = filepath.Join(p, part)
		err := os.Mkdir(p, 0o755)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return "", 0, fmt.Errorf("create cgroup %q: %w", dir, err)
		}
		if unix.Setxattr(p, createdXattr, []byte("1"), 0) != nil {
			unix.Setxattr(p, userXattr, []byte("1"), 0)
		}
	}
	id, err := CgroupID(dir)
	return dir, id, err
}

// createdByLoopgate reports whether EnsureCgroup created the cgroup at dir.
func createdByLoopgate(dir string) bool {
	for _, name := range []string{createdXattr, userXattr} {
		if _, err := unix.Getxattr(dir, name, nil); err == nil {
			return true
		}
	}
	return false
}

// CgroupPathOf finds the cgroup with the given id below each of roots
// (absolute paths) and returns its path relative to mount.
func CgroupPathOf(mount string, id uint64, roots ...string) (string, bool) {
	for _, root := range roots {
		var found string
		filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || !d.IsDir() {
				return nil
			}
			if cid, err := CgroupID(p); err == nil && cid == id {
				found = p
				return filepath.SkipAll
			}
			return nil
		})
		if found != "" {
			rel, err := filepath.Rel(mount, found)
			if err == nil {
				return rel, true
			}
		}
	}
	return "", false
}

// JoinCgroup moves the calling process (all its threads) into the cgroup at
// dir.
func JoinCgroup(dir string) error {
	err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(fmt.Sprint(os.Getpid())), 0)
	if err != nil {
		return fmt.Errorf("join cgroup %q: %w", dir, err)
	}
	return nil
}

// RemoveCgroup removes the cgroup at dir if it holds no processes and no
// child cgroups. It reports whether it removed it.
func RemoveCgroup(dir string) (bool, error) {
	err := syscall.Rmdir(dir)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, syscall.ENOENT):
		return false, nil
	case errors.Is(err, syscall.EBUSY), errors.Is(err, syscall.ENOTEMPTY):
		return false, nil
	default:
		return false, fmt.Errorf("remove cgroup %q: %w", dir, err)
	}
}
