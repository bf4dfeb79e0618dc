package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"text/tabwriter"

	"github.com/urfave/cli/v3"

	"github.com/loopgate/loopgate/policy/mask"
	"github.com/loopgate/loopgate/store"
	"github.com/loopgate/loopgate/store/event"
)

// learnedColumns loads the columns detectors learned and returns the set
// sessions consult, with the recorder that writes what they learn next.
func learnedColumns(ctx context.Context, db *store.DB, log *slog.Logger) (*mask.Learned, *learnRecorder, error) {
	stored, err := db.LearnedColumns(ctx)
	if err != nil {
		return nil, nil, err
	}
	cols := make([]mask.LearnedColumn, len(stored))
	for i, c := range stored {
		cols[i] = mask.LearnedColumn{Rule: c.Rule, Mask: c.Mask, Column: c.Column, Session: c.SessionID, FirstSeen: c.FirstSeen, State: c.State}
	}
	lr := &learnRecorder{db: db, log: log, queue: make(chan mask.LearnedColumn, 256)}
	return mask.NewLearned(cols, lr.learned), lr, nil
}

// learnRecorder writes learned columns to the store off the sessions'
// relay (a session must not wait for a durable write in the middle of its
// rows): queued, written by run.
type learnRecorder struct {
	db    *store.DB
	log   *slog.Logger
	queue chan mask.LearnedColumn
}

// learned queues c; it never blocks. A column not recorded is still masked
// until the daemon stops, and learned again after.
func (l *learnRecorder) learned(c mask.LearnedColumn) {
	select {
	case l.queue <- c:
	default:
		l.log.Warn("learned column not recorded: queue full", "rule", c.Rule, "mask", c.Mask, "column", c.Column)
	}
}

// run writes queued columns until ctx ends, then what is left.
func (l *learnRecorder) run(ctx context.Context) {
	write := func(c mask.LearnedColumn) {
		l.log.Info("detector learned a column", "rule", c.Rule, "mask", c.Mask, "column", c.Column, "session", c.Session)
		err := l.db.LearnColumn(context.WithoutCancel(ctx), event.LearnedColumn{Rule: c.Rule, Mask: c.Mask, Column: c.Column,
			SessionID: c.Session, FirstSeen: c.FirstSeen, State: c.State})
		if err != nil {
			l.log.Error("learned column not recorded", "rule", c.Rule, "column", c.Column, "err", err)
		}
	}
	for {
		select {
		case c := <-l.queue:
			write(c)
		case <-ctx.Done():
			for {
				select {
				case c := <-l.queue:
					write(c)
				default:
					return
				}
			}
		}
	}
}

func masksCommand() *cli.Command {
	conn := []cli.Flag{
		configFlag,
		&cli.StringFlag{Name: "socket", Usage: "API unix `SOCKET` (default: the config's api.socket)"},
		&cli.StringFlag{Name: "api", Usage: "API base `URL` on loopback TCP (with --token-file) instead of the socket"},
		&cli.StringFlag{Name: "token-file", Usage: "OIDC bearer token `FILE` for --api"},
	}
	return &cli.Command{
		Name:  "masks",
		Usage: "work with masks the daemon learned",
		UsageText: usage("loopgate masks learned list|confirm|drop [options]",
			"loopgate masks learned list"),
		Commands: []*cli.Command{{
			Name:  "learned",
			Usage: "table columns a value detector fired on, masked as columns of the rule",
			UsageText: usage("loopgate masks learned list|confirm|drop [options]",
				"loopgate masks learned list --json",
				"loopgate masks learned confirm agent-app ssn public.users.notes"),
			Description: `When a mask's detector fires on a result column that is a table column, the
daemon masks that column for the rule from then on, in every session, as a
configured column mask would: plain selection is masked in the mask's mode and
any computation on it is refused. An operator confirms (keeps) or drops each
one. A dropped column is not learned again when the detector fires on it
again; confirm brings it back.`,
			Commands: []*cli.Command{
				{Name: "list", Usage: "list learned columns",
					UsageText: usage("loopgate masks learned list [--json]", "loopgate masks learned list", "loopgate masks learned list --json | jq -r .column"),
					Flags:     slices.Concat(conn, []cli.Flag{jsonFlag()}), Action: listLearned},
				{Name: "confirm", Usage: "keep a learned column masked", ArgsUsage: "RULE MASK TABLE.COLUMN",
					UsageText: usage("loopgate masks learned confirm RULE MASK TABLE.COLUMN", "loopgate masks learned confirm agent-app ssn public.users.notes"),
					Flags:     slices.Clone(conn), Action: setLearned("confirm")},
				{Name: "drop", Usage: "stop masking a learned column (and do not learn it again)", ArgsUsage: "RULE MASK TABLE.COLUMN",
					UsageText: usage("loopgate masks learned drop RULE MASK TABLE.COLUMN", "loopgate masks learned drop agent-app ssn public.users.comment"),
					Flags:     slices.Clone(conn), Action: setLearned("drop")},
			},
		}},
	}
}

