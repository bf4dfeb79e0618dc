package intercept

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// clockTicks is USER_HZ, the unit of /proc/PID/stat's start time. It is 100
// on every Linux architecture loopgate runs on.
const clockTicks = 100

// ErrProcessGone is returned when the process that connected has exited
// (or its PID now names another process).
var ErrProcessGone = errors.New("process gone")

// Process is a process named by PID and start time, with facts read from
// /proc.
type Process struct {
	PID int
	// Start is the wall-clock start time.
	Start time.Time
	// Exe is /proc/PID/exe.
	Exe string
}

// ReadProcess reads /proc facts for pid and checks that it is the process
// the kernel saw: bootNS is its start time in ns since boot (the kernel's
// task start_boottime). With bootNS 0 the check is skipped.
func ReadProcess(pid int, bootNS uint64) (Process, error) {
	p := Process{PID: pid}
	ticks, err := startTicks(pid)
	if err != nil {
		return p, err
	}
	if bootNS != 0 && ticks != bootNS/(1e9/clockTicks) {
		return p, fmt.Errorf("pid %d: %w (start time differs)", pid, ErrProcessGone)
	}
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil {
		return p, fmt.Errorf("pid %d exe: %w", pid, err)
	}
	// Re-check: the PID must not have been reused while we read exe.
	if again, err := startTicks(pid); err != nil || again != ticks {
		return p, fmt.Errorf("pid %d: %w (changed while read)", pid, ErrProcessGone)
	}
	p.Exe = exe
	ns := bootNS
	if ns == 0 {
		ns = ticks * (1e9 / clockTicks)
	}
	p.Start = bootToWall(ns)
	return p, nil
}

// startTicks returns field 22 of /proc/PID/stat: start time in clock ticks
// since boot.
func startTicks(pid int) (uint64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return 0, fmt.Errorf("pid %d: %w", pid, ErrProcessGone)
		}
		return 0, fmt.Errorf("read /proc/%d/stat: %w", pid, err)
	}
	// comm (field 2) may hold spaces and parentheses: fields after it start
	// after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("parse /proc/%d/stat: no comm", pid)
	}
	fields := bytes.Fields(b[i+1:])
	const startField = 22 - 3 // fields[0] is field 3 (state)
	if len(fields) <= startField {
		return 0, fmt.Errorf("parse /proc/%d/stat: %d fields", pid, len(fields))
	}
	return strconv.ParseUint(string(fields[startField]), 10, 64)
}

// bootToWall converts ns since boot (CLOCK_BOOTTIME) to wall-clock time.
func bootToWall(ns uint64) time.Time {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return time.Time{}
	}
	now := time.Now()
	return now.Add(-time.Duration(uint64(ts.Nano()) - ns))
}

// monotonicNS is CLOCK_MONOTONIC now, the clock of bpf_ktime_get_ns.
func monotonicNS() uint64 {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return uint64(ts.Nano())
}
