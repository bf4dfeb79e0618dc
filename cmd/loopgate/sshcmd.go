package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v3"

	l7ssh "github.com/loopgate/loopgate/l7/ssh"
	"github.com/loopgate/loopgate/l7/ssh/cast"
	"github.com/loopgate/loopgate/policy"
	"github.com/loopgate/loopgate/store/event"
)

// sshCommand prints what hosts and targets install to trust loopgate's
// SSH CAs (created beside the store on first use).
func sshCommand() *cli.Command {
	return &cli.Command{
		Name:  "ssh",
		Usage: "the lines agents' hosts and ssh targets install to trust loopgate",
		Commands: []*cli.Command{
			{
				Name:  "known-hosts",
				Usage: "print the @cert-authority line for /etc/ssh/ssh_known_hosts on agent hosts",
				UsageText: usage("loopgate ssh known-hosts",
					"loopgate ssh known-hosts >> /etc/ssh/ssh_known_hosts"),
				Description: `Agents' ssh checks the host key of the target it dialled; loopgate answers
with a host certificate from its host CA. Add this one line to
/etc/ssh/ssh_known_hosts on the agents' host: it trusts the CA only for the
configured ssh targets' addresses, so StrictHostKeyChecking=yes connects
without prompts.`,
				Flags:  []cli.Flag{configFlag},
				Action: printKnownHosts,
			},
			{
				Name:  "user-ca",
				Usage: "print the user CA public key for sshd's TrustedUserCAKeys on targets",
				UsageText: usage("loopgate ssh user-ca",
					"loopgate ssh user-ca | ssh root@db1 'cat > /etc/ssh/loopgate_user_ca.pub'"),
				Description: `Targets with credentials: {ssh_ca: true} accept a per-session certificate
loopgate mints for credentials.user. Put this line in the file sshd's
TrustedUserCAKeys names (e.g. /etc/ssh/loopgate_user_ca.pub).`,
				Flags:  []cli.Flag{configFlag},
				Action: printUserCA,
			},
		},
	}
}

func sshCA(c *cli.Command, file string) (*l7ssh.CA, *policy.Config, error) {
	cfg, err := loadConfig(c)
	if err != nil {
		return nil, nil, err
	}
	ca, err := l7ssh.LoadOrCreateCA(filepath.Join(filepath.Dir(cfg.Store), file))
	if err != nil {
		return nil, nil, cli.Exit(err.Error(), exitError)
	}
	return ca, cfg, nil
}

func printKnownHosts(ctx context.Context, c *cli.Command) error {
	ca, cfg, err := sshCA(c, l7ssh.HostCAFile)
	if err != nil {
		return err
	}
	var patterns []string
	for _, t := range cfg.Targets {
		if t.Protocol == policy.ProtocolSSH {
			patterns = append(patterns, l7ssh.KnownHostsPatterns(t.Addresses)...)
		}
	}
	if len(patterns) == 0 {
		return cli.Exit("no ssh targets in the config", exitError)
	}
	fmt.Println(ca.KnownHostsLine(patterns))
	return nil
}

func printUserCA(ctx context.Context, c *cli.Command) error {
	ca, _, err := sshCA(c, l7ssh.UserCAFile)
	if err != nil {
		return err
	}
	fmt.Println(ca.AuthorizedKey())
	return nil
}

// replayCommand is `loopgate sessions replay ID`.
func replayCommand(flags []cli.Flag) *cli.Command {
	return &cli.Command{
		Name:      "replay",
		Usage:     "play a session's terminal (an SSH pty) as recorded",
		ArgsUsage: "ID",
		UsageText: usage("loopgate sessions replay [--speed X] [--cast N] ID",
			"loopgate sessions replay 0194c5e1a2b3c4d5e6f7a8b9",
			"loopgate sessions replay --speed 4 --idle 1s 0194c5e1a2b3c4d5e6f7a8b9"),
		Flags: append(flags,
			&cli.IntFlag{Name: "cast", Value: 1, Usage: "which terminal of the session (1 is the first)"},
			&cli.FloatFlag{Name: "speed", Value: 1, Usage: "playback speed; 0 plays without waiting"},
			&cli.DurationFlag{Name: "idle", Value: 2 * time.Second, Usage: "longest pause played"}),
		Action: replaySession,
	}
}

// sessionCast returns the asciicast v2 text of a session's n-th terminal.
func sessionCast(ctx context.Context, c *cli.Command, n int) (string, error) {
	if c.NArg() != 1 {
		return "", usagef(c, "want exactly one session ID")
	}
	db, err := openStore(ctx, c)
	if err != nil {
		return "", err
	}
	defer db.Close()
	evs, err := db.SessionEvents(ctx, c.Args().First())
	if err != nil {
		return "", cli.Exit(err.Error(), exitError)
	}
	name := fmt.Sprintf("cast %d", n)
	var b strings.Builder
	for _, e := range evs {
		if e.Kind == string(event.KindCast) && e.Text == name {
			b.WriteString(e.Params)
		}
	}
	if b.Len() == 0 {
		return "", cli.Exit(fmt.Sprintf("session %s has no terminal recording %d", c.Args().First(), n), exitError)
	}
	return b.String(), nil
}

// exportCast writes a session's terminal as a .cast file (asciicast v2).
func exportCast(ctx context.Context, c *cli.Command) error {
	text, err := sessionCast(ctx, c, 1)
	if err != nil {
		return err
	}
	_, err = io.WriteString(os.Stdout, text)
	return err
}

func replaySession(ctx context.Context, c *cli.Command) error {
	text, err := sessionCast(ctx, c, int(c.Int("cast")))
	if err != nil {
		return err
	}
	return play(ctx, os.Stdout, text, c.Float("speed"), c.Duration("idle"))
}

// play writes a cast's output to w at its pace (speed 0: at once), with
// resizes as the xterm sequence that asks the terminal for that size.
func play(ctx context.Context, w io.Writer, text string, speed float64, idle time.Duration) error {
	r, err := cast.NewReader(strings.NewReader(text))
	if err != nil {
		return cli.Exit(err.Error(), exitError)
	}
	o := cast.PlayOptions{Speed: speed, MaxIdle: idle, Resize: true}
	if speed == 0 {
		o.Sleep = func(ctx context.Context, _ time.Duration) error { return ctx.Err() }
	}
	if err := cast.Play(ctx, w, r, o); err != nil {
		return cli.Exit(err.Error(), exitError)
	}
	return nil
}
