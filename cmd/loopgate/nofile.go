package main

import (
	"log/slog"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

const (
	// fdsPerSession is what one session may hold: the agent's socket, the
	// target's, and a pooled or side connection (PostgreSQL).
	fdsPerSession = 3
	// fdReserve is kept for everything else: the store, listeners, the
	// API, BPF objects, /proc reads.
	fdReserve = 1024
)

// raiseNoFile makes room in RLIMIT_NOFILE for maxSessions sessions and
// returns how many sessions the limit in force allows. Go already raises
// the soft limit to the hard one at start (since Go 1.19); the daemon,
// holding CAP_SYS_RESOURCE as root, also raises the hard limit when the
// budget needs more, up to fs.nr_open, rather than to nr_open outright:
// the limit then says what the daemon is meant to use.
func raiseNoFile(log *slog.Logger, maxSessions int) int {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		log.Warn("file descriptor limit unknown", "err", err)
		return 0
	}
	before := lim
	want := uint64(maxSessions*fdsPerSession + fdReserve)
	if lim.Cur < want {
		if nrOpen := sysctlUint("/proc/sys/fs/nr_open"); nrOpen > 0 && want > nrOpen {
			want = nrOpen
		}
		next := unix.Rlimit{Cur: want, Max: max(lim.Max, want)}
		if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &next); err != nil {
			// No CAP_SYS_RESOURCE: the soft limit up to the hard one.
			next = unix.Rlimit{Cur: min(want, lim.Max), Max: lim.Max}
			unix.Setrlimit(unix.RLIMIT_NOFILE, &next)
		}
		unix.Getrlimit(unix.RLIMIT_NOFILE, &lim)
	}
	fit := max(0, (int(lim.Cur)-fdReserve)/fdsPerSession)
	log.Info("file descriptor limit", "soft", lim.Cur, "hard", lim.Max, "was_soft", before.Cur, "was_hard", before.Max,
		"sessions_it_allows", fit, "max_sessions", maxSessions)
	if fit < maxSessions {
		log.Warn("the file descriptor limit allows fewer sessions than limits: max_sessions; refusing past it", "sessions", fit)
	}
	return fit
}

func sysctlUint(path string) uint64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	n, _ := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64)
	return n
}
