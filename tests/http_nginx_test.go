package tests

import (
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/loopgate/loopgate/tests/lgtest"
)

// nginx is a real nginx (Debian) serving HTTPS with its own CA: /small
// (the benchmark's small GET), a git repository through git http-backend
// behind fcgiwrap (/repo.git, Basic auth with x-access-token:GitToken),
// a second TLS port (PassPort) for tls: passthrough, and a third
// (ProxyPort) where nginx itself is a TLS-terminating reverse proxy to the
// first, injecting a bearer: the peer BenchmarkHTTP measures loopgate
// against.
type nginx struct {
	Port, PassPort, ProxyPort int
	CA                        *lgtest.CA
	CAFile                    string
	GitToken                  string
	Repos                     string // GIT_PROJECT_ROOT
	dir                       string
}

// startNginx starts nginx and fcgiwrap for names (host names resolving to
// 127.0.0.1, all in its certificate), stopped when t ends. Under CI=true a
// missing binary fails t.
func startNginx(t testing.TB, names ...string) *nginx {
	t.Helper()
	for _, bin := range []string{"nginx", "fcgiwrap", "git"} {
		if _, err := exec.LookPath(bin); err != nil {
			if _, err := os.Stat("/usr/sbin/" + bin); err != nil {
				lgtest.Unavailable(t, "%s not installed (scripts/deps.sh)", bin)
			}
		}
	}
	dir := t.TempDir()
	os.Chmod(dir, 0o755)
	n := &nginx{Port: lgtest.FreePort(t), PassPort: lgtest.FreePort(t), ProxyPort: lgtest.FreePort(t), CA: lgtest.NewCA(t, "nginx test CA"), dir: dir,
		GitToken: "ghs_" + strconv.FormatInt(time.Now().UnixNano(), 36), Repos: filepath.Join(dir, "repos")}
	crt, key := n.CA.Issue(t, append(names, "127.0.0.1")...)
	write := func(p string, b []byte, mode os.FileMode) string {
		p = filepath.Join(dir, p)
		if err := os.WriteFile(p, b, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	crtFile, keyFile := write("server.crt", crt, 0o644), write("server.key", key, 0o600)
	n.CAFile = write("ca.pem", n.CA.PEM, 0o644)
	// A bare repository with one commit, pushable over HTTP.
	work := filepath.Join(dir, "seed")
	for _, args := range [][]string{
		{"init", "-q", "--bare", filepath.Join(n.Repos, "repo.git")},
		{"-C", filepath.Join(n.Repos, "repo.git"), "config", "http.receivepack", "true"},
		{"init", "-q", "-b", "main", work},
		{"-C", work, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "--allow-empty", "-m", "seed"},
		{"-C", work, "push", "-q", filepath.Join(n.Repos, "repo.git"), "main"},
		{"-C", filepath.Join(n.Repos, "repo.git"), "symbolic-ref", "HEAD", "refs/heads/main"},
	} {
		if out, err := exec.Command("git", args...).CombinedOutput(); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	sock := filepath.Join(dir, "fcgi.sock")
	fcgi := exec.Command("fcgiwrap", "-s", "unix:"+sock)
	fcgi.Env = append(os.Environ(), "GIT_CONFIG_GLOBAL=/dev/null")
	fcgi.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := fcgi.Start(); err != nil {
		lgtest.Unavailable(t, "start fcgiwrap: %v", err)
	}
	t.Cleanup(func() { syscall.Kill(-fcgi.Process.Pid, syscall.SIGTERM); fcgi.Wait() })
	auth := "Basic " + base64.StdEncoding.EncodeToString([]byte("x-access-token:"+n.GitToken))
	for _, d := range []string{"tmp", "logs"} {
		os.MkdirAll(filepath.Join(dir, d), 0o755)
	}
	conf := write("nginx.conf", fmt.Appendf(nil, `daemon off;
worker_processes 2;
user root;
pid %[1]s/nginx.pid;
error_log %[1]s/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path %[1]s/tmp/body; proxy_temp_path %[1]s/tmp/proxy; fastcgi_temp_path %[1]s/tmp/fcgi;
  uwsgi_temp_path %[1]s/tmp/uwsgi; scgi_temp_path %[1]s/tmp/scgi;
  keepalive_requests 1000000;
  server {
    listen 127.0.0.1:%[2]d ssl http2;
    server_name %[3]s;
    ssl_certificate %[4]s;
    ssl_certificate_key %[5]s;
    location = /small { default_type text/plain; return 200 "ok\n"; }
    location ~ ^/repo\.git(/.*)$ {
      if ($http_authorization != "%[6]s") { return 401; }
      client_max_body_size 0;
      fastcgi_pass unix:%[7]s;
      include /etc/nginx/fastcgi_params;
      fastcgi_param SCRIPT_FILENAME /usr/lib/git-core/git-http-backend;
      fastcgi_param GIT_PROJECT_ROOT %[8]s;
      fastcgi_param GIT_HTTP_EXPORT_ALL "";
      fastcgi_param PATH_INFO /repo.git$1;
      fastcgi_param REMOTE_USER agent;
    }
  }
  server {
    listen 127.0.0.1:%[9]d ssl;
    server_name %[3]s;
    ssl_certificate %[4]s;
    ssl_certificate_key %[5]s;
    location / { default_type text/plain; return 200 "spliced\n"; }
  }
  upstream self { server 127.0.0.1:%[2]d; keepalive 128; }
  server {
    listen 127.0.0.1:%[10]d ssl;
    server_name %[3]s;
    ssl_certificate %[4]s;
    ssl_certificate_key %[5]s;
    location / {
      proxy_pass https://self;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Authorization "Bearer peer-token";
      proxy_ssl_server_name on;
      proxy_ssl_name %[11]s;
      proxy_ssl_verify on;
      proxy_ssl_trusted_certificate %[12]s;
      proxy_ssl_session_reuse on;
    }
  }
}
`, dir, n.Port, strings.Join(names, " "), crtFile, keyFile, auth, sock, n.Repos, n.PassPort, n.ProxyPort, names[0], n.CAFile), 0o644)
	cmd := exec.Command("nginx", "-c", conf, "-p", dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		lgtest.Unavailable(t, "start nginx: %v", err)
	}
	t.Cleanup(func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGQUIT); cmd.Wait() })
	for _, port := range []int{n.Port, n.PassPort, n.ProxyPort} {
		lgtest.Eventually(t, 10*time.Second, "nginx listening", func() bool {
			c, err := net.Dial("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
			if err == nil {
				c.Close()
			}
			return err == nil
		})
	}
	return n
}
