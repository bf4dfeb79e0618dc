package tests

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	_ "time/tzdata" // the browser's zone, whatever the host has

	"github.com/chromedp/chromedp"
	"github.com/creack/pty"

	"github.com/loopgate/loopgate/tests/lgtest"
)

// browserZone is the approver's time zone: a half-hour offset, so a time
// shown in it can never be mistaken for UTC.
const browserZone = "Asia/Kolkata"

// TestApprovalWebPage: an approver signs in to the web page in a real
// headless Chromium (in its own time zone) with an OIDC token, sees what
// the agent ran before it asked, approves a waiting psql command by
// clicking, filters the session list and reads the session's commands
// joined with their results.
func TestApprovalWebPage(t *testing.T) {
	if _, err := exec.LookPath("chromium"); err != nil {
		lgtest.Unavailable(t, "chromium not installed (apt-get install chromium)")
	}
	zone, err := time.LoadLocation(browserZone)
	if err != nil {
		t.Fatal(err)
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

	// One psql session: a read, a statement that fails, then a delete
	// of every row, which waits for an approver.
	psql := exec.Command(lgtest.Binary(t), "run", "--config", s.cfg, "--workload", "agent", "--user", "nobody", "--",
		"psql", "-X", "-A", "-t", "-w", "-h", "127.0.0.1", "-p", s.port, "-d", "app",
		"-c", "SELECT count(*) FROM t", "-c", "SELECT 1/0", "-c", "DELETE FROM approvals_t")
	var psqlOut bytes.Buffer
	psql.Stdout, psql.Stderr = &psqlOut, &psqlOut
	if err := psql.Start(); err != nil {
		t.Fatal(err)
	}
	defer psql.Process.Kill()
	req := s.pending(t, 1)[0]

	ctx, tctx := approverBrowser(t, base, token)
	page := func() string {
		body, _ := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("body")))
		return body
	}
	sec := `section.req[data-id="` + req.ID + `"]`
	if err := chromedp.Do(tctx, chromedp.WaitVisible(chromedp.CSS(sec))); err != nil {
		t.Fatalf("find the request: %v\npage: %s", err, page())
	}

	// What the agent did before it asked, most recent last. Results are
	// written within the store's linger: reload until both are there.
	var earlier []webRow
	lgtest.Eventually(t, 15*time.Second, "earlier commands on the pending request", func() bool {
		if err := chromedp.Do(tctx, chromedp.Navigate(base+"/ui/"), chromedp.WaitVisible(chromedp.CSS(sec))); err != nil {
			t.Fatalf("reload: %v", err)
		}
		earlier = webRows(t, tctx, sec+" .earlier tr.cmd")
		return len(earlier) == 2 && earlier[0].Result != "" && earlier[1].Err != ""
	})
	if earlier[0].Text != "SELECT count(*) FROM t" || earlier[0].Rows != "1" || earlier[0].Decision != "allow\nagent-app" {
		t.Errorf("first earlier command: %+v", earlier[0])
	}
	if earlier[1].Text != "SELECT 1/0" || !strings.Contains(earlier[1].Err, "division by zero") {
		t.Errorf("second earlier command: %+v", earlier[1])
	}
	sessionID, err := chromedp.Run(tctx, chromedp.Evaluate[string](`document.querySelector('`+sec+`').dataset.session`))
	if err != nil || sessionID == "" {
		t.Fatalf("session of the request: %q %v", sessionID, err)
	}

	t.Run("times are local with ago", func(t *testing.T) {
		checkLocalTimes(t, tctx, zone)
		for _, c := range []struct{ sel, re string }{
			{sec + " .asked .ago", `^\d+ s ago$|^\d+ min ago$`},
			{sec + " .expires .ago", `^in \d+ (s|min)$`},
			{sec + " .earlier tr.cmd .ago", `^\d+ (s|min) ago$`},
		} {
			got, err := chromedp.Run(tctx, chromedp.Text(chromedp.CSS(c.sel)))
			if err != nil || !regexp.MustCompile(c.re).MatchString(got) {
				t.Errorf("%s = %q (%v), want %s", c.sel, got, err, c.re)
			}
		}
	})

	shot, _ := chromedp.Run(tctx, chromedp.Screenshot(chromedp.CSS("body")))
	if dir := os.Getenv("LG_SCREENSHOTS"); dir != "" {
		os.WriteFile(filepath.Join(dir, "approvals.png"), shot, 0o644)
	}
	err = chromedp.Do(tctx,
		chromedp.SetValue(chromedp.CSS(sec+" input[name=reason]"), "looks fine"),
		chromedp.Click(chromedp.CSS(sec+" button.approve")),
		chromedp.WaitVisible(chromedp.CSS("#msg")))
	if err != nil {
		t.Fatalf("approve: %v\npage: %s", err, page())
	}
	msg, err := chromedp.Run(tctx, chromedp.Text(chromedp.CSS("#msg")))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(msg, req.ID+": approved") {
		t.Errorf("page says %q", msg)
	}
	psql.Wait()
	if n := s.pg.MustExecIn(t, "app", "SELECT count(*) FROM approvals_t"); n != "0" {
		t.Errorf("rows left after the approved delete: %s; psql said %s", n, psqlOut.String())
	}
	out, _ := s.cliAs(t, 0, "approvals", "list", "--state", "approved", "--json")
	if !strings.Contains(out, `"decided_by":"alice-web"`) || !strings.Contains(out, `"reason":"looks fine"`) {
		t.Errorf("recorded approval: %s", out)
	}

	t.Run("session filters", func(t *testing.T) {
		list := func(query string) []webSession {
			t.Helper()
			if err := chromedp.Do(tctx, chromedp.Navigate(base+"/ui/?"+query), chromedp.WaitVisible(chromedp.CSS("#filter"))); err != nil {
				t.Fatalf("filter %s: %v", query, err)
			}
			return webSessions(t, tctx)
		}
		// The agent's session ends once psql does (its end is queued).
		lgtest.Eventually(t, 15*time.Second, "the agent's session closed", func() bool {
			for _, x := range list("outcome=closed") {
				if x.ID == sessionID {
					return true
				}
			}
			return false
		})
		all := list("")
		if len(all) < 2 {
			t.Fatalf("sessions listed: %+v", all)
		}
		counts := map[string]int{}
		for _, c := range []struct{ query, field, want string }{
			{"workload=admin", "workload", "admin"},
			{"workload=agent", "workload", "agent"},
			{"target=appdb", "target", "appdb"},
			{"outcome=closed", "outcome", "closed"},
			{"workload=agent&outcome=closed&target=appdb", "workload", "agent"},
		} {
			got := list(c.query)
			if len(got) == 0 {
				t.Errorf("%s: no session listed", c.query)
			}
			for _, x := range got {
				if v := map[string]string{"workload": x.Workload, "target": x.Target, "outcome": x.Outcome}[c.field]; v != c.want {
					t.Errorf("%s lists %+v", c.query, x)
				}
			}
			counts[c.query] = len(got)
		}
		if counts["workload=admin"]+counts["workload=agent"] != len(all) || counts["target=appdb"] != len(all) {
			t.Errorf("filtered counts %v do not add up to the %d sessions", counts, len(all))
		}
		if got := list("target=nosuch"); len(got) != 0 {
			t.Errorf("unknown target lists %+v", got)
		}
		if txt, _ := chromedp.Run(tctx, chromedp.Text(chromedp.CSS("#no-sessions"))); txt != "No session matches." {
			t.Errorf("empty filter says %q", txt)
		}
		// By the form, as an approver does it: choosing a workload
		// applies the filter (SetValue fires the change event).
		err := chromedp.Do(tctx, chromedp.Navigate(base+"/ui/"), chromedp.WaitVisible(chromedp.CSS("#filter")),
			chromedp.SetValue(chromedp.CSS(`#filter select[name=workload]`), "admin"),
			chromedp.WaitVisible(chromedp.CSS("#clear")), chromedp.WaitReady(chromedp.CSS("#learned, #no-learned")))
		if err != nil {
			t.Fatalf("filter by the form: %v\npage: %s", err, page())
		}
		loc, _ := chromedp.Run(tctx, chromedp.Location())
		got := webSessions(t, tctx)
		if !strings.Contains(loc, "workload=admin") || len(got) != counts["workload=admin"] {
			t.Errorf("form filter at %s lists %+v", loc, got)
		}
		for _, x := range got {
			if !regexp.MustCompile(`^\d+ (s|min) ago$`).MatchString(x.Ago) {
				t.Errorf("session %s started %q", x.ID, x.Ago)
			}
		}
	})

	t.Run("session view joins commands and results", func(t *testing.T) {
		err := chromedp.Do(tctx, chromedp.Navigate(base+"/ui/sessions/"+sessionID), chromedp.WaitVisible(chromedp.CSS("#commands")))
		if err != nil {
			t.Fatalf("session view: %v\npage: %s", err, page())
		}
		rows := webRows(t, tctx, "#commands tr.cmd")
		byText := map[string]webRow{}
		for _, r := range rows {
			if r.Kind == "command" {
				if _, dup := byText[r.Text]; dup {
					t.Errorf("command %q on two lines: %+v", r.Text, rows)
				}
				byText[r.Text] = r
			}
		}
		durRe := regexp.MustCompile(`^[0-9.]+ (µs|ms|s)$`)
		sel := byText["SELECT count(*) FROM t"]
		if sel.Result != "SELECT 1" || sel.Rows != "1" || !durRe.MatchString(sel.Dur) || sel.Err != "" {
			t.Errorf("read line: %+v", sel)
		}
		bad := byText["SELECT 1/0"]
		if !strings.Contains(bad.Err, "division by zero") || !durRe.MatchString(bad.Dur) {
			t.Errorf("failed line: %+v", bad)
		}
		del := byText["DELETE FROM approvals_t"]
		if del.Result != "DELETE 2" || !strings.Contains(del.Decision, req.ID) || !durRe.MatchString(del.Dur) {
			t.Errorf("approved line: %+v", del)
		}
		// Every other event shows its kind: the connect decision and
		// the approval's states.
		kinds := map[string]int{}
		for _, r := range rows {
			kinds[r.Kind]++
		}
		if kinds["command"] != 3 || kinds["result"] != 0 || kinds["decision"] < 1 || kinds["approval"] < 2 {
			t.Errorf("lines by kind %v: %+v", kinds, rows)
		}
		decided := false
		for _, r := range rows {
			decided = decided || r.Kind == "approval" && strings.Contains(r.Text, "approved by alice-web") && strings.Contains(r.Text, "looks fine")
		}
		if !decided {
			t.Errorf("no line says who approved and why: %+v", rows)
		}
		facts, _ := chromedp.Run(tctx, chromedp.Text(chromedp.CSS("#facts")))
		if !strings.Contains(facts, "agent") || !strings.Contains(facts, "closed") || !strings.Contains(facts, "after") {
			t.Errorf("session facts: %s", facts)
		}
		checkLocalTimes(t, tctx, zone)
		shot, _ := chromedp.Run(tctx, chromedp.Screenshot(chromedp.CSS("body")))
		if dir := os.Getenv("LG_SCREENSHOTS"); dir != "" {
			os.WriteFile(filepath.Join(dir, "session.png"), shot, 0o644)
		}
	})
}

