package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/loopgate/loopgate/policy"
)

func policyCommand() *cli.Command {
	return &cli.Command{
		Name:  "policy",
		Usage: "work with config files",
		Subcommands: []*cli.Command{{
			Name:      "check",
			Usage:     "validate a config file; errors name file:line:column",
			ArgsUsage: "[FILE]",
			Flags:     []cli.Flag{configFlag},
			Action: func(c *cli.Context) error {
				path := c.Args().First()
				if path == "" {
					path = c.String("config")
				}
				cfg, err := policy.Load(path)
				if err != nil {
					return cli.Exit(err.Error(), 2)
				}
				fmt.Printf("%s: ok (%d targets, %d workloads)\n", path, len(cfg.Targets), len(cfg.Workloads))
				return nil
			},
		}},
	}
}
