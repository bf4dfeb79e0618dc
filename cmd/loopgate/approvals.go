package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v3"

	"github.com/loopgate/loopgate/policy"
)

func approvalsCommand() *cli.Command {
	conn := []cli.Flag{
		configFlag,
		&cli.StringFlag{Name: "socket", Usage: "API unix `SOCKET` (default: the config's api.socket)"},
		&cli.StringFlag{Name: "api", Usage: "API base `URL` on loopback TCP (with --token-file) instead of the socket"},
		&cli.StringFlag{Name: "token-file", Usage: "OIDC bearer token `FILE` for --api"},
	}
	withJSON := slices.Concat(conn, []cli.Flag{jsonFlag()})
	decide := slices.Concat(conn, []cli.Flag{
		&cli.StringFlag{Name: "reason", Usage: "why (recorded, and shown to the agent on deny)"}})
	return &cli.Command{
		Name:  "approvals",
		Usage: "list and decide commands waiting for approval",
		UsageText: usage("loopgate approvals list|watch|show|approve|deny [options] [ID]",
			"loopgate approvals list",
			"loopgate approvals approve apr_1f0c --reason \"ticket 42\""),
		Commands: []*cli.Command{
			{
				Name: "list", Usage: "list approval requests (pending by default)",
				UsageText: usage("loopgate approvals list [--state STATE] [--json]",
					"loopgate approvals list",
					"loopgate approvals list --state all --json | jq -r .id"),
				Flags: slices.Concat(withJSON, []cli.Flag{
					&cli.StringFlag{Name: "state", Value: "pending", Usage: "pending, approved, denied, expired, abandoned or all"}}),
				Action: listApprovals,
			},
			{
				Name: "watch", Usage: "print requests as they arrive and change",
				UsageText: usage("loopgate approvals watch [--json]",
					"loopgate approvals watch",
					"loopgate approvals watch --json | jq 'select(.state == \"pending\")'"),
				Flags: slices.Clone(withJSON), Action: watchApprovals,
			},
			{
				Name: "show", Usage: "show one request as JSON",
				UsageText: usage("loopgate approvals show [--json] ID",
					"loopgate approvals show apr_1f0c",
					"loopgate approvals show apr_1f0c --json | jq .command"),
				Flags: slices.Clone(withJSON), Action: showApproval,
			},
			{
				Name: "approve", Usage: "approve a request",
				UsageText: usage("loopgate approvals approve [options] ID",
					"loopgate approvals approve apr_1f0c --reason \"ticket 42\"",
					"loopgate approvals approve apr_1f0c --scope session",
					"loopgate approvals approve apr_1f0c --scope window --window 30m"),
				Flags: slices.Concat(decide, []cli.Flag{
					&cli.StringFlag{Name: "scope", Value: "once", Usage: "once (this command), session (its class for the rest of the session) or window"},
					&cli.DurationFlag{Name: "window", Value: 15 * time.Minute, Usage: "with --scope window: how long the workload may run this class on the target"}}),
				Action: decideApproval(true),
			},
			{
				Name: "deny", Usage: "deny a request",
				UsageText: usage("loopgate approvals deny [--reason TEXT] ID",
					"loopgate approvals deny apr_1f0c --reason \"not during the freeze\""),
				Flags: slices.Clone(decide), Action: decideApproval(false),
			},
		},
	}
}

// apiClient talks to the daemon's API.
type apiClient struct {
	base  string
	token string
	http  *http.Client
}

func newAPIClient(ctx context.Context, c *cli.Command) (*apiClient, error) {
	if u := c.String("api"); u != "" {
		cl := &apiClient{base: strings.TrimRight(u, "/"), http: &http.Client{}}
		if f := c.String("token-file"); f != "" {
			b, err := os.ReadFile(f)
			if err != nil {
				return nil, cli.Exit(fmt.Sprintf("--token-file: %v", err), exitUsage)
			}
			cl.token = strings.TrimSpace(string(b))
		}
		return cl, nil
	}
	socket := c.String("socket")
	if socket == "" {
		cfg, err := loadConfig(c)
		if err != nil {
			return nil, err
		}
		socket = cfg.API.Socket
	}
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", socket)
	}}
	return &apiClient{base: "http://loopgate", http: &http.Client{Transport: tr}}, nil
}

