package tests

import (
	"context"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/loopgate/loopgate/tests/lgtest"
)

// TestApprovalWebPage: an approver signs in to the web page in a real
// headless Chromium with an OIDC token and approves a waiting psql command
// by clicking.
func TestApprovalWebPage(t *testing.T) {
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		lgtest.Unavailable(t, "chromium not installed (apt-get install chromium)")
	}
	is := lgtest.StartIssuer(t)
	s := newPGSetup(t)
	text, _ := os.ReadFile(s.cfg)
	cfg := strings.ReplaceAll(string(text), "https://idp.invalid", is.URL)
	cfg = strings.Replace(cfg, "  - {name: nobody-approver, uid: 65534}", "  - {name: nobody-approver, uid: 65534}\n  - {name: alice-web, oidc_subject: alice}", 1)
	cfg = strings.Replace(cfg, "approvers: [root, operator, nobody-approver]", "approvers: [root, operator, nobody-approver, alice-web]", 1)
	// The request must outlive Chromium's first start, which alone can take
	// longer than the suite's 4-s approval timeout on a loaded machine.
	cfg = strings.Replace(cfg, "approvals: {timeout: 4s}", "approvals: {timeout: 2m}", 1)
	os.WriteFile(s.cfg, []byte(cfg), 0o600)
	s.daemon.Stop(syscall.SIGTERM)
	s.daemon.Restart()
	base := "http://127.0.0.1:" + strconv.Itoa(s.apiPort)
	token := is.Token(t, lgtest.Claims{Subject: "alice", Audience: "loopgate-api"})
	s.pg.MustExecIn(t, "app", "INSERT INTO approvals_t VALUES (1), (2)")

	t.Run("cross-site posts are refused", func(t *testing.T) {
		jar, _ := cookiejar.New(nil)
		c := &http.Client{Jar: jar}
		req, _ := http.NewRequest("POST", base+"/ui/login", strings.NewReader(url.Values{"token": {token}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Origin", base)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		for _, origin := range []string{"http://evil.example", ""} {
			req, _ := http.NewRequest("POST", base+"/ui/decide", strings.NewReader(url.Values{"id": {"apr_x"}, "action": {"approve"}}.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			if origin != "" {
				req.Header.Set("Origin", origin)
			}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusForbidden {
				t.Errorf("decide from origin %q: %s", origin, resp.Status)
			}
		}
	})

	wait := s.psqlAsync(t, "agent", "DELETE FROM approvals_t")
	req := s.pending(t, 1)[0]

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium), chromedp.NoSandbox,
		chromedp.DisableGPU, chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()))
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancel()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	// The first Run starts the browser: no timeout on it (chromedp's rule).
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/ui/")); err != nil {
		t.Fatalf("chromium: %v", err)
	}
	tctx, tcancel := context.WithTimeout(ctx, 60*time.Second)
	defer tcancel()
	row := `tr.req[data-id="` + req.ID + `"]`
	err = chromedp.Do(tctx,
		chromedp.WaitVisible(chromedp.CSS("#token")),
		chromedp.SetValue(chromedp.CSS("#token"), token),
		chromedp.Click(chromedp.CSS("#signin")),
		chromedp.WaitVisible(chromedp.CSS(row)),
		chromedp.SetValue(chromedp.CSS(row+" input[name=reason]"), "looks fine"),
	)
	if err != nil {
		body, _ := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("body")))
		t.Fatalf("sign in and find the request: %v\npage: %s", err, body)
	}
	shot, _ := chromedp.Run(tctx, chromedp.Screenshot(chromedp.CSS("body")))
	if dir := os.Getenv("LG_SCREENSHOTS"); dir != "" {
		os.WriteFile(filepath.Join(dir, "approvals.png"), shot, 0o644)
	}
	if err := chromedp.Do(tctx, chromedp.Click(chromedp.CSS(row+" button.approve")), chromedp.WaitVisible(chromedp.CSS("#msg"))); err != nil {
		body, _ := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("body")))
		t.Fatalf("approve: %v\npage: %s", err, body)
	}
	msg, err := chromedp.Run(tctx, chromedp.Text(chromedp.CSS("#msg")))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(msg, req.ID+": approved") {
		t.Errorf("page says %q", msg)
	}
	if _, stderr, code := wait(); code != 0 {
		t.Errorf("psql after web approval: %d %s", code, stderr)
	}
	out, _ := s.cliAs(t, 0, "approvals", "list", "--state", "approved", "--json")
	if !strings.Contains(out, `"decided_by":"alice-web"`) || !strings.Contains(out, `"reason":"looks fine"`) {
		t.Errorf("recorded approval: %s", out)
	}
}
