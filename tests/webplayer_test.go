package tests

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/google/go-cmp/cmp"

	"github.com/loopgate/loopgate/api"
	"github.com/loopgate/loopgate/policy"
	"github.com/loopgate/loopgate/store"
	"github.com/loopgate/loopgate/store/event"
	"github.com/loopgate/loopgate/tests/lgtest"
)

// TestWebCastPlayer: the session view's player, in a real headless
// Chromium, draws each recording to the screen a terminal (xterm) shows
// for it. The page is served by the api package over a store holding the
// recordings: the terminal emulation is the page's, whatever recorded it.
func TestWebCastPlayer(t *testing.T) {
	if _, err := exec.LookPath("chromium"); err != nil {
		lgtest.Unavailable(t, "chromium not installed (apt-get install chromium)")
	}
	type span struct{ Class, Text string }
	cases := []struct {
		name   string
		header string // "": width and height
		width  int
		height int
		lines  []string // event lines after the header; "": out then resize
		out    string
		resize string
		want   []string // the screen's lines, trailing spaces cut
		spans  []span   // the coloured runs, if checked
		state  string   // "": ended
	}{
		{name: "wrap deferred to the next character", width: 10, height: 3, out: "0123456789\r\nabcdefghijKL",
			want: []string{"0123456789", "abcdefghij", "KL"}},
		{name: "scroll", width: 10, height: 2, out: "1\r\n2\r\n3", want: []string{"2", "3"}},
		{name: "CR BS TAB", width: 20, height: 1, out: "abc\rX\bY\tZ", want: []string{"Ybc     Z"}},
		{name: "erase", width: 10, height: 3, out: "aaaa\r\nbbbb\r\ncccc\x1b[2;3H\x1b[1K\x1b[3;2H\x1b[K\x1b[1;2H\x1b[2X",
			want: []string{"a  a", "   b", "c"}},
		{name: "cursor moves", width: 10, height: 3, out: "\x1b[3;5Hx\x1b[2Ay\x1b[Dz\x1b[Bw\x1b[10Cq\x1b[Gr",
			want: []string{"     z", "r     w  q", "    x"}},
		{name: "insert and delete characters", width: 10, height: 1, out: "abcdef\x1b[1;3H\x1b[2P\x1b[2@XY", want: []string{"abXYef"}},
		{name: "insert and delete lines", width: 5, height: 4, out: "1\r\n2\r\n3\r\n4\x1b[2;1H\x1b[LN\x1b[4;1H\x1b[M",
			want: []string{"1", "N", "2", ""}},
		{name: "scroll region", width: 5, height: 4, out: "top\r\nA\r\nB\r\nbot\x1b[2;3r\x1b[3;1H\n\nZ",
			want: []string{"top", "", "Z", "bot"}},
		{name: "alternate screen", width: 10, height: 2, out: "main\x1b[?1049h\x1b[HALT\x1b[?1049l", want: []string{"main", ""}},
		{name: "titles charsets and modes dropped", width: 20, height: 1,
			out: "\x1b]0;title\x07a\x1b(Bb\x1b[?2004hc\x1b[>4;1md\x1bP+q\x1b\\e", want: []string{"abcde"}},
		{name: "colours", width: 20, height: 1, out: "\x1b[1;31mR\x1b[0m-\x1b[38;5;4mB\x1b[7mI", want: []string{"R-BI"},
			spans: []span{{"f1 bold", "R"}, {"f4", "B"}, {"f4 inv", "I"}}},
		{name: "UTF-8", width: 10, height: 1, out: "héllo ✓😀x", want: []string{"héllo ✓😀x"}},
		{name: "resize keeps the cursor's lines", width: 10, height: 3, out: "1\r\n2\r\n3", resize: "4x2", want: []string{"2", "3"}},
		{name: "bad event lines skipped", width: 10, height: 1,
			lines: []string{`[bad`, `{"x":1}`, `[0.1,"o"]`, `[0.2,"o","ok"]`, `[0.3,"r","huge"]`}, want: []string{"ok"}},
		{name: "bad header", header: "nonsense", lines: []string{`[0.1,"o","x"]`}, state: "error"},
	}
	// One session holds every recording, "cast 1" to "cast N".
	ctx := context.Background()
	db, err := store.OpenWith(ctx, filepath.Join(t.TempDir(), "loopgate.db"), store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	start := time.Now()
	if err := db.OpenSession(ctx, event.Session{ID: "s-casts", Workload: "admin", Target: "box", Protocol: "ssh", Started: start}); err != nil {
		t.Fatal(err)
	}
	for i, tc := range cases {
		lines := tc.lines
		if lines == nil {
			o, _ := json.Marshal(tc.out)
			lines = []string{`[0.01,"o",` + string(o) + `]`}
			if tc.resize != "" {
				lines = append(lines, `[0.02,"r","`+tc.resize+`"]`)
			}
		}
		header := tc.header
		if header == "" {
			b, _ := json.Marshal(map[string]int{"version": 2, "width": tc.width, "height": tc.height})
			header = string(b)
		}
		e := event.Event{SessionID: "s-casts", Time: start, Kind: event.KindCast, Text: "cast " + strconv.Itoa(i+1),
			Params: header + "\n" + strings.Join(lines, "\n") + "\n"}
		if err := db.AppendEvents(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	is := lgtest.StartIssuer(t)
	cfg, err := policy.Parse("c.yaml", []byte("oidc:\n  - {issuer: \""+is.URL+"\", audience: loopgate}\n"+
		"approvers:\n  - {name: alice-web, oidc_subject: alice}\n"))
	if err != nil {
		t.Fatal(err)
	}
	srv := &api.Server{Broker: &policy.Broker{Policy: func() *policy.Config { return cfg }, Timeout: time.Minute},
		Store: db, Policy: func() *policy.Config { return cfg },
		Verifier: policy.NewVerifier([]policy.Issuer{{URL: is.URL, Audience: "loopgate-api"}}, nil)}
	hs := httptest.NewServer(srv.Handler())
	defer hs.Close()
	_, tctx := approverBrowser(t, hs.URL, is.Token(t, lgtest.Claims{Subject: "alice", Audience: "loopgate-api"}))

	// Play them all at once; the first twice, which starts it over.
	err = chromedp.Do(tctx, chromedp.Navigate(hs.URL+"/ui/sessions/s-casts"), chromedp.WaitVisible(chromedp.CSS("#commands button.play")),
		chromedp.Click(chromedp.CSS("#commands button.play")),
		chromedp.Evaluate[chromedp.Void](`document.querySelectorAll('#commands button.play').forEach(function (b) { b.click(); })`))
	if err != nil {
		t.Fatalf("play: %v", err)
	}
	type screen struct {
		Name, State, Status, Cols, Rows string
		Lines                           []string
		Spans                           []span
	}
	var got map[string]screen
	lgtest.Eventually(t, 60*time.Second, "every recording played", func() bool {
		list, err := chromedp.Run(tctx, chromedp.Evaluate[[]screen](`Array.from(document.querySelectorAll('#commands tr.player')).map(function (r) {
			var pre = r.querySelector('pre.term'), src = r.previousElementSibling.querySelector('button.play').dataset.src;
			return {Name: new URL(src, location.href).searchParams.get('name'), State: r.dataset.state,
				Status: r.querySelector('.status').textContent, Cols: pre.dataset.cols || '', Rows: pre.dataset.rows || '',
				Lines: pre.textContent.split('\n').map(function (l) { return l.replace(/ +$/, ''); }),
				Spans: Array.from(pre.querySelectorAll('span')).filter(function (s) { return !s.classList.contains('cur'); })
					.map(function (s) { return {Class: s.className, Text: s.textContent}; })};
		})`))
		if err != nil {
			t.Fatalf("players: %v", err)
		}
		got = map[string]screen{}
		for _, x := range list {
			if x.State != "ended" && x.State != "error" {
				return false
			}
			if _, dup := got[x.Name]; dup {
				t.Fatalf("two players for %s", x.Name)
			}
			got[x.Name] = x
		}
		return len(got) == len(cases)
	})
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			x := got["cast "+strconv.Itoa(i+1)]
			want := tc.state
			if want == "" {
				want = "ended"
			}
			if x.State != want {
				t.Fatalf("state %s (%s), want %s", x.State, x.Status, want)
			}
			if x.State == "error" {
				if !strings.HasPrefix(x.Status, "cannot play: ") {
					t.Errorf("error says %q", x.Status)
				}
				return
			}
			if diff := cmp.Diff(tc.want, x.Lines); diff != "" {
				t.Errorf("screen (-want +got):\n%s", diff)
			}
			if tc.resize != "" && x.Cols+"x"+x.Rows != tc.resize || tc.resize == "" && x.Cols != strconv.Itoa(tc.width) {
				t.Errorf("screen %sx%s", x.Cols, x.Rows)
			}
			if tc.spans != nil {
				if diff := cmp.Diff(tc.spans, x.Spans); diff != "" {
					t.Errorf("coloured runs (-want +got):\n%s", diff)
				}
			}
		})
	}
}

