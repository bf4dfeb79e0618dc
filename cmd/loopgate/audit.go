package main

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"os"

	"github.com/urfave/cli/v3"

	"github.com/loopgate/loopgate/store"
)

func auditCommand() *cli.Command {
	return &cli.Command{
		Name:      "audit",
		Usage:     "check the integrity of the session log",
		UsageText: usage("loopgate audit verify [options]", "loopgate audit verify", "loopgate audit verify --db /backup/loopgate.db --key /etc/loopgate/audit.key"),
		Commands: []*cli.Command{{
			Name:  "verify",
			Usage: "verify the hash chain, signed checkpoints and session rows",
			UsageText: usage("loopgate audit verify [--db FILE] [--key FILE] [--json]",
				"loopgate audit verify",
				"loopgate audit verify --db /var/backups/loopgate.db --key /etc/loopgate/audit.key",
				"loopgate audit verify --json | jq .problem"),
			Description: `Reports OK, or the first broken event and why: edited, deleted, reordered,
checkpoint (a deleted tail, a forged or missing checkpoint), session (a
sessions row that differs from what its events recorded) or pruned (a forged
prune mark). A store pruned by 'loopgate store prune' is checked from its
signed prune mark on. Exit status 3 when something is wrong.

On a terminal, a progress bar shows on stderr once it runs past a second.`,
			Flags: []cli.Flag{
				configFlag,
				&cli.StringFlag{Name: "db", Usage: "store `FILE` (default: the config's store)"},
				&cli.StringFlag{Name: "key", Usage: "checkpoint key `FILE` (default: the config's audit_key); its public half is the trust anchor"},
				&cli.BoolFlag{Name: "json", Usage: "print the report as JSON"},
			},
			Action: verifyAudit,
		}},
	}
}

func verifyAudit(ctx context.Context, c *cli.Command) error {
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
			return cli.Exit(fmt.Sprintf("--key: %v", err), exitUsage)
		}
	} else {
		fmt.Fprintln(os.Stderr, "warning: no --key: checking checkpoints against the key recorded in the store itself")
	}
	bar := newProgress(os.Stderr, "verify", "events")
	rep, err := db.VerifyWith(ctx, pub, store.VerifyOptions{Progress: bar.update})
	bar.done()
	if err != nil {
		return err
	}
	if c.Bool("json") {
		printJSON(os.Stdout, rep)
	} else if rep.Problem == nil {
		from := ""
		if rep.PrunedThrough > 0 {
			from = fmt.Sprintf(" (pruned: from event %d on)", rep.PrunedThrough+1)
		}
		fmt.Printf("OK: %d events, %d sessions, %d signed checkpoints%s\n", rep.Events, rep.Sessions, rep.Checkpoints, from)
	} else {
		fmt.Printf("BROKEN: %v\n(%d events verified before it)\n", rep.Problem, rep.Events)
	}
	if rep.Problem != nil {
		return cli.Exit("", exitDenied)
	}
	return nil
}
