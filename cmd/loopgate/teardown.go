package main

import (
	"context"
	"fmt"
	"net"
	"time"

	"github.com/urfave/cli/v3"

	"github.com/loopgate/loopgate/intercept"
)

func teardownCommand() *cli.Command {
	return &cli.Command{
		Name:  "teardown",
		Usage: "end redirection: detach and unpin the programs, remove empty workload cgroups",
		UsageText: usage("loopgate teardown [--config FILE] [--force]",
			"systemctl stop loopgate && loopgate teardown"),
		Description: `The only way redirection ends. Stop the daemon first: while it runs it holds the
programs attached. With the programs gone, workloads reach targets directly
(and without loopgate's credentials).`,
		Flags: []cli.Flag{
			configFlag,
			&cli.BoolFlag{Name: "force", Usage: "tear down even though a daemon is listening"},
		},
		Action: func(ctx context.Context, c *cli.Command) error {
			cfg, err := loadConfig(c)
			if err != nil {
				return err
			}
			if !c.Bool("force") {
				if conn, err := net.DialTimeout("tcp", cfg.Listen.String(), time.Second); err == nil {
					conn.Close()
					return cli.Exit(fmt.Sprintf("teardown: a daemon is listening on %s; stop it first (or --force)", cfg.Listen), 1)
				}
			}
			cgroups := workloadCgroups(cfg)
			cgroups = append(cgroups, cfg.DaemonCgroup)
			removed, err := intercept.Teardown(cfg.BPFFSDir, cgroups)
			if err != nil {
				return err
			}
			fmt.Printf("unpinned %s\n", cfg.BPFFSDir)
			for _, r := range removed {
				fmt.Printf("removed cgroup %s\n", r)
			}
			return nil
		},
	}
}
