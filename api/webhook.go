package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/loopgate/loopgate/policy"
)

// Webhook posts approval requests as they are filed and decided to a URL:
// a JSON body with the request and a Slack-compatible "text". Delivery is
// retried with backoff (1 s, 2 s, 4 s) and never blocks the data path: it
// reads the broker's watch channel, which drops updates for a slow reader.
type Webhook struct {
	URL    string
	Broker *policy.Broker
	Log    *slog.Logger
	// Client defaults to one with a 10 s timeout.
	Client *http.Client
}

// Run delivers until ctx ends.
func (w *Webhook) Run(ctx context.Context) {
	if w.Client == nil {
		w.Client = &http.Client{Timeout: 10 * time.Second}
	}
	ch, stop := w.Broker.Watch()
	defer stop()
	for {
		select {
		case <-ctx.Done():
			return
		case r := <-ch:
			w.deliver(ctx, r)
		}
	}
}

func text(r policy.Request) string {
	switch r.State {
	case policy.StatePending:
		return fmt.Sprintf("loopgate: %s on %s wants to run (%s, rule %s): %s — loopgate approvals approve %s",
			r.Workload, r.Target, r.Class, r.RuleID, r.Command, r.ID)
	case policy.StateAbandoned, policy.StateExpired:
		return fmt.Sprintf("loopgate: %s %s: %s", r.ID, r.State, r.Reason)
	default:
		return fmt.Sprintf("loopgate: %s %s by %s: %s", r.ID, r.State, r.DecidedBy, r.Reason)
	}
}

func (w *Webhook) deliver(ctx context.Context, r policy.Request) {
	body, _ := json.Marshal(map[string]any{"text": text(r), "approval": r})
	backoff := time.Second
	for attempt := 1; ; attempt++ {
		req, _ := http.NewRequestWithContext(ctx, "POST", w.URL, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := w.Client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode < 300 {
				return
			}
			err = fmt.Errorf("status %s", resp.Status)
		}
		if attempt == 4 || ctx.Err() != nil {
			w.Log.Warn("webhook not delivered", "approval", r.ID, "state", r.State, "err", err)
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff *= 2
	}
}
