package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/urfave/cli/v3"

	"github.com/loopgate/loopgate/store"
)

func storeCommand() *cli.Command {
	where := []cli.Flag{
		configFlag,
		&cli.StringFlag{Name: "db", Usage: "store `FILE` (default: the config's store)"},
	}
	return &cli.Command{
		Name:  "store",
		Usage: "back up and prune the session store",
		UsageText: usage("loopgate store backup|prune [options]",
			"loopgate store backup /var/backups/loopgate-$(date +%F).db",
			"loopgate store prune --before 2026-09-01"),
		Commands: []*cli.Command{
			{
				Name:  "backup",
				Usage: "copy the store to a new file while the daemon runs",
				UsageText: usage("loopgate store backup [--db FILE] FILE",
					"loopgate store backup /var/backups/loopgate-$(date +%F).db",
					"loopgate audit verify --db /var/backups/loopgate-2026-11-30.db --key /etc/loopgate/audit.key"),
				Description: `Copies the store with SQLite's online backup API: a consistent snapshot, taken
while the daemon keeps recording. Records the daemon still held in its record
log (<store>-records) are appended to the copy, and the signed checkpoint file
is copied beside it (FILE.checkpoint), so the copy verifies on its own. FILE
must not exist. Keep FILE.checkpoint with FILE.`,
				Flags:  slicesOf(where, jsonFlag()),
				Action: backupStore,
			},
			{
				Name:  "prune",
				Usage: "remove sessions and events recorded before a date, keeping the chain verifiable",
				UsageText: usage("loopgate store prune --before DATE [--key FILE] [--json]",
					"loopgate store prune --before 2026-09-01",
					"loopgate store prune --before 2026-09-01T00:00:00Z --json"),
				Description: `Removes every event up to the last one, before DATE, at which no session was
open, and the sessions recorded there. A mark signed with the checkpoint key
(--key, default the config's audit_key) records where the log now starts;
audit verify checks the mark and the chain after it. The events removed are
verified first: prune refuses to sign over a broken chain. Safe while the
daemon runs. The config's retention: section runs the same prune daily.

The file keeps its size (SQLite reuses the freed pages for new records);
--vacuum rewrites it to give the space back, and needs the daemon stopped.`,
				Flags: slicesOf(where,
					&cli.StringFlag{Name: "before", Required: true, Usage: "`DATE`: remove what ended before it (YYYY-MM-DD, local midnight, or RFC 3339)"},
					&cli.StringFlag{Name: "key", Usage: "checkpoint key `FILE` (default: the config's audit_key)"},
					&cli.BoolFlag{Name: "vacuum", Usage: "then give the freed space back to the file system (stop the daemon first)"},
					jsonFlag()),
				Action: pruneStore,
			},
		},
	}
}

func slicesOf(base []cli.Flag, more ...cli.Flag) []cli.Flag {
	return append(append([]cli.Flag{}, base...), more...)
}

func backupStore(ctx context.Context, c *cli.Command) error {
	if c.NArg() != 1 {
		return usagef(c, "want one FILE to write the copy to, got %d arguments", c.NArg())
	}
	db, err := openStore(ctx, c)
	if err != nil {
		return err
	}
	defer db.Close()
	dst := c.Args().First()
	start := time.Now()
	rep, err := db.Backup(ctx, dst)
	if err != nil {
		return err
	}
	if c.Bool("json") {
		return printJSON(os.Stdout, struct {
			File string `json:"file"`
			store.BackupReport
		}{dst, rep})
	}
	fmt.Printf("%s: %d events (%d from the record log) in %s\n", dst, rep.Events, rep.Logged, time.Since(start).Round(time.Millisecond))
	return nil
}

func pruneStore(ctx context.Context, c *cli.Command) error {
	if c.NArg() != 0 {
		return usagef(c, "takes no arguments, got %q", c.Args().First())
	}
	if c.Bool("vacuum") && c.Bool("json") {
		return usagef(c, "--vacuum and --json: pick one")
	}
	before, err := parseDate(c.String("before"))
	if err != nil {
		return usagef(c, "--before: %v", err)
	}
	keyPath := c.String("key")
	if keyPath == "" {
		cfg, err := loadConfig(c)
		if err != nil {
			return err
		}
		keyPath = cfg.AuditKey
	}
	if _, err := os.Stat(keyPath); err != nil {
		return cli.Exit(fmt.Sprintf("--key: %v", err), exitUsage)
	}
	key, err := store.LoadOrCreateKey(keyPath)
	if err != nil {
		return cli.Exit(fmt.Sprintf("--key: %v", err), exitUsage)
	}
	db, err := openStore(ctx, c)
	if err != nil {
		return err
	}
	defer db.Close()
	rep, err := db.Prune(ctx, before, key)
	if err != nil {
		return err
	}
	if c.Bool("json") {
		return printJSON(os.Stdout, rep)
	}
	if rep.Through == 0 {
		fmt.Println("nothing to prune")
	} else {
		fmt.Printf("pruned %d events and %d sessions; the log now starts after event %d\n", rep.Events, rep.Sessions, rep.Through)
	}
	if rep.HeldBy != "" {
		fmt.Printf("kept from session %s on: it was open at the cutoff\n", rep.HeldBy)
	}
	if c.Bool("vacuum") {
		before, after, err := db.Vacuum(ctx)
		if err != nil {
			return err
		}
		fmt.Printf("vacuumed: %d MiB -> %d MiB\n", before>>20, after>>20)
	}
	return nil
}

// parseDate reads a date (local midnight) or an RFC 3339 time.
func parseDate(s string) (time.Time, error) {
	if t, err := time.ParseInLocation(time.DateOnly, s, time.Local); err == nil {
		return t, nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("want YYYY-MM-DD or RFC 3339, got %q", s)
	}
	return t, nil
}
