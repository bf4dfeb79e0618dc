package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"

	"github.com/urfave/cli/v3"

	"github.com/loopgate/loopgate/intercept"
)

func runCommand() *cli.Command {
	return &cli.Command{
		Name:      "run",
		Usage:     "run a command, unmodified, inside a workload cgroup",
		ArgsUsage: "-- CMD [ARGS...]",
		UsageText: usage("loopgate run --workload NAME [--user USER] -- CMD [ARGS...]",
			"loopgate run --workload ci-bot --user ci -- ./agent.sh",
			"loopgate run -w ci-bot -u nobody -- psql -h db.internal -c 'SELECT 1'"),
		Description: `Starts CMD directly inside the workload's cgroup (clone3 CLONE_INTO_CGROUP, so
no socket predates the move), passes stdio, signals and the exit status through.
Refuses to start anything unless the daemon has the workload's redirect attached.

CMD runs in a session of its own and never gets the operator's terminal: when
stdin, stdout or stderr is a terminal, CMD gets a new pty in its place (its
controlling terminal when stdin is one) and loopgate relays keys, output and window size, with
the operator's terminal in raw mode until CMD exits. So CMD cannot type into
the operator's shell (TIOCSTI). ^C and ^Z act on CMD through its pty.

Use --user to drop to an unprivileged user: a root process could leave its
cgroup or open raw sockets.

Exit status: CMD's own once it started; 3 when the workload is not enforced
(the daemon is not running), 2 for a bad flag, 126/127 when CMD cannot start.`,
		Flags: []cli.Flag{
			configFlag,
			&cli.StringFlag{Name: "workload", Aliases: []string{"w"}, Usage: "workload `NAME` from the config", Required: true},
			&cli.StringFlag{Name: "user", Aliases: []string{"u"}, Usage: "run as `USER` (name or uid)"},
		},
		// CMD's own flags are CMD's: flags are read only before it.
		StopOnNthArg: new(1),
		Action:       runWorkload,
	}
}

func runWorkload(ctx context.Context, c *cli.Command) error {
	if c.NArg() == 0 {
		return usagef(c, "no command given (loopgate run --workload NAME -- CMD [ARGS])")
	}
	cfg, err := loadConfig(c)
	if err != nil {
		return err
	}
	w, ok := cfg.WorkloadByName(c.String("workload"))
	if !ok {
		return usagef(c, "--workload: no workload %q in %s", c.String("workload"), cfg.Path)
	}
	mount, err := intercept.Cgroup2Mount()
	if err != nil {
		return err
	}
	dir := filepath.Join(mount, w.Cgroup)
	if err := intercept.Enforced(cfg.BPFFSDir, dir); err != nil {
		return cli.Exit(fmt.Sprintf("run: workload %q is not enforced (start the daemon first): %v", w.Name, err), exitDenied)
	}
	args := c.Args().Slice()
	path, err := exec.LookPath(args[0])
	if err != nil {
		return cli.Exit(fmt.Sprintf("run: %v", err), 127)
	}
	cmd := exec.Command(path, args[1:]...)
	cmd.Args[0] = args[0]
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if name := c.String("user"); name != "" {
		if err := dropTo(cmd, name); err != nil {
			return cli.Exit(fmt.Sprintf("run: --user: %v", err), exitUsage)
		}
	}
	cleanTrust, err := agentTrust(cmd, cfg) // runtrust.go: CA bundle, placeholders
	if err != nil {
		return cli.Exit(fmt.Sprintf("run: %v", err), 2)
	}
	defer cleanTrust()

	// The agent always runs in a session of its own, so the operator's
	// terminal is never its controlling terminal; if stdio has a terminal,
	// the agent gets a pty of its own instead (see agentPTY).
	tty, err := attachPTY(cmd)
	if err != nil {
		return cli.Exit(fmt.Sprintf("run: %v", err), 126)
	}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setsid = true

	// Catch signals before the child exists so none is lost, then pass them
	// on. Nothing reaches the agent's session from the operator's terminal
	// (keys go through its pty), so every one caught is forwarded; SIGWINCH
	// resizes the agent's pty, whose kernel side signals the agent. ^Z stops
	// nothing: the agent, a session leader whose parent is in another
	// session, is an orphaned process group, and the kernel drops terminal
	// stop signals to those (a job-control shell run as CMD uses ^Z itself).
	sigs := make(chan os.Signal, 16)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT,
		syscall.SIGUSR1, syscall.SIGUSR2, syscall.SIGWINCH, syscall.SIGCONT)
	defer signal.Stop(sigs)
	if tty != nil {
		// Raw before the agent starts: no key typed from now on is taken
		// by the operator's terminal.
		if err := tty.makeRaw(); err != nil {
			tty.close()
			return cli.Exit(fmt.Sprintf("run: %v", err), 126)
		}
	}
	if err := intercept.StartIn(cmd, dir); err != nil {
		if tty != nil {
			tty.close()
		}
		return cli.Exit(err.Error(), 126)
	}
	if tty != nil {
		defer tty.restore() // also on a panic below
		if err := tty.started(); err != nil {
			cmd.Process.Kill()
		}
	}
	done := make(chan struct{})
	var fwd sync.WaitGroup
	fwd.Go(func() {
		for {
			select {
			case s := <-sigs:
				switch {
				case s == syscall.SIGWINCH && tty != nil:
					// A controlling pty signals the agent itself.
					tty.resize()
					if !tty.hasCtty() {
						cmd.Process.Signal(s)
					}
				default:
					cmd.Process.Signal(s)
				}
			case <-done:
				return
			}
		}
	})
	err = cmd.Wait()
	close(done)
	fwd.Wait()
	if tty != nil {
		tty.finish()
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return cli.Exit("", 128+int(ws.Signal()))
		}
		return cli.Exit("", ee.ExitCode())
	}
	return err
}

// dropTo makes cmd run as the named user (or numeric uid) with its groups.
func dropTo(cmd *exec.Cmd, name string) error {
	u, err := user.Lookup(name)
	if err != nil {
		if _, nerr := strconv.Atoi(name); nerr != nil {
			return err
		}
		if u, err = user.LookupId(name); err != nil {
			u = &user.User{Uid: name, Gid: name, Username: name, HomeDir: "/"}
		}
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return fmt.Errorf("uid %q: %w", u.Uid, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return fmt.Errorf("gid %q: %w", u.Gid, err)
	}
	var groups []uint32
	if ids, err := u.GroupIds(); err == nil {
		for _, g := range ids {
			if n, err := strconv.ParseUint(g, 10, 32); err == nil {
				groups = append(groups, uint32(n))
			}
		}
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: groups}}
	cmd.Env = append(os.Environ(), "USER="+u.Username, "LOGNAME="+u.Username, "HOME="+u.HomeDir)
	return nil
}
