package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/urfave/cli/v3"
)

// Exit statuses, the same for every command (documented in --help and the
// README). `run` passes its command's own status through instead, once it
// has started it.
const (
	exitOK     = 0
	exitError  = 1 // the command failed (daemon unreachable, store unreadable, ...)
	exitUsage  = 2 // bad flags or arguments, or a config file that does not load
	exitDenied = 3 // refused: a policy or approver denied, or verification failed
)

// exitCodesHelp is the EXIT STATUS section of the root command's help.
const exitCodesHelp = `Exit status:
  0  ok
  1  error (daemon unreachable, store unreadable, ...)
  2  usage: a bad flag or argument, or a config file that does not load
  3  denied or failed verification: audit verify found tampering, policy
     explain decided deny, the API refused the caller, run refused an
     unenforced workload`

// usageError makes any flag or argument error exit with exitUsage, naming
// the command so the user knows which --help to read.
func usageError(_ context.Context, c *cli.Command, err error, _ bool) error {
	return usagef(c, "%v", err)
}

// usagef is a usage error of c's own (a missing or extra argument), as
// "approvals approve: want one approval ID (see 'loopgate approvals approve --help')".
func usagef(c *cli.Command, format string, args ...any) error {
	msg := fmt.Sprintf(format, args...)
	if c.Root() != c {
		msg = strings.TrimPrefix(c.FullName(), c.Root().Name+" ") + ": " + msg
	}
	return cli.Exit(fmt.Sprintf("%s (see '%s --help')", msg, c.FullName()), exitUsage)
}

// groupAction runs for a command that only groups others (`loopgate
// sessions`): help when called alone, a usage error for an unknown word.
func groupAction(_ context.Context, c *cli.Command) error {
	if c.NArg() > 0 {
		return usagef(c, "unknown command %q", c.Args().First())
	}
	if c.Root() == c {
		return cli.ShowRootCommandHelp(c)
	}
	return cli.ShowSubcommandHelp(c)
}

// applyConventions gives every command in the tree the shared behaviour:
// usage errors exit 2, group commands reject unknown words.
func applyConventions(c *cli.Command) {
	c.OnUsageError = usageError
	if len(c.Commands) > 0 && c.Action == nil {
		c.Action = groupAction
	}
	for _, sub := range c.Commands {
		applyConventions(sub)
	}
}

// configureCompletion shows `loopgate completion bash|zsh|fish` in help
// (urfave/cli hides it by default) with the same conventions.
func configureCompletion(c *cli.Command) {
	c.Hidden = false
	c.Usage = "print a shell completion script: bash, zsh or fish"
	c.UsageText = `loopgate completion bash > /etc/bash_completion.d/loopgate
loopgate completion zsh > "${fpath[1]}/_loopgate"
loopgate completion fish > ~/.config/fish/completions/loopgate.fish`
	applyConventions(c)
}

// jsonFlag is --json for list and show commands.
func jsonFlag() cli.Flag {
	return &cli.BoolFlag{Name: "json", Usage: "print JSON (lists: one object a line) with stable field names"}
}

// printJSON writes v as one line of JSON to w.
func printJSON(w io.Writer, v any) error {
	return json.NewEncoder(w).Encode(v)
}

// usage is a command's UsageText: its synopsis, then examples.
func usage(synopsis string, examples ...string) string {
	s := synopsis + "\n\nExamples:"
	for _, e := range examples {
		s += "\n  " + e
	}
	return s
}