// approverBrowser starts headless Chromium in browserZone and signs in to
// the page at base with token. ctx is the browser's (no timeout, which
// chromedp's first run must not have); tctx is ctx with the test's timeout.
func approverBrowser(t *testing.T, base, token string) (ctx, tctx context.Context) {
	t.Helper()
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		lgtest.Unavailable(t, "chromium not installed (apt-get install chromium)")
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium), chromedp.NoSandbox,
		chromedp.DisableGPU, chromedp.Flag("disable-background-networking", true), chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true), chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(t.TempDir()), chromedp.Env("TZ="+browserZone), chromedp.WindowSize(1280, 900))
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	t.Cleanup(cancel)
	ctx, cancel = chromedp.NewContext(actx)
	t.Cleanup(cancel)
	// The first Run starts the browser: no timeout on it (chromedp's rule).
	if err := chromedp.Do(ctx, chromedp.Navigate(base+"/ui/")); err != nil {
		t.Fatalf("chromium: %v", err)
	}
	tctx, cancel = context.WithTimeout(ctx, 90*time.Second)
	t.Cleanup(cancel)
	err = chromedp.Do(tctx,
		chromedp.WaitVisible(chromedp.CSS("#token")),
		chromedp.SetValue(chromedp.CSS("#token"), token),
		chromedp.Click(chromedp.CSS("#signin")),
		chromedp.WaitVisible(chromedp.CSS("#filter")),
	)
	if err != nil {
		body, _ := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("body")))
		t.Fatalf("sign in: %v\npage: %s", err, body)
	}
	return ctx, tctx
}

