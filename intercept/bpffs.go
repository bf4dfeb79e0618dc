package intercept

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// BPFFSRoot is where bpffs is conventionally mounted.
const BPFFSRoot = "/sys/fs/bpf"

// EnsureBPFFS makes sure a bpf file system is mounted at the mount point
// that holds dir (BPFFSRoot), mounting one if not, and creates dir.
func EnsureBPFFS(dir string) error {
	if _, err := findMount("/proc/mounts", "bpf", BPFFSRoot); err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		if err := os.MkdirAll(BPFFSRoot, 0o755); err != nil {
			return fmt.Errorf("create %s: %w", BPFFSRoot, err)
		}
		if err := unix.Mount("bpf", BPFFSRoot, "bpf", 0, "mode=0700"); err != nil {
			return fmt.Errorf("mount bpffs at %s: %w", BPFFSRoot, err)
		}
	}
	if rel, err := filepath.Rel(BPFFSRoot, dir); err != nil || rel == ".." || filepath.IsAbs(rel) || len(rel) >= 2 && rel[:2] == ".." {
		return fmt.Errorf("pin dir %q is not below %s", dir, BPFFSRoot)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create pin dir %q: %w", dir, err)
	}
	return nil
}
