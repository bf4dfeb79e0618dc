package main

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/urfave/cli/v3"

	"github.com/loopgate/loopgate/policy"
	"github.com/loopgate/loopgate/policy/sqlpolicy"
)

func policyCommand() *cli.Command {
	return &cli.Command{
		Name:  "policy",
		Usage: "work with config files",
		UsageText: usage("loopgate policy check|explain [options]",
			"loopgate policy check /etc/loopgate/loopgate.yaml",
			"loopgate policy explain --workload ci-bot --target appdb \"DELETE FROM jobs\""),
		Commands: []*cli.Command{explainCommand(), {
			Name:      "check",
			Usage:     "validate a config file; errors name file:line:column",
			ArgsUsage: "[FILE]",
			UsageText: usage("loopgate policy check [FILE]",
				"loopgate policy check",
				"loopgate policy check ./loopgate.yaml && sudo systemctl reload loopgate"),
			Flags: []cli.Flag{configFlag},
			Action: func(ctx context.Context, c *cli.Command) error {
				path := c.Args().First()
				if path == "" {
					path = c.String("config")
				}
				cfg, err := policy.Load(path)
				if err != nil {
					return cli.Exit(err.Error(), exitUsage)
				}
				fmt.Printf("%s: ok (%d targets, %d workloads)\n", path, len(cfg.Targets), len(cfg.Workloads))
				return nil
			},
		}},
	}
}

func explainCommand() *cli.Command {
	return &cli.Command{
		Name:      "explain",
		Usage:     "print the decision for a command and the rule that made it",
		ArgsUsage: "[COMMAND]",
		UsageText: usage("loopgate policy explain --workload NAME --target NAME [--class CLASS]... [COMMAND]",
			"loopgate policy explain --workload ci-bot --target appdb \"SELECT * FROM users\"",
			"loopgate policy explain --workload ci-bot --target build-host --class connect"),
		Description: `Decides as the daemon would for a process of --workload talking to --target.
The command is sorted into classes by the target protocol's classifier (tcp:
every session is "connect"; postgres: COMMAND is SQL, sent as a simple query,
and the rule's column masks are checked as the proxy checks them; ssh: COMMAND
is an exec command line, parsed as bash, and the rule's command patterns are
applied before its classes); --class
gives classes directly. --token-file
verifies an OIDC token as if the workload had presented it (this contacts the
issuer).

Exit status 0 for allow or approve, 3 for deny.`,
		Flags: []cli.Flag{
			configFlag,
			&cli.StringFlag{Name: "workload", Required: true, Usage: "workload `NAME`"},
			&cli.StringFlag{Name: "target", Required: true, Usage: "target `NAME`"},
			&cli.StringFlag{Name: "token-file", Usage: "OIDC token `FILE` the workload would present"},
			&cli.StringSliceFlag{Name: "class", Usage: "command class (repeatable) instead of classifying COMMAND"},
		},
		Action: func(ctx context.Context, c *cli.Command) error {
			cfg, err := loadConfig(c)
			if err != nil {
				return err
			}
			t, ok := cfg.TargetByName(c.String("target"))
			if !ok {
				return usagef(c, "--target: no target %q in %s", c.String("target"), cfg.Path)
			}
			if _, ok := cfg.WorkloadByName(c.String("workload")); !ok {
				return usagef(c, "--workload: no workload %q in %s", c.String("workload"), cfg.Path)
			}
			sub := &policy.Subject{Workload: c.String("workload"), Target: t}
			if f := c.String("token-file"); f != "" {
				raw, err := os.ReadFile(f)
				if err != nil {
					return cli.Exit(fmt.Sprintf("--token-file: %v", err), exitUsage)
				}
				v := policy.NewVerifier(cfg.OIDC, nil)
				if err := cfg.Authenticate(ctx, v, sub, strings.TrimSpace(string(raw))); err != nil {
					fmt.Printf("decision: deny\nreason:   token refused: %v\n", err)
					return cli.Exit("", exitDenied)
				}
				fmt.Printf("token:    verified, sub %q, groups %v\n", sub.Claims.Subject, sub.Claims.Groups)
			}
			classes := c.StringSlice("class")
			var d policy.Decision
			// Columns the daemon's detectors learned are column masks of
			// their rule, as in the daemon.
			var learned map[string][]string
			learnedOf := func(rule string) map[string][]string {
				if learned == nil {
					learned = explainLearned(ctx, cfg.Store).Columns(rule)
				}
				return learned
			}
			switch {
			case len(classes) > 0:
				d = cfg.Decide(sub, classes)
			case t.Protocol == policy.ProtocolTCP:
				classes = []string{"connect"}
				d = cfg.Decide(sub, classes)
			case t.Protocol == policy.ProtocolPostgres:
				if c.NArg() != 1 {
					return usagef(c, "give the SQL as one argument (or --class)")
				}
				ex, err := sqlpolicy.Explain(cfg, sub, c.Args().First(), learnedOf)
				if err != nil {
					return err
				}
				if ex.Parsed.Err != nil {
					fmt.Printf("parse:    %v\n", ex.Parsed.Err)
				}
				classes, d = ex.Parsed.Classes, ex.Decision
			case t.Protocol == policy.ProtocolSSH:
				if c.NArg() != 1 {
					return cli.Exit("explain: give the command as one argument (or --class)", 2)
				}
				classes, d = explainShell(cfg, sub, c.Args().First())
			default:
				return usagef(c, "this build has no %s classifier yet; pass --class", t.Protocol)
			}
			if len(d.Masks) > 0 {
				learnedOf(d.RuleID)
			}
			rule := d.RuleID
			if rule == "" {
				rule = "(none: default deny)"
			}
			fmt.Printf("decision: %s\nrule:     %s\nclasses:  %s\nreason:   %s\n", d.Action, rule, strings.Join(classes, ", "), d.Reason)
			if len(d.Masks) > 0 {
				fmt.Printf("masks:    %s\n", strings.Join(d.Masks, ", "))
				for _, name := range d.Masks {
					if cols := learned[name]; len(cols) > 0 {
						fmt.Printf("learned:  %s masks %s (a detector fired on them; loopgate masks learned)\n", name, strings.Join(cols, ", "))
					}
				}
			}
			if d.Action == policy.Approve {
				fmt.Printf("approvers: %s (%d required)\n", strings.Join(d.Approvers, ", "), d.ApprovalsRequired)
			}
			if d.Action == policy.Deny {
				return cli.Exit("", exitDenied)
			}
			return nil
		},
	}
}