// webRow is a command line as the page shows it.
type webRow struct {
	Kind, Text, Decision, Result, Rows, Bytes, Dur, Err, Ago string
}

func webRows(t *testing.T, ctx context.Context, sel string) []webRow {
	t.Helper()
	rows, err := chromedp.Run(ctx, chromedp.Evaluate[[]webRow](`Array.from(document.querySelectorAll(`+strconv.Quote(sel)+`)).map(function (tr) {
		function c(s) { var e = tr.querySelector(s); return e ? e.innerText.trim() : ''; }
		return {Kind: tr.dataset.kind, Text: c('td.text code'), Decision: c('td.dec'), Result: c('td.result'), Rows: c('td.rows'),
			Bytes: c('td.bytes'), Dur: c('td.dur'), Err: c('td.err'), Ago: c('td.t .ago')};
	})`))
	if err != nil {
		t.Fatalf("rows %s: %v", sel, err)
	}
	return rows
}

// webSession is a line of the session list.
type webSession struct {
	ID, Workload, Target, Outcome, Ago string
}

func webSessions(t *testing.T, ctx context.Context) []webSession {
	t.Helper()
	rows, err := chromedp.Run(ctx, chromedp.Evaluate[[]webSession](`Array.from(document.querySelectorAll('#sessions tr.session')).map(function (tr) {
		return {ID: tr.dataset.id, Workload: tr.dataset.workload, Target: tr.dataset.target, Outcome: tr.dataset.outcome,
			Ago: tr.querySelector('.ago').textContent};
	})`))
	if err != nil {
		t.Fatalf("session list: %v", err)
	}
	return rows
}

