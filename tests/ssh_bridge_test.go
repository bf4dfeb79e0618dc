package tests

import (
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"

	"github.com/loopgate/loopgate/tests/lgtest"
)

// TestSSHBridge checks the bridge against direct ssh to the same sshd:
// exit signals, stdin ordering, stderr apart, keepalives on both legs.
func TestSSHBridge(t *testing.T) {
	s := newSSHSetup(t, "AcceptEnv LG_OK", "ClientAliveInterval 1", "ClientAliveCountMax 2")
	direct := s.directArgs(t)
	tests := []struct {
		name    string
		stdin   string
		opts    []string
		command string
	}{
		{name: "exit-signal", command: "kill -KILL $$"},
		{name: "exit-signal TERM with output first", command: "echo before; kill -TERM $$"},
		{name: "stdout and stderr apart", command: "echo out; echo err >&2; exit 3"},
		{name: "stdin EOF before the command ends", stdin: "a\nb\n", command: "cat; echo done"},
		{name: "large stdin piped before exec", stdin: strings.Repeat("0123456789abcdef", 1<<16), command: "wc -c"},
		{name: "env accepted and rejected", opts: []string{"-o", "SendEnv=LG_OK LG_NO"}, command: "echo ok=$LG_OK no=$LG_NO"},
		{name: "keepalives on both legs", opts: []string{"-o", "ServerAliveInterval=1", "-o", "ServerAliveCountMax=2"}, command: "sleep 4; echo awake"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var stdin []byte
			if tc.stdin != "" {
				stdin = []byte(tc.stdin)
			}
			args := append(append([]string{"env", "LG_OK=1", "LG_NO=2", "ssh"}, direct...), tc.opts...)
			args = append(args, "-p", s.port, lgtest.SSHUser+"@127.0.0.1", tc.command)
			wantOut, wantErr, wantCode := s.direct(t, stdin, args...)
			pargs := append(append([]string{"env", "LG_OK=1", "LG_NO=2", "ssh"}, s.sshArgs(tc.opts...)...), "-p", s.port, "deploy@127.0.0.1", tc.command)
			gotOut, gotErr, gotCode := s.run(t, "admin", stdin, pargs...)
			if gotOut != wantOut || gotErr != wantErr || gotCode != wantCode {
				t.Errorf("through loopgate: code %d stdout %q stderr %q\ndirect: code %d stdout %q stderr %q",
					gotCode, short(gotOut), gotErr, wantCode, short(wantOut), wantErr)
			}
		})
	}
	t.Run("direct-tcpip allowed and denied", func(t *testing.T) {
		echo := lgtest.StartEcho(t, "127.0.0.1:0")
		dst := net.JoinHostPort("127.0.0.1", strconv.Itoa(echo.Addr().Port))
		out, stderr, code := s.run(t, "admin", []byte("ping\n"), append(append([]string{"ssh"}, s.sshArgs()...), "-W", dst, "-p", s.port, "deploy@127.0.0.1")...)
		if code != 0 || !strings.Contains(out, "ping\n") || !strings.HasPrefix(out, "peer ") {
			t.Errorf("allowed forward: code %d out %q err %q", code, out, stderr)
		}
		// LogLevel=INFO (the default) shows why a channel open failed.
		_, stderr, code = s.run(t, "reader", []byte("ping\n"), append(append([]string{"ssh", "-o", "LogLevel=INFO"}, s.sshArgs()...), "-W", dst, "-p", s.port, "deploy@127.0.0.1")...)
		if code == 0 || !strings.Contains(stderr, "loopgate: forward denied by rule reader-box") {
			t.Errorf("denied forward: code %d err %q", code, stderr)
		}
	})
}

func short(s string) string {
	if len(s) > 200 {
		return fmt.Sprintf("%s...(%d bytes)", s[:200], len(s))
	}
	return s
}
