package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/urfave/cli/v3"

	"github.com/loopgate/loopgate/doctor"
)

// exitBlocked is doctor's exit status when the host cannot run loopgate:
// the documented "denied or failed verification" status, so a script can
// tell a failed check (3) from doctor itself failing (1) or bad usage (2).
const exitBlocked = 3

func doctorCommand() *cli.Command {
	return &cli.Command{
		Name:  "doctor",
		Usage: "check whether this host can run loopgate, and what is weaker here",
		UsageText: usage("loopgate doctor [--config FILE] [--json]",
			"loopgate doctor",
			`loopgate doctor --json | jq '.checks[] | select(.status != "ok")'`),
		Description: `Checks the kernel and its BTF, cgroup v2, bpffs, every eBPF hook loopgate uses
(loading its own programs and attaching each to a scratch cgroup, which it
removes), dev.tty.legacy_tiocsti, unprivileged user namespaces, the config,
the permissions of the store and its keys, the API socket and the clock.

Each line is ✓ (fine), ! (works, but weaker than it could be), ✗ (a blocker)
or - (not checked: it depends on a line that failed), with a fix for each ! and
✗. Run it as root.

Exit status: 0 no blocker (warnings allowed), 3 a blocker, 1 doctor itself
failed, 2 usage.`,
		Flags: []cli.Flag{
			configFlag,
			&cli.BoolFlag{Name: "json", Usage: `print {"ok": BOOL, "checks": [{"name", "status": "ok|warn|fail|skip", "detail", "fix"}]}`},
			// For tests and demos: what a kernel without a hook looks like.
			&cli.StringSliceFlag{Name: "simulate-missing", Hidden: true, Usage: "report `HOOK` (e.g. connect_unix) as absent from the kernel"},
		},
		Action: func(ctx context.Context, c *cli.Command) error {
			missing := map[string]bool{}
			for _, h := range c.StringSlice("simulate-missing") {
				missing[h] = true
			}
			checks := doctor.Run(ctx, doctor.Options{ConfigPath: c.String("config"), Missing: missing})
			if c.Bool("json") {
				if err := printJSON(os.Stdout, struct {
					OK     bool           `json:"ok"`
					Checks []doctor.Check `json:"checks"`
				}{!doctor.Blocked(checks), checks}); err != nil {
					return err
				}
			} else {
				printChecks(os.Stdout, checks)
			}
			if doctor.Blocked(checks) {
				var names []string
				for _, ch := range checks {
					if ch.Status == doctor.StatusFail {
						names = append(names, ch.Name)
					}
				}
				return cli.Exit("doctor: loopgate cannot run here: "+strings.Join(names, ", "), exitBlocked)
			}
			return nil
		},
	}
}

var statusMark = map[doctor.Status]string{
	doctor.StatusOK: "✓", doctor.StatusWarn: "!", doctor.StatusFail: "✗", doctor.StatusSkip: "-",
}

// printChecks prints one aligned line a check, its fix below it.
func printChecks(w io.Writer, checks []doctor.Check) {
	width := 0
	for _, c := range checks {
		width = max(width, len(c.Name))
	}
	pad := strings.Repeat(" ", width+4)
	var fails, warns int
	for _, c := range checks {
		lines := strings.Split(c.Detail, "\n")
		fmt.Fprintf(w, "%s %-*s  %s\n", statusMark[c.Status], width, c.Name, lines[0])
		for _, l := range lines[1:] {
			fmt.Fprintf(w, "%s%s\n", pad, l)
		}
		if c.Fix != "" {
			fmt.Fprintf(w, "%sfix: %s\n", pad, c.Fix)
		}
		switch c.Status {
		case doctor.StatusFail:
			fails++
		case doctor.StatusWarn:
			warns++
		}
	}
	switch {
	case fails > 0:
		fmt.Fprintf(w, "\n%d blocker(s), %d warning(s): loopgate cannot run here until the ✗ lines are fixed\n", fails, warns)
	case warns > 0:
		fmt.Fprintf(w, "\nloopgate can run here; %d warning(s) say what is weaker\n", warns)
	default:
		fmt.Fprintf(w, "\nloopgate can run here\n")
	}
}
