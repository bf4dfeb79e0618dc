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
		Commands: []*cli.Command{
			{
				Name:   "list",
				Usage:  "list sessions, oldest first",
				Flags:  slices.Concat(filterFlags, []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "one JSON object a line"}}),
				Action: listSessions,
			},
			{
				Name:  "export",
				Usage: "stream the events of matching sessions as JSON lines or CSV",
				Flags: slices.Concat(filterFlags[:len(filterFlags)-1],
					[]cli.Flag{&cli.StringFlag{Name: "format", Value: "jsonl", Usage: "jsonl, csv or text"}}),
				Action: exportSessions,
			},
			{
				Name:      "show",
				Usage:     "show one session as JSON",
				ArgsUsage: "ID",
				Flags:     slices.Clone(filterFlags[:2]),
				Action:    showSession,
			},
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
		return nil, cli.Exit(fmt.Sprintf("store %s: %v", path, err), 1)
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
	db, err := openStore(ctx, c)
	if err != nil {
		return err
	}
	defer db.Close()
	w := bufio.NewWriter(os.Stdout)
	if err := db.Export(ctx, filterOf(c), c.String("format"), w); err != nil {
		return cli.Exit(err.Error(), 2)
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
		return cli.Exit("sessions show: want exactly one session ID", 2)
	}
	db, err := openStore(ctx, c)
	if err != nil {
		return err
	}
	defer db.Close()
	s, err := db.Session(ctx, c.Args().First())
	if err != nil {
		return cli.Exit(err.Error(), 1)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(s.View())
}
