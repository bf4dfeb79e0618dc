package tests

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/loopgate/loopgate/tests/lgtest"
)

// httpSetup is one daemon in front of the Go TLS target (api), nginx's git
// repository (git) and nginx's second port spliced (spliced).
type httpSetup struct {
	cfg, socket, name, dir string
	api                    *apiServer
	plain                  *plainServer
	ngx                    *nginx
	apiToken               string
	daemon                 *lgtest.Daemon
}

const pyPython = "/usr/bin/python3" // Debian's, with python3-requests and python3-httpx

func newHTTPSetup(t *testing.T) *httpSetup {
	t.Helper()
	lgtest.RequireRoot(t)
	for _, bin := range []string{"curl", "git", "node", pyPython} {
		if _, err := exec.LookPath(bin); err != nil {
			lgtest.Unavailable(t, "%s not installed (scripts/deps.sh)", bin)
		}
	}
	if out, err := exec.Command(pyPython, "-c", "import requests, httpx").CombinedOutput(); err != nil {
		lgtest.Unavailable(t, "python3-requests/httpx: %v %s", err, out)
	}
	s := &httpSetup{dir: t.TempDir(), apiToken: "tok-" + strconv.FormatInt(time.Now().UnixNano(), 36)}
	s.name = lgtest.HostsEntry(t, "127.0.0.1")
	s.api = startAPIServer(t, s.name)
	s.ngx = startNginx(t, s.name)
	s.plain = startPlainServer(t)
	write := func(name string, b []byte) string {
		p := filepath.Join(s.dir, name)
		os.WriteFile(p, b, 0o600)
		return p
	}
	ngxCA := filepath.Join(lgtest.SharedDir(t), "nginx-ca.pem")
	os.WriteFile(ngxCA, s.ngx.CA.PEM, 0o644)
	s.ngx.CAFile = ngxCA
	apiCA, apiTok, gitTok := write("api-ca.pem", s.api.CA.PEM), write("api.token", []byte(s.apiToken+"\n")), write("git.token", []byte(s.ngx.GitToken))
	s.socket = filepath.Join(lgtest.SharedDir(t), "api.sock")
	s.cfg = lgtest.WriteConfig(t, fmt.Sprintf(`listen: 127.0.0.1:%d
store: %s
bpffs: %s
daemon_cgroup: %s
api: {socket: %s}
approvals: {timeout: 60s, http_wait: 1s}
approvers:
  - {name: root, uid: 0}
masks:
  - {name: emails, paths: ["$.items[*].email"]}
  - {name: detect, detect: email}
targets:
  - {name: api, protocol: http, address: "127.0.0.1:%d", tls: {ca_file: %s}, credentials: {password_file: %s}, placeholders: [API_TOKEN]}
  - {name: git, protocol: http, address: "127.0.0.1:%d", tls: {ca_file: %s}, credentials: {scheme: basic, password_file: %s}}
  - {name: spliced, protocol: http, address: "127.0.0.1:%d", tls: passthrough}
  - {name: plain, protocol: http, address: "127.0.0.1:%d", credentials: {scheme: raw, header: x-api-key, password_file: %s}}
workloads:
  - {name: agent, cgroup: %s}
rules:
  - id: api
    workloads: [agent]
    targets: [api]
    allow: [read]
    approve: [write]
    deny: [delete]
    mask: [emails, detect]
    approvers: [root]
    requests:
      deny: ["* /admin/**"]
  - {id: git, workloads: [agent], targets: [git], allow: [read, write]}
  - {id: spliced, workloads: [agent], targets: [spliced], allow: [connect]}
  - {id: plain, workloads: [agent], targets: [plain], allow: [read]}
`, lgtest.FreePort(t), filepath.Join(s.dir, "state", "lg.db"), lgtest.PinDir(t), lgtest.CgroupName(t)+"-daemon", s.socket,
		s.api.Port, apiCA, apiTok, s.ngx.Port, s.ngx.CAFile, gitTok, s.ngx.PassPort, s.plain.Port, apiTok, lgtest.CgroupName(t)))
	s.daemon = lgtest.StartDaemon(t, s.cfg)
	return s
}