type learnedJSON struct {
	Rule      string `json:"rule"`
	Mask      string `json:"mask"`
	Column    string `json:"column"`
	State     string `json:"state"`
	Session   string `json:"session"`
	FirstSeen string `json:"first_seen"`
	ChangedBy string `json:"changed_by"`
}

func listLearned(ctx context.Context, c *cli.Command) error {
	a, err := newAPIClient(ctx, c)
	if err != nil {
		return err
	}
	resp, err := a.do(ctx, "GET", "/v1/masks/learned", nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var out struct {
		Columns []json.RawMessage `json:"columns"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return err
	}
	if c.Bool("json") {
		for _, r := range out.Columns {
			fmt.Println(string(r))
		}
		return nil
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "RULE\tMASK\tCOLUMN\tSTATE\tFIRST SEEN\tSESSION\tBY")
	for _, raw := range out.Columns {
		var l learnedJSON
		json.Unmarshal(raw, &l)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", l.Rule, l.Mask, l.Column, l.State, l.FirstSeen, l.Session, l.ChangedBy)
	}
	return tw.Flush()
}

func setLearned(verb string) cli.ActionFunc {
	return func(ctx context.Context, c *cli.Command) error {
		if c.NArg() != 3 {
			return usagef(c, "give RULE MASK TABLE.COLUMN, got %d arguments", c.NArg())
		}
		a, err := newAPIClient(ctx, c)
		if err != nil {
			return err
		}
		body := map[string]string{"rule": c.Args().Get(0), "mask": c.Args().Get(1), "column": c.Args().Get(2)}
		resp, err := a.do(ctx, "POST", "/v1/masks/learned/"+verb, body)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var l learnedJSON
		if err := json.NewDecoder(resp.Body).Decode(&l); err != nil {
			return err
		}
		fmt.Printf("%s %s %s: %s\n", l.Rule, l.Mask, l.Column, l.State)
		return nil
	}
}

// explainLearned returns the columns the daemon learned (from the store,
// read-only), as Learned, for explain to mask as the daemon does; nil
// (with a note printed) when the store cannot be read.
func explainLearned(ctx context.Context, path string) *mask.Learned {
	if _, err := os.Stat(path); err != nil {
		return nil
	}
	db, err := store.OpenWith(ctx, path, store.Options{Reader: true})
	if err != nil {
		fmt.Printf("learned:  store not read (%v); learned columns not applied\n", err)
		return nil
	}
	defer db.Close()
	stored, err := db.LearnedColumns(ctx)
	if err != nil {
		fmt.Printf("learned:  store not read (%v); learned columns not applied\n", err)
		return nil
	}
	cols := make([]mask.LearnedColumn, len(stored))
	for i, s := range stored {
		cols[i] = mask.LearnedColumn{Rule: s.Rule, Mask: s.Mask, Column: s.Column, Session: s.SessionID, FirstSeen: s.FirstSeen, State: s.State}
	}
	return mask.NewLearned(cols, nil)
}