// checkLocalTimes checks that the page shows every time in the browser's
// zone, as the same instant the server wrote in UTC, and says which zone.
func checkLocalTimes(t *testing.T, ctx context.Context, zone *time.Location) {
	t.Helper()
	times, err := chromedp.Run(ctx, chromedp.Evaluate[[][2]string](`Array.from(document.querySelectorAll('time[datetime]')).map(function (e) {
		return [e.getAttribute('datetime'), e.textContent];
	})`))
	if err != nil || len(times) == 0 {
		t.Fatalf("times on the page: %v %v", times, err)
	}
	for _, tt := range times {
		at, err := time.Parse(time.RFC3339Nano, tt[0])
		if err != nil {
			t.Fatalf("datetime %q: %v", tt[0], err)
		}
		if want := at.In(zone).Format("2006-01-02 15:04:05"); tt[1] != want {
			t.Errorf("time %s shown as %q, want %q (%s)", tt[0], tt[1], want, zone)
		}
	}
	tz, _ := chromedp.Run(ctx, chromedp.Text(chromedp.CSS("#tz")))
	// ICU may name the zone by an older alias (Asia/Calcutta).
	if !strings.HasPrefix(tz, "Times are local (") || !strings.Contains(tz, "UTC+05:30") {
		t.Errorf("zone note %q", tz)
	}
}

