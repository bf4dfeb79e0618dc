package api

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/loopgate/loopgate/policy"
	"github.com/loopgate/loopgate/tests/lgtest"
)

// TestSocketMode: the API socket is 0660, root's, in api.group when set;
// a user outside the group cannot connect, one inside can.
func TestSocketMode(t *testing.T) {
	lgtest.RequireRoot(t)
	t.Parallel()
	const gid = 4242 // need not exist in /etc/group
	tests := []struct {
		name    string
		group   string
		wantGID uint32
	}{
		{"default: root only", "", 0},
		{"group by number", strconv.Itoa(gid), gid},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			yaml := "approvers:\n  - {name: root, uid: 0}\n"
			if tc.group != "" {
				yaml += "api: {socket: /run/x.sock, group: \"" + tc.group + "\"}\n"
			}
			cfg, err := policy.Parse("c.yaml", []byte(yaml))
			if err != nil {
				t.Fatal(err)
			}
			s := &Server{Broker: &policy.Broker{Policy: func() *policy.Config { return cfg }}, Policy: func() *policy.Config { return cfg }}
			dir := t.TempDir()
			os.Chmod(dir, 0o755)
			os.Chmod(filepath.Dir(dir), 0o755) // t.TempDir makes it 0700
			sock := filepath.Join(dir, "api.sock")
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- s.Run(ctx, sock, "") }()
			defer func() { cancel(); <-done }()
			lgtest.Eventually(t, 5*time.Second, "the socket", func() bool {
				st, err := os.Stat(sock)
				return err == nil && st.Mode().Perm() == 0o660
			})
			var st syscall.Stat_t
			if err := syscall.Stat(sock, &st); err != nil {
				t.Fatal(err)
			}
			if st.Uid != 0 || st.Gid != tc.wantGID {
				t.Errorf("socket owned by %d:%d, want 0:%d", st.Uid, st.Gid, tc.wantGID)
			}
			// A user outside the group is refused by the file system; one
			// in it reaches the API, which then decides by uid.
			for _, groups := range [][]uint32{nil, {gid}} {
				cmd := exec.Command(lgtest.Binary(t), "approvals", "list", "--socket", sock)
				cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534, Groups: groups}}
				out, _ := cmd.CombinedOutput()
				want := "permission denied"
				if len(groups) > 0 && tc.group != "" {
					want = "not_an_approver"
				}
				if !strings.Contains(string(out), want) {
					t.Errorf("uid 65534 in groups %v: %s, want %q", groups, out, want)
				}
			}
		})
	}
}
