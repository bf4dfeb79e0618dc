package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v3"

	"github.com/loopgate/loopgate/store"
)

func sessionsCommand() *cli.Command {
	filterFlags := []cli.Flag{
		configFlag,
		&cli.StringFlag{Name: "db", Usage: "store `FILE` (default: the config's store)"},
		&cli.StringFlag{Name: "workload", Usage: "only this workload"},
		&cli.StringFlag{Name: "target", Usage: "only this target"},
		&cli.StringFlag{Name: "outcome", Usage: "only this outcome (open, closed, refused, error, ...)"},
		&cli.TimestampFlag{Name: "since", Config: cli.TimestampConfig{Layouts: []string{time.RFC3339}}, Usage: "started at or after (RFC 3339)"},
		&cli.TimestampFlag{Name: "until", Config: cli.TimestampConfig{Layouts: []string{time.RFC3339}}, Usage: "started before (RFC 3339)"},
		&cli.IntFlag{Name: "limit", Usage: "at most N sessions"},
	}
	return &cli.Command{
		Name:  "sessions",
		Usage: "list and inspect recorded sessions",
		UsageText: usage("loopgate sessions list|show|export [options]",
			"loopgate sessions list --workload ci-bot --since 2026-11-30T00:00:00Z",
			"loopgate sessions export --format csv > sessions.csv"),
		Commands: []*cli.Command{
			{
				Name:  "list",
				Usage: "list sessions, oldest first",
				UsageText: usage("loopgate sessions list [filters] [--json]",
					"loopgate sessions list",
					"loopgate sessions list --workload ci-bot --outcome denied",
					"loopgate sessions list --since 2026-11-30T00:00:00Z --json | jq -r .id"),
				Flags:  slices.Concat(filterFlags, []cli.Flag{jsonFlag()}),
				Action: listSessions,
			},
			{
				Name:  "export",
				Usage: "stream the events of matching sessions as JSON lines or CSV",
				UsageText: usage("loopgate sessions export [filters] [--format jsonl|csv|text]",
					"loopgate sessions export > events.jsonl",
					"loopgate sessions export --workload ci-bot --format csv > ci-bot.csv",
					"loopgate sessions export --format text | less -S"),
				Description: `Streams in chain order with constant memory, whatever the store's size. On a
terminal, a progress bar shows on stderr once it runs past a second.`,
				Flags: slices.Concat(filterFlags[:len(filterFlags)-1],
					[]cli.Flag{&cli.StringFlag{Name: "format", Value: "jsonl", Usage: "jsonl, csv, text, or asciicast (one session ID: its terminal)"}}),
				Action: exportSessions,
			},
			{
				Name:      "show",
				Usage:     "show one session as JSON",
				ArgsUsage: "ID",
				UsageText: usage("loopgate sessions show [--json] ID",
					"loopgate sessions show ses_0b3f",
					"loopgate sessions show ses_0b3f --json | jq .outcome"),
				Flags:  slices.Concat(filterFlags[:2], []cli.Flag{jsonFlag()}),
				Action: showSession,
			},
			replayCommand(slices.Clone(filterFlags[:2])),
		},
	}
}

func openStore(ctx context.Context, c *cli.Command) (*store.DB, error) {
	path := c.String("db")
	if path == "" {
		cfg, err := loadConfig(c)
		if err != nil {
			return nil, err
		}
		path = cfg.Store
	}
	if _, err := os.Stat(path); err != nil {
		return nil, cli.Exit(fmt.Sprintf("store %s: %v", path, err), exitError)
	}
	return store.OpenWith(ctx, path, store.Options{Reader: true})
}

func filterOf(c *cli.Command) store.Filter {
	f := store.Filter{Workload: c.String("workload"), Target: c.String("target"), Outcome: c.String("outcome"), Limit: c.Int("limit")}
	if t := c.Timestamp("since"); !t.IsZero() {
		f.Since = t
	}
	if t := c.Timestamp("until"); !t.IsZero() {
		f.Until = t
	}
	return f
}

func exportSessions(ctx context.Context, c *cli.Command) error {
	switch f := c.String("format"); f {
	case "jsonl", "csv", "text":
	case "asciicast":
		return exportCast(ctx, c) // sshcmd.go
	default:
		return usagef(c, "--format: want jsonl, csv, text or asciicast, got %q", f)
	}
	db, err := openStore(ctx, c)
	if err != nil {
		return err
	}
	defer db.Close()
	w := bufio.NewWriter(os.Stdout)
	bar := newProgress(os.Stderr, "export", "events")
	err = db.ExportWith(ctx, filterOf(c), c.String("format"), w, store.ExportOptions{Progress: bar.update})
	bar.done()
	if err != nil {
		return err
	}
	return w.Flush()
}

func listSessions(ctx context.Context, c *cli.Command) error {
	db, err := openStore(ctx, c)
	if err != nil {
		return err
	}
	defer db.Close()
	f := filterOf(c)
	if c.Bool("json") {
		enc := json.NewEncoder(os.Stdout)
		return db.Sessions(ctx, f, func(s *store.Session) error { return enc.Encode(s.View()) })
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTARTED\tWORKLOAD\tTARGET\tORIG DST\tPID\tUID\tEXE\tUP\tDOWN\tOUTCOME\tERROR")
	err = db.Sessions(ctx, f, func(s *store.Session) error {
		_, err := fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%s\t%d\t%d\t%s\t%s\n",
			s.ID, s.Started.Local().Format("2006-01-02 15:04:05"), dash(s.Workload), dash(s.Target), dash(s.OrigDst),
			s.PID, s.UID, dash(s.Exe), s.BytesUp, s.BytesDown, s.Outcome, s.Error)
		return err
	})
	if ferr := tw.Flush(); err == nil {
		err = ferr
	}
	return err
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func showSession(ctx context.Context, c *cli.Command) error {
	if c.NArg() != 1 {
		return usagef(c, "want one session ID, got %d arguments", c.NArg())
	}
	db, err := openStore(ctx, c)
	if err != nil {
		return err
	}
	defer db.Close()
	s, err := db.Session(ctx, c.Args().First())
	if err != nil {
		return cli.Exit(fmt.Sprintf("session %s: %v", c.Args().First(), err), exitError)
	}
	if c.Bool("json") {
		return printJSON(os.Stdout, s.View())
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(s.View())
}
