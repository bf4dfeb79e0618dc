package api

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/loopgate/loopgate/policy"
)

// TestStreamOverSocket: a request filed after a client subscribes arrives
// on the event stream, over the unix socket, identified as root.
func TestStreamOverSocket(t *testing.T) {
	cfg, err := policy.Parse("c.yaml", []byte("approvers:\n  - {name: root, uid: 0}\n"))
	if err != nil {
		t.Fatal(err)
	}
	b := &policy.Broker{Policy: func() *policy.Config { return cfg }, Timeout: 5 * time.Second}
	s := &Server{Broker: b, Policy: func() *policy.Config { return cfg }}
	sock := filepath.Join(t.TempDir(), "api.sock")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go s.Run(ctx, sock, "")
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}}
	var resp *http.Response
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err = hc.Get("http://lg/v1/approvals/stream")
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("stream: %s", resp.Status)
	}
	go b.Ask(ctx, policy.Request{SessionID: "s", UID: 1000, Class: "write"}, nil)
	sc := bufio.NewScanner(resp.Body)
	got := make(chan string, 1)
	go func() {
		for sc.Scan() {
			if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				got <- d
				return
			}
		}
	}()
	select {
	case d := <-got:
		if !strings.Contains(d, `"state":"pending"`) {
			t.Errorf("event %s", d)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no event on the stream")
	}
}
