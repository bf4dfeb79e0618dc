// Command loopgate is the loopgate daemon and its command-line tools. main
// only wires packages together: policy (config), intercept (kernel), l7
// (sessions), store (records).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/urfave/cli/v3"

	"github.com/loopgate/loopgate/policy"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	os.Exit(run(context.Background(), os.Args, os.Stderr))
}

// run runs the CLI with args and returns the exit status, after printing
// any error to stderr.
func run(ctx context.Context, args []string, stderr io.Writer) int {
	err := newApp().Run(ctx, args)
	if err == nil {
		return 0
	}
	var ec cli.ExitCoder
	if errors.As(err, &ec) {
		if msg := err.Error(); msg != "" {
			fmt.Fprintln(stderr, "loopgate:", msg)
		}
		return ec.ExitCode()
	}
	fmt.Fprintln(stderr, "loopgate:", err)
	return 1
}

var configFlag = &cli.StringFlag{
	Name:    "config",
	Aliases: []string{"c"},
	Usage:   "config `FILE`",
	Value:   policy.DefaultConfigPath,
	Sources: cli.EnvVars("LOOPGATE_CONFIG"),
}

var logLevelFlag = &cli.StringFlag{
	Name:  "log-level",
	Usage: "debug, info, warn or error",
	Value: "info",
}

var logFormatFlag = &cli.StringFlag{
	Name:  "log-format",
	Usage: "text or json",
	Value: "text",
}

func newApp() *cli.Command {
	app := &cli.Command{
		Name:    "loopgate",
		Usage:   "privileged-access gateway for unmodified agent loops, enforced in the kernel",
		Version: version,
		Description: `loopgate redirects a workload's connections to protected targets into a local
proxy (eBPF on the workload's cgroup), identifies the process from kernel facts,
relays to the real target and records every session in SQLite.

Start the daemon, then run agents inside a workload:
  loopgate daemon --config /etc/loopgate/loopgate.yaml
  loopgate run --workload ci-bot -- ./agent.sh
  loopgate sessions list

Flags go before or after arguments. Every list and show command takes --json
(field names are stable). Shell completion: loopgate completion bash|zsh|fish.

` + exitCodesHelp,
		Flags:                           []cli.Flag{configFlag},
		EnableShellCompletion:           true,
		ConfigureShellCompletionCommand: configureCompletion,
		// main prints the error and picks the exit status, never the library.
		ExitErrHandler: func(context.Context, *cli.Command, error) {},
		Commands: []*cli.Command{
			daemonCommand(),
			runCommand(),
			sessionsCommand(),
			teardownCommand(),
			policyCommand(),
			auditCommand(),
			approvalsCommand(),
			masksCommand(),
			doctorCommand(),
			storeCommand(),
			sshCommand(),
		},
	}
	applyConventions(app)
	return app
}

func newLogger(c *cli.Command) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.String("log-level"))); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch strings.ToLower(c.String("log-format")) {
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	case "text", "":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	default:
		return nil, fmt.Errorf("--log-format: want text or json, got %q", c.String("log-format"))
	}
}

func loadConfig(c *cli.Command) (*policy.Config, error) {
	cfg, err := policy.Load(c.String("config"))
	if err != nil {
		return nil, cli.Exit(err.Error(), exitUsage)
	}
	return cfg, nil
}