// player is the page's cast player as the page shows it.
type player struct {
	State, Status, Text, Cols, Rows string
	Red                             []string // text in red
}

// playCast plays the session view's terminal: paused as soon as it
// starts, then resumed at 8× to its end, where it shows the terminal's
// last screen (TestWebSessionViewSSH's lines).
func playCast(t *testing.T, ctx context.Context, view string) {
	read := func() player {
		t.Helper()
		p, err := chromedp.Run(ctx, chromedp.Evaluate[player](`(function () {
			var r = document.querySelector('#commands tr.player');
			if (!r) { return {}; }
			var pre = r.querySelector('pre.term');
			return {State: r.dataset.state, Status: r.querySelector('.status').textContent, Text: pre.textContent,
				Cols: pre.dataset.cols || '', Rows: pre.dataset.rows || '',
				Red: Array.from(pre.querySelectorAll('span.f1')).map(function (s) { return s.textContent; })};
		})()`))
		if err != nil {
			t.Fatalf("player: %v", err)
		}
		return p
	}
	wait := func(what string, states ...string) player {
		t.Helper()
		var p player
		lgtest.Eventually(t, 60*time.Second, what, func() bool {
			p = read()
			return slices.Contains(states, p.State) || p.State == "error"
		})
		if p.State == "error" {
			t.Fatalf("player: %s", p.Status)
		}
		return p
	}
	err := chromedp.Do(ctx, chromedp.Navigate(view), chromedp.WaitVisible(chromedp.CSS("#commands a.cast")),
		chromedp.Click(chromedp.CSS("#commands button.play")), chromedp.Click(chromedp.CSS("#commands tr.player button.pause")))
	if err != nil {
		t.Fatalf("play: %v", err)
	}
	// Pausing is quicker than the recording, unless the browser stalls
	// for seconds between the clicks.
	if p := wait("the player paused", "paused", "ended"); p.State == "paused" {
		if !strings.HasPrefix(p.Status, "paused at ") || strings.Contains(p.Text, "M7K") {
			t.Errorf("paused player says %q and shows %q", p.Status, p.Text)
		}
		err := chromedp.Do(ctx, chromedp.SetValue(chromedp.CSS("#commands tr.player select.speed"), "8"),
			chromedp.Click(chromedp.CSS("#commands tr.player button.pause")))
		if err != nil {
			t.Fatalf("resume: %v", err)
		}
	} else {
		t.Logf("the recording ended before the pause")
	}
	p := wait("the recording played to its end", "ended")
	// The screen is the terminal's last: resized to 100x30 and cleared,
	// then each printf's lines as the shell drew them.
	lines := strings.Split(p.Text, "\n")
	if p.Cols != "100" || p.Rows != "30" || len(lines) != 30 || len(lines[0]) != 100 {
		t.Errorf("screen %sx%s of %d lines (the first %d long), want 100x30", p.Cols, p.Rows, len(lines), len(lines[0]))
	}
	at := -1
	for _, want := range []string{"BBAA", "xQz", "kept", "ab   cd", "oxx", "two", "RED", "M7K"} {
		i := slices.IndexFunc(lines, func(l string) bool { return strings.TrimRight(l, " ") == want })
		if i <= at {
			t.Errorf("line %q at %d, after line %d:\n%s", want, i, at, p.Text)
		}
		at = max(at, i)
	}
	if strings.Contains(p.Text, "OLD1") || strings.Contains(p.Text, "30 100") || !slices.Contains(p.Red, "RED") {
		t.Errorf("screen not cleared, or RED not red (%q):\n%s", p.Red, p.Text)
	}
	if dir := os.Getenv("LG_SCREENSHOTS"); dir != "" {
		shot, _ := chromedp.Run(ctx, chromedp.Screenshot(chromedp.CSS("#commands")))
		os.WriteFile(filepath.Join(dir, "session-ssh-player.png"), shot, 0o644)
	}
}
