package doctor

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/loopgate/loopgate/policy"
)

// checkConfig loads the config; its errors name file:line:column.
func checkConfig(path string) (*policy.Config, Check) {
	c := Check{Name: "config"}
	cfg, err := policy.Load(path)
	if err != nil {
		return nil, fail(c, err.Error(), "fix the lines named, then: loopgate policy check "+path)
	}
	return cfg, ok_(c, fmt.Sprintf("%s: %d targets, %d workloads, %d rules", path, len(cfg.Targets), len(cfg.Workloads), len(cfg.Rules)))
}

// checkStore checks that the store's directory, database, audit key and
// CA key are root's alone: the records are sensitive, and whoever reads
// the audit key can sign a forged history.
func checkStore(cfg *policy.Config) []Check {
	names := []string{"store", "audit key", "ca key", "ssh ca keys"}
	if cfg == nil {
		var out []Check
		for _, n := range names {
			out = append(out, skip(Check{Name: n}, "config not loaded"))
		}
		return out
	}
	dir := filepath.Dir(cfg.Store)
	out := []Check{privateDir(Check{Name: "store"}, dir, cfg.Store)}
	out = append(out, privateFile(Check{Name: "audit key"}, cfg.AuditKey, "created 0600 at the daemon's first start"))
	out = append(out, privateFile(Check{Name: "ca key"}, filepath.Join(dir, "ca", "ca.key"), "created 0600 at the daemon's first start"))
	ssh := Check{Name: "ssh ca keys"}
	var have []string
	for _, f := range sshCAFiles {
		p := filepath.Join(dir, f)
		if _, err := os.Stat(p); errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if c := privateFile(ssh, p, ""); c.Status != StatusOK {
			return append(out, c)
		}
		have = append(have, p)
	}
	if len(have) == 0 {
		return append(out, ok_(ssh, "not there yet (created 0600 at the first ssh session)"))
	}
	return append(out, ok_(ssh, strings.Join(have, ", ")+": root's, 0600 or stricter"))
}

// sshCAFiles are the SSH CA keys l7/ssh keeps beside the store
// (l7/ssh.HostCAFile, UserCAFile; doctor does not import l7).
var sshCAFiles = []string{"ssh_host_ca", "ssh_user_ca"}

// privateDir: dir 0700 (no group or other bits) and owned by root, db 0600.
func privateDir(c Check, dir, db string) Check {
	fi, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return ok_(c, dir+" not created yet (the daemon creates it 0700)")
	}
	if err != nil {
		return fail(c, err.Error(), "")
	}
	if bad := fi.Mode().Perm() & 0o077; bad != 0 || owner(fi) != 0 {
		return fail(c, fmt.Sprintf("%s is %v, owner uid %d: others can reach the records", dir, fi.Mode().Perm(), owner(fi)),
			fmt.Sprintf("chown root: %s && chmod 700 %s", dir, dir))
	}
	if c2 := privateFile(Check{}, db, ""); c2.Status == StatusFail {
		return fail(c, c2.Detail, c2.Fix)
	}
	// Everything in it but public halves (*.pub, *.crt) is root's alone:
	// the directory's mode is one chmod away from not protecting them.
	var loose []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasSuffix(p, ".pub") || strings.HasSuffix(p, ".crt") {
			return nil
		}
		if fi, err := d.Info(); err == nil && d.Type().IsRegular() && (fi.Mode().Perm()&0o077 != 0 || owner(fi) != 0) {
			loose = append(loose, p)
		}
		return nil
	})
	if len(loose) > 0 {
		return fail(c, fmt.Sprintf("readable by others: %s", strings.Join(loose, ", ")),
			"chown root: FILE && chmod 600 FILE, for each")
	}
	return ok_(c, fmt.Sprintf("%s %v, root's", dir, fi.Mode().Perm()))
}

// privateFile: mode 0600 or stricter, owned by root.
func privateFile(c Check, path, absent string) Check {
	fi, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return ok_(c, path+" not there yet ("+absent+")")
	}
	if err != nil {
		return fail(c, err.Error(), "")
	}
	if fi.Mode().Perm()&0o077 != 0 || owner(fi) != 0 {
		return fail(c, fmt.Sprintf("%s is %v, owner uid %d: readable by others", path, fi.Mode().Perm(), owner(fi)),
			fmt.Sprintf("chown root: %s && chmod 600 %s", path, path))
	}
	return ok_(c, fmt.Sprintf("%s %v, root's", path, fi.Mode().Perm()))
}

func owner(fi fs.FileInfo) uint32 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return st.Uid
	}
	return ^uint32(0)
}

// checkAPI looks at the API socket and asks a daemon behind it for
// /healthz.
func checkAPI(ctx context.Context, cfg *policy.Config) Check {
	c := Check{Name: "api socket"}
	if cfg == nil {
		return skip(c, "config not loaded")
	}
	sock := cfg.API.Socket
	fi, err := os.Stat(sock)
	if errors.Is(err, fs.ErrNotExist) {
		return warn(c, sock+" absent: no daemon is running, approvals cannot be decided", "systemctl start loopgate (or loopgate daemon)")
	}
	if err != nil {
		return fail(c, err.Error(), "")
	}
	if fi.Mode()&fs.ModeSocket == 0 {
		return fail(c, sock+" is not a socket", "remove it and restart the daemon")
	}
	if fi.Mode().Perm()&0o007 != 0 {
		return fail(c, fmt.Sprintf("%s is %v: any local user may talk to the API", sock, fi.Mode().Perm()),
			"restart the daemon (it makes the socket 0660); set api: group to share it")
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://loopgate/healthz", nil)
	resp, err := client.Do(req)
	if err != nil {
		return warn(c, fmt.Sprintf("%s: no daemon answers: %v", sock, trimErr(err)), "systemctl start loopgate (or loopgate daemon)")
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fail(c, fmt.Sprintf("%s: /healthz answered %s", sock, resp.Status), "see the daemon's log")
	}
	return ok_(c, fmt.Sprintf("%s %v: the daemon answers", sock, fi.Mode().Perm()))
}

func trimErr(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 {
		return s[i+2:]
	}
	return s
}