// run runs args as nobody in the agent workload.
func (s *httpSetup) run(t *testing.T, env []string, args ...string) (string, string, int) {
	t.Helper()
	return lgtest.Run(t, s.cfg, "agent", env, []string{"--user", "nobody"}, args...)
}

func (s *httpSetup) url(port int, path string) string {
	return "https://" + s.name + ":" + strconv.Itoa(port) + path
}

// exportedEvent is an event as `loopgate sessions export` prints it.
type exportedEvent struct {
	Session, Target, Kind, Text, Params, Decision, Tag, Error string
	RuleID                                                    string `json:"rule_id"`
	ApprovalID                                                string `json:"approval_id"`
	Bytes                                                     int64
}

func (s *httpSetup) events(t *testing.T) []exportedEvent {
	t.Helper()
	out, err := exec.Command(lgtest.Binary(t), "sessions", "export", "--config", s.cfg, "--format", "jsonl").Output()
	if err != nil {
		t.Fatalf("sessions export: %v", err)
	}
	var evs []exportedEvent
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		var e exportedEvent
		if json.Unmarshal([]byte(line), &e) == nil {
			evs = append(evs, e)
		}
	}
	return evs
}

// waitEvent waits until an exported event satisfies match.
func (s *httpSetup) waitEvent(t *testing.T, what string, match func(exportedEvent) bool) exportedEvent {
	t.Helper()
	var found exportedEvent
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		for _, e := range s.events(t) {
			if match(e) {
				return e
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, e := range s.events(t) {
		t.Logf("event: %+v", e)
	}
	lgtest.Eventually(t, time.Millisecond, what, func() bool {
		for _, e := range s.events(t) {
			if match(e) {
				found = e
				return true
			}
		}
		return false
	})
	return found
}

func TestHTTP(t *testing.T) {
	s := newHTTPSetup(t)
	curl := func(t *testing.T, args ...string) (string, string, int) {
		t.Helper()
		return s.run(t, nil, append([]string{"curl", "-sS", "--max-time", "20"}, args...)...)
	}

	t.Run("curl GET allowed, bearer injected, agent holds only the placeholder", func(t *testing.T) {
		out, stderr, code := s.run(t, nil, "sh", "-c",
			`echo "env=$API_TOKEN"; curl -sS --max-time 20 -D - -H "Authorization: Bearer $API_TOKEN" `+s.url(s.api.Port, "/hello"))
		if code != 0 || !strings.Contains(out, "env=loopgate-placeholder") || !strings.Contains(out, `"path":"/hello"`) || !strings.Contains(out, `"proto":"HTTP/2.0"`) {
			t.Fatalf("code %d out %q err %q", code, out, stderr)
		}
		if strings.Contains(strings.ToLower(out), "alt-svc") {
			t.Errorf("Alt-Svc reached the agent: %q", out)
		}
		if auth := s.api.Auth(); len(auth) == 0 || auth[len(auth)-1] != "Bearer "+s.apiToken {
			t.Errorf("server saw %q", auth)
		}
		if strings.Contains(out, s.apiToken) {
			t.Error("the agent saw the real token")
		}
	})

	t.Run("DELETE denied with a JSON reason", func(t *testing.T) {
		out, _, code := curl(t, "-X", "DELETE", "-w", "\n%{http_code}", s.url(s.api.Port, "/items/1"))
		if code != 0 || !strings.HasSuffix(out, "\n403") || !strings.Contains(out, `"error":"loopgate: delete denied by rule api"`) {
			t.Errorf("code %d out %q", code, out)
		}
	})

	t.Run("path evasions refused", func(t *testing.T) {
		for path, want := range map[string]string{
			"/a/%2e%2e/admin/x": "400", "/admin%2fx": "400", "/a/..%2fadmin/x": "400", "/admin;x/y": "400",
			"/a/../admin/x": "403", "//admin/x": "403", "/ADMIN/../admin/x": "403",
		} {
			out, _, code := curl(t, "--path-as-is", "-o", "/dev/null", "-w", "%{http_code}", s.url(s.api.Port, path))
			if code != 0 || out != want {
				t.Errorf("%s: code %d status %q, want %s", path, code, out, want)
			}
		}
		for _, r := range s.api.Reached() {
			if strings.Contains(r, "admin") {
				t.Errorf("an evasion reached the server: %s", r)
			}
		}
	})

	t.Run("the agent's own credential is refused; Host must be the SNI", func(t *testing.T) {
		out, _, code := curl(t, "-H", "Authorization: Bearer sk-agent-brought-this-0123456789abcdef",
			"-o", "/dev/null", "-w", "%{http_code}", s.url(s.api.Port, "/hello"))
		if code != 0 || out != "403" {
			t.Errorf("own bearer: code %d status %q, want 403", code, out)
		}
		out, _, code = curl(t, "-H", "Authorization: Bearer "+s.apiToken, "-o", "/dev/null", "-w", "%{http_code}", s.url(s.api.Port, "/hello"))
		if code != 0 || out != "403" {
			t.Errorf("the real token: code %d status %q, want 403", code, out)
		}
		out, _, code = curl(t, "--http1.1", "-H", "Host: other.example", "-o", "/dev/null", "-w", "%{http_code}", s.url(s.api.Port, "/hello"))
		if code != 0 || out != "421" {
			t.Errorf("Host other than the SNI: code %d status %q, want 421", code, out)
		}
		for _, a := range s.api.Auth() {
			if strings.Contains(a, "sk-agent-brought-this") {
				t.Errorf("the agent's own credential reached the server: %q", a)
			}
		}
	})

	t.Run("SNI that does not resolve to the address dialled is refused", func(t *testing.T) {
		other := lgtest.HostsEntry(t, "127.0.0.7")
		_, stderr, code := curl(t, "--resolve", other+":"+strconv.Itoa(s.api.Port)+":127.0.0.1", "https://"+other+":"+strconv.Itoa(s.api.Port)+"/hello")
		if code == 0 {
			t.Fatalf("SNI %s accepted: %s", other, stderr)
		}
		s.waitEvent(t, "SNI refusal recorded", func(e exportedEvent) bool {
			return e.Decision == "deny" && strings.Contains(e.Text, "TLS "+other) && strings.Contains(e.Error, "does not resolve")
		})
	})

	t.Run("a client pinning its own roots fails and is recorded", func(t *testing.T) {
		_, _, code := curl(t, "--cacert", s.ngx.CAFile, s.url(s.api.Port, "/hello"))
		if code == 0 {
			t.Fatal("curl with its own roots accepted loopgate's leaf")
		}
		s.waitEvent(t, "handshake failure recorded", func(e exportedEvent) bool {
			return e.Kind == "note" && strings.Contains(e.Text, "tls handshake failed for "+s.name)
		})
	})

	t.Run("python requests POST held, approved from the CLI, retry passes", func(t *testing.T) {
		script := `import os, sys, json, requests
r = requests.post(sys.argv[1], json={"sha": "abc"}, headers={"Authorization": "Bearer " + os.environ["API_TOKEN"]}, timeout=30)
print(json.dumps({"status": r.status_code, "body": r.json(), "retry_after": r.headers.get("Retry-After")}))`
		type pyOut struct {
			Status     int
			Body       map[string]string
			RetryAfter string `json:"retry_after"`
		}
		post := func() pyOut {
			out, stderr, code := s.run(t, nil, pyPython, "-c", script, s.url(s.api.Port, "/repos/x/merges"))
			var o pyOut
			if code != 0 || json.Unmarshal([]byte(out), &o) != nil {
				t.Fatalf("python: code %d out %q err %q", code, out, stderr)
			}
			return o
		}
		first := post()
		id := first.Body["approval"]
		if first.Status != 403 || first.Body["state"] != "pending" || id == "" || first.RetryAfter == "" {
			t.Fatalf("first try: %+v", first)
		}
		out, err := exec.Command(lgtest.Binary(t), "approvals", "approve", id, "--config", s.cfg, "--socket", s.socket, "--reason", "merge ok").CombinedOutput()
		if err != nil {
			t.Fatalf("approve: %v %s", err, out)
		}
		if retry := post(); retry.Status != 200 || retry.Body["method"] != "POST" {
			t.Fatalf("retry: %+v", retry)
		}
		s.waitEvent(t, "approved POST recorded with its approval", func(e exportedEvent) bool {
			return e.Kind == "command" && e.Decision == "allow" && e.ApprovalID == id &&
				strings.HasPrefix(e.Text, "POST /repos/x/merges\n\nContent-Type: application/json\n\n{\"sha\":\"abc\"}")
		})
	})

	t.Run("python httpx and node fetch; JSON masked across a 10 MB response", func(t *testing.T) {
		py := `import os, sys, httpx
r = httpx.get(sys.argv[1], headers={"Authorization": "Bearer " + os.environ["API_TOKEN"]}, timeout=30)
print(r.status_code, r.http_version, r.json()["path"])`
		if out, stderr, code := s.run(t, nil, pyPython, "-c", py, s.url(s.api.Port, "/httpx")); code != 0 || strings.TrimSpace(out) != "200 HTTP/1.1 /httpx" {
			t.Errorf("httpx: code %d out %q err %q", code, out, stderr)
		}
		js := `const r = await fetch(process.argv[1]); const t = await r.text(); const j = JSON.parse(t);
console.log(JSON.stringify({status: r.status, items: j.items.length, leaked: (t.match(/@example\.com/g) || []).length, bytes: t.length}));`
		out, stderr, code := s.run(t, nil, "node", "--input-type=module", "-e", js, s.url(s.api.Port, "/big"))
		var res struct{ Status, Items, Leaked, Bytes int }
		if code != 0 || json.Unmarshal([]byte(out), &res) != nil {
			t.Fatalf("node: code %d out %q err %q", code, out, stderr)
		}
		if res.Status != 200 || res.Items != bigItems || res.Leaked != 0 || res.Bytes < 9<<20 {
			t.Errorf("node /big: %+v", res)
		}
	})

	t.Run("SSE flows unbuffered", func(t *testing.T) {
		cmd := exec.Command(lgtest.Binary(t), "run", "--config", s.cfg, "--workload", "agent", "--user", "nobody", "--",
			"curl", "-sSN", "--max-time", "30", s.url(s.api.Port, "/sse"))
		stdout, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		defer cmd.Wait()
		br := bufio.NewReader(stdout)
		line, err := br.ReadString('\n')
		// The server holds its second event until the first has arrived
		// here: a proxy that buffered would deliver nothing until the
		// server gave up waiting.
		close(s.api.release)
		if err != nil || line != "data: {\"n\":1,\"email\":\"[redacted]\"}\n" {
			t.Fatalf("first event %q %v", line, err)
		}
		s.api.mu.Lock()
		timedOut := s.api.sseTimedOut
		s.api.mu.Unlock()
		if timedOut {
			t.Fatal("the first event arrived only after the server stopped waiting: buffered")
		}
		br.ReadString('\n')
		if line, _ := br.ReadString('\n'); line != "data: {\"n\":2}\n" {
			t.Errorf("second event %q", line)
		}
	})

	t.Run("Go client: WebSocket echo recorded, GET over h2", func(t *testing.T) {
		var r httpResult
		client(t, s.cfg, "agent", "nobody", &r, "http-ws", s.url(s.api.Port, "/ws"), "hello ada@example.com")
		if r.Status != 101 || r.Echo != "HELLO ADA@EXAMPLE.COM" {
			t.Fatalf("ws: %+v", r)
		}
		s.waitEvent(t, "frames recorded, masked", func(e exportedEvent) bool {
			return strings.HasPrefix(e.Text, "ws agent→target text 21 bytes: hello [redacted]")
		})
		s.waitEvent(t, "echo frame recorded", func(e exportedEvent) bool {
			return strings.HasPrefix(e.Text, "ws target→agent text 21 bytes: HELLO [redacted]")
		})
		client(t, s.cfg, "agent", "nobody", &r, "http-get", s.url(s.api.Port, "/go"))
		if r.Status != 200 || r.Proto != "HTTP/2.0" || !strings.Contains(r.Body, `"path":"/go"`) {
			t.Errorf("go get: %+v", r)
		}
	})

	t.Run("git clone and push with the token injected", func(t *testing.T) {
		work := lgtest.SharedDir(t)
		os.Chmod(work, 0o777)
		repo := s.url(s.ngx.Port, "/repo.git")
		script := fmt.Sprintf(`set -e
export HOME=%[1]s GIT_TERMINAL_PROMPT=0
cd %[1]s
git clone -q %[2]s clone
cd clone
git -c user.name=agent -c user.email=agent@example.com commit -q --allow-empty -m "from the agent"
git push -q origin main
git ls-remote %[2]s refs/heads/main`, work, repo)
		out, stderr, code := s.run(t, nil, "sh", "-c", script)
		if code != 0 {
			t.Fatalf("git: code %d out %q err %q", code, out, stderr)
		}
		log, err := exec.Command("git", "-C", filepath.Join(s.ngx.Repos, "repo.git"), "log", "--format=%s", "main").Output()
		if err != nil || !strings.HasPrefix(string(log), "from the agent\n") {
			t.Errorf("pushed commit not in the repository: %v %q", err, log)
		}
		s.waitEvent(t, "git push recorded", func(e exportedEvent) bool {
			return e.Target == "git" && e.Decision == "allow" && strings.HasPrefix(e.Text, "POST /repo.git/git-receive-pack")
		})
	})

	t.Run("plain http:// target, raw header injected", func(t *testing.T) {
		out, stderr, code := curl(t, "-H", "x-api-key: loopgate-placeholder", "http://"+s.name+":"+strconv.Itoa(s.plain.Port)+"/p")
		// The target echoes the key: the agent sees it scrubbed.
		if code != 0 || out != "x-api-key=[redacted]" || s.plain.Seen() != s.apiToken {
			t.Fatalf("code %d out %q err %q; server saw %q", code, out, stderr, s.plain.Seen())
		}
		if out, _, _ := curl(t, "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", "http://"+s.name+":"+strconv.Itoa(s.plain.Port)+"/p"); out != "403" {
			t.Errorf("POST on a read-only rule: %q", out)
		}
	})

	t.Run("tls: passthrough spliced and recorded", func(t *testing.T) {
		out, stderr, code := curl(t, "--cacert", s.ngx.CAFile, s.url(s.ngx.PassPort, "/"))
		if code != 0 || out != "spliced\n" {
			t.Fatalf("code %d out %q err %q", code, out, stderr)
		}
		s.waitEvent(t, "splice recorded", func(e exportedEvent) bool {
			return e.Target == "spliced" && e.Tag == "spliced" && e.Text == "TLS passthrough "+s.name && e.Bytes > 0
		})
	})

	// Nothing recorded holds the target's credentials or an email in clear.
	for _, e := range s.events(t) {
		all := e.Text + e.Params + e.Error
		if strings.Contains(all, s.apiToken) || strings.Contains(all, s.ngx.GitToken) || strings.Contains(all, "ada@example.com") {
			t.Errorf("record holds a secret or unmasked data: %+v", e)
		}
	}
	out, err := exec.Command(lgtest.Binary(t), "audit", "verify", "--config", s.cfg).CombinedOutput()
	if err != nil {
		t.Errorf("audit verify: %v %s", err, out)
	}
}