func (a *apiClient) do(ctx context.Context, method, path string, body any) (*http.Response, error) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if a.token != "" {
		req.Header.Set("Authorization", "Bearer "+a.token)
	}
	resp, err := a.http.Do(req)
	if err != nil {
		return nil, cli.Exit(fmt.Sprintf("api: %v (is the daemon running?)", err), exitError)
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		var e struct {
			Error struct{ Code, Message string } `json:"error"`
		}
		json.NewDecoder(resp.Body).Decode(&e)
		code := exitError
		if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
			code = exitDenied // the API refused this caller
		}
		return nil, cli.Exit(fmt.Sprintf("api: %s %s (%s)", resp.Status, e.Error.Message, e.Error.Code), code)
	}
	return resp, nil
}

func listApprovals(ctx context.Context, c *cli.Command) error {
	a, err := newAPIClient(ctx, c)
	if err != nil {
		return err
	}
	state := c.String("state")
	if state == "all" {
		state = ""
	}
	resp, err := a.do(ctx, "GET", "/v1/approvals?state="+state, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var out struct {
		Approvals []json.RawMessage `json:"approvals"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return err
	}
	if c.Bool("json") {
		for _, r := range out.Approvals {
			fmt.Println(string(r))
		}
		return nil
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tSTATE\tWORKLOAD\tTARGET\tCLASS\tRULE\tCOMMAND")
	for _, raw := range out.Approvals {
		var r policy.Request
		json.Unmarshal(raw, &r)
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.State, r.Workload, r.Target, r.Class, r.RuleID, oneLine(r.Command, 80))
	}
	return tw.Flush()
}

func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > n {
		return s[:n-3] + "..."
	}
	return s
}

func watchApprovals(ctx context.Context, c *cli.Command) error {
	a, err := newAPIClient(ctx, c)
	if err != nil {
		return err
	}
	resp, err := a.do(ctx, "GET", "/v1/approvals/stream", nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		if c.Bool("json") {
			fmt.Println(data)
			continue
		}
		var r policy.Request
		json.Unmarshal([]byte(data), &r)
		fmt.Printf("%s  %-9s %s -> %s  [%s, rule %s]  %s\n", r.ID, r.State, r.Workload, r.Target, r.Class, r.RuleID, oneLine(r.Command, 100))
	}
	return sc.Err()
}

func showApproval(ctx context.Context, c *cli.Command) error {
	if c.NArg() != 1 {
		return usagef(c, "want one approval ID, got %d arguments", c.NArg())
	}
	a, err := newAPIClient(ctx, c)
	if err != nil {
		return err
	}
	resp, err := a.do(ctx, "GET", "/v1/approvals/"+c.Args().First(), nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var v any
	json.NewDecoder(resp.Body).Decode(&v)
	if c.Bool("json") {
		return printJSON(os.Stdout, v)
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

func decideApproval(approve bool) cli.ActionFunc {
	return func(ctx context.Context, c *cli.Command) error {
		if c.NArg() != 1 {
			return usagef(c, "want one approval ID, got %d arguments", c.NArg())
		}
		if approve {
			switch sc := c.String("scope"); sc {
			case policy.ScopeOnce, policy.ScopeSession, policy.ScopeWindow:
			default:
				return usagef(c, "--scope: want once, session or window, got %q", sc)
			}
		}
		a, err := newAPIClient(ctx, c)
		if err != nil {
			return err
		}
		verb, body := "deny", map[string]string{"reason": c.String("reason")}
		if approve {
			verb = "approve"
			body["scope"] = c.String("scope")
			if c.String("scope") == policy.ScopeWindow {
				body["window"] = c.Duration("window").String()
			}
		}
		resp, err := a.do(ctx, "POST", "/v1/approvals/"+c.Args().First()+"/"+verb, body)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		var r policy.Request
		json.NewDecoder(resp.Body).Decode(&r)
		if r.State == policy.StatePending {
			fmt.Printf("%s: %d of %d approvals (%s)\n", r.ID, len(r.ApprovedBy), r.Required, strings.Join(r.ApprovedBy, ", "))
		} else {
			fmt.Printf("%s: %s\n", r.ID, r.State)
		}
		return nil
	}
}
