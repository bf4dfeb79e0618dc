package main

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"os"

	"github.com/urfave/cli/v3"

	"github.com/loopgate/loopgate/store"
)

func auditCommand() *cli.Command {
	return &cli.Command{
		Name:  "audit",
		Usage: "check the integrity of the session log",
		Commands: []*cli.Command{{
			Name:  "verify",
			Usage: "verify the hash chain, signed checkpoints and session rows",
			Description: `Reports OK, or the first broken event and why: edited, deleted, reordered,
checkpoint (a deleted tail, a forged or missing checkpoint) or session (a
sessions row that differs from what its events recorded). Exit status 1 when
something is wrong.`,
			Flags: []cli.Flag{
				configFlag,
				&cli.StringFlag{Name: "db", Usage: "store `FILE` (default: the config's store)"},
				&cli.StringFlag{Name: "key", Usage: "checkpoint key `FILE` (default: the config's audit_key); its public half is the trust anchor"},
				&cli.BoolFlag{Name: "json", Usage: "print the report as JSON"},
			},
			Action: func(ctx context.Context, c *cli.Command) error {
				keyPath := c.String("key")
				if keyPath == "" && c.String("db") == "" {
					cfg, err := loadConfig(c)
					if err != nil {
						return err
					}
					keyPath = cfg.AuditKey
				}
				db, err := openStore(ctx, c)
				if err != nil {
					return err
				}
				defer db.Close()
				var pub ed25519.PublicKey
				if keyPath != "" {
					if pub, err = store.PublicKey(keyPath); err != nil {
						return cli.Exit(fmt.Sprintf("audit verify: %v", err), 2)
					}
				} else {
					fmt.Fprintln(os.Stderr, "warning: no --key: checking checkpoints against the key recorded in the store itself")
				}
				rep, err := db.Verify(ctx, pub)
				if err != nil {
					return err
				}
				if c.Bool("json") {
					json.NewEncoder(os.Stdout).Encode(rep)
				} else if rep.Problem == nil {
					fmt.Printf("OK: %d events, %d sessions, %d signed checkpoints\n", rep.Events, rep.Sessions, rep.Checkpoints)
				} else {
					fmt.Printf("BROKEN: %v\n(%d events verified before it)\n", rep.Problem, rep.Events)
				}
				if rep.Problem != nil {
					return cli.Exit("", 1)
				}
				return nil
			},
		}},
	}
}
