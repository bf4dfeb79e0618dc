package intercept

import (
	"fmt"
	"os"
	"os/exec"
	"syscall"
)

// StartIn starts cmd directly inside the cgroup at dir: clone3 with
// CLONE_INTO_CGROUP (SysProcAttr.UseCgroupFD), so the child never runs, and
// never opens a socket, outside it.
func StartIn(cmd *exec.Cmd, dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open cgroup %q: %w", dir, err)
	}
	defer f.Close()
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.UseCgroupFD = true
	cmd.SysProcAttr.CgroupFD = int(f.Fd())
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s in %s: %w", cmd.Path, dir, err)
	}
	return nil
}