// TestWebSessionViewSSH: the session view shows a real ssh exec through
// loopgate on one line (the command, its exit status, bytes and duration)
// and a real terminal as one line linking its .cast file, which the page's
// player plays (paused, resumed faster) to the screen the terminal showed:
// a resize, a clear, and lines drawn with CR, BS, erase, cursor moves and
// colour.
func TestWebSessionViewSSH(t *testing.T) {
	if _, err := exec.LookPath("chromium"); err != nil {
		lgtest.Unavailable(t, "chromium not installed (apt-get install chromium)")
	}
	is := lgtest.StartIssuer(t)
	s := newSSHSetup(t)
	apiPort := strconv.Itoa(lgtest.FreePort(t))
	text, _ := os.ReadFile(s.cfg)
	cfg := string(text)
	for _, r := range []struct{ old, new string }{
		{"api: {socket: ", "oidc:\n  - {issuer: \"" + is.URL + "\", audience: loopgate}\napi: {listen: \"127.0.0.1:" + apiPort + "\", socket: "},
		{"  - {name: root, uid: 0}\n", "  - {name: root, uid: 0}\n  - {name: alice-web, oidc_subject: alice}\n"},
	} {
		if !strings.Contains(cfg, r.old) {
			t.Fatalf("the ssh setup's config has no %q:\n%s", r.old, cfg)
		}
		cfg = strings.Replace(cfg, r.old, r.new, 1)
	}
	os.WriteFile(s.cfg, []byte(cfg), 0o600)
	s.daemon.Stop(syscall.SIGTERM)
	s.daemon.Restart()
	const command = "echo hello; exit 7"
	if out, stderr, code := s.ssh(t, "admin", nil, nil, command); code != 7 || out != "hello\n" {
		t.Fatalf("ssh: code %d out %q err %q", code, out, stderr)
	}
	// And a terminal, recorded as a cast.
	args := append([]string{"run", "--config", s.cfg, "--workload", "admin", "--user", "nobody", "--", "ssh"}, s.sshArgs()...)
	cmd := exec.Command(lgtest.Binary(t), append(args, "-tt", "-p", s.port, "deploy@127.0.0.1")...)
	cmd.Env = []string{"TERM=xterm", "PATH=/usr/bin:/bin"}
	ptmx, err := pty.StartWithSize(cmd, &pty.Winsize{Cols: 80, Rows: 24})
	if err != nil {
		t.Fatal(err)
	}
	defer ptmx.Close()
	var screen lockedBuffer
	go io.Copy(&screen, ptmx)
	// Each line waits for what it prints, as the terminal shows it (raw
	// bytes, which the echo of the typed line never matches), and the
	// next prompt, so that no line is typed (and echoed) ahead.
	for _, c := range []struct{ line, shows string }{
		{"echo OLD$((0+1))", "OLD1\r\n$ "},
		{"resize", "30 100"},
		{`printf '\033[H\033[2J'`, "\x1b[H\x1b[2J$ "},
		{`printf 'AAAA\rBB\nxyz\b\bQ\ngone\033[2K\rkept\n'`, "\x1b[2K\rkept\r\n$ "},
		{`printf 'ab\033[3Ccd\none\ntwo\033[1A\033[2Dxx\n\n\033[31mRED\033[0m\n'`, "\x1b[31mRED\x1b[0m\r\n$ "},
		{"echo M$((3+4))K", "M7K\r\n$ "},
	} {
		if c.line != "resize" {
			ptmx.WriteString(c.line + "\r")
			lgtest.Eventually(t, 20*time.Second, c.shows+" on the terminal", func() bool { return strings.Contains(screen.String(), c.shows) })
			continue
		}
		if err := pty.Setsize(ptmx, &pty.Winsize{Cols: 100, Rows: 30}); err != nil {
			t.Fatal(err)
		}
		lgtest.Eventually(t, 20*time.Second, "the new size upstream", func() bool {
			ptmx.WriteString("stty size\r")
			time.Sleep(200 * time.Millisecond)
			return strings.Contains(screen.String(), c.shows)
		})
	}
	ptmx.WriteString("exit\r")
	if err := cmd.Wait(); err != nil {
		t.Fatalf("ssh -tt: %v\n%s", err, screen.String())
	}
	base := "http://127.0.0.1:" + apiPort
	_, tctx := approverBrowser(t, base, is.Token(t, lgtest.Claims{Subject: "alice", Audience: "loopgate-api"}))
	var line webRow
	var castURL, castSession string
	// The exec's result is written within the store's linger.
	lgtest.Eventually(t, 15*time.Second, "the exec on one line with its exit status, and the terminal's cast", func() bool {
		if err := chromedp.Do(tctx, chromedp.Navigate(base+"/ui/?target=box"), chromedp.WaitVisible(chromedp.CSS("#filter"))); err != nil {
			t.Fatalf("sessions: %v", err)
		}
		for _, x := range webSessions(t, tctx) {
			if err := chromedp.Do(tctx, chromedp.Navigate(base+"/ui/sessions/"+x.ID), chromedp.WaitVisible(chromedp.CSS("#facts"))); err != nil {
				t.Fatalf("session view: %v", err)
			}
			for _, r := range webRows(t, tctx, "#commands tr.cmd") {
				if r.Kind == "command" && r.Text == command && r.Result != "" {
					line = r
				}
			}
			if href, err := chromedp.Run(tctx, chromedp.Evaluate[string](`(document.querySelector('#commands a.cast') || {}).href || ''`)); err == nil && href != "" {
				castURL, castSession = href, x.ID
			}
		}
		return line.Text != "" && castURL != ""
	})
	// The terminal is one line whose link is its .cast file.
	cast, err := chromedp.Run(tctx, chromedp.Evaluate[string](`fetch(`+strconv.Quote(castURL)+`).then(function (r) { return r.text(); })`,
		chromedp.EvalAwaitPromise))
	if err != nil || !strings.Contains(strings.SplitN(cast, "\n", 2)[0], `"version":2`) || !strings.Contains(cast, "M7K") {
		t.Errorf("cast at %s: %v\n%s", castURL, err, cast)
	}
	head, _ := chromedp.Run(tctx, chromedp.Text(chromedp.CSS("#commands tr:first-child")))
	if line.Result != "exit 7" || !strings.Contains(head, "Result") || !strings.HasPrefix(line.Decision, "allow") ||
		!regexp.MustCompile(`^[0-9.]+ (B|KiB)$`).MatchString(line.Bytes) || !regexp.MustCompile(`^[0-9.]+ (µs|ms|s)$`).MatchString(line.Dur) {
		t.Errorf("exec line %+v under %q", line, head)
	}
	if dir := os.Getenv("LG_SCREENSHOTS"); dir != "" {
		shot, _ := chromedp.Run(tctx, chromedp.Screenshot(chromedp.CSS("body")))
		os.WriteFile(filepath.Join(dir, "session-ssh.png"), shot, 0o644)
	}
	t.Run("player", func(t *testing.T) { playCast(t, tctx, base+"/ui/sessions/"+castSession) })
}
