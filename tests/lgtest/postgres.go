package lgtest

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Postgres is a real PostgreSQL server started for a test on 127.0.0.1.
type Postgres struct {
	Port int
	Dir  string
	// SuperPassword is the password of role "postgres" (SCRAM).
	SuperPassword string
	cmd           *exec.Cmd
}

// Addr is host:port.
func (p *Postgres) Addr() string { return "127.0.0.1:" + strconv.Itoa(p.Port) }

// pgBin finds the server binaries of Debian's postgresql package.
func pgBin(t testing.TB, name string) string {
	t.Helper()
	matches, _ := filepath.Glob("/usr/lib/postgresql/*/bin/" + name)
	if len(matches) == 0 {
		Unavailable(t, "PostgreSQL server not installed (%s): apt-get install postgresql-15", name)
	}
	return matches[len(matches)-1]
}

// PGOption changes how StartPostgres starts the server.
type PGOption func(*pgOptions)

type pgOptions struct {
	certPEM, keyPEM []byte
}

// WithTLS serves TLS with the given certificate and key.
func WithTLS(certPEM, keyPEM []byte) PGOption {
	return func(o *pgOptions) { o.certPEM, o.keyPEM = certPEM, keyPEM }
}

// StartPostgres initialises a cluster in a temp dir (owned by the postgres
// user: the server refuses to run as root), starts it on a free loopback
// port with scram-sha-256 authentication, and stops it when t ends.
func StartPostgres(t testing.TB, opts ...PGOption) *Postgres {
	t.Helper()
	RequireRoot(t)
	initdb := pgBin(t, "initdb")
	server := pgBin(t, "postgres")
	u, err := user.Lookup("postgres")
	if err != nil {
		Unavailable(t, "no postgres user: %v", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	dir, err := os.MkdirTemp("", "lgtest-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chown(dir, uid, gid)
	p := &Postgres{Dir: dir, SuperPassword: "super-" + strconv.FormatInt(time.Now().UnixNano(), 36)}
	pwfile := filepath.Join(dir, "pw")
	os.WriteFile(pwfile, []byte(p.SuperPassword+"\n"), 0o600)
	os.Chown(pwfile, uid, gid)
	asPG := &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	data := filepath.Join(dir, "data")
	cmd := exec.Command(initdb, "-D", data, "-U", "postgres", "-A", "scram-sha-256", "--pwfile", pwfile, "-E", "UTF8", "--no-sync")
	cmd.SysProcAttr = asPG
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	var o pgOptions
	for _, opt := range opts {
		opt(&o)
	}
	p.Port = FreePort(t)
	args := []string{"-D", data, "-p", strconv.Itoa(p.Port), "-k", dir,
		"-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
		"-c", "full_page_writes=off", "-c", "max_connections=200", "-c", "shared_buffers=128MB"}
	if o.certPEM != nil {
		crt, key := filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
		os.WriteFile(crt, o.certPEM, 0o644)
		os.WriteFile(key, o.keyPEM, 0o600)
		os.Chown(crt, uid, gid)
		os.Chown(key, uid, gid)
		args = append(args, "-c", "ssl=on", "-c", "ssl_cert_file="+crt, "-c", "ssl_key_file="+key)
	}
	p.cmd = exec.Command(server, args...)
	p.cmd.SysProcAttr = asPG
	logf, _ := os.Create(filepath.Join(dir, "server.log"))
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start postgres: %v", err)
	}
	t.Cleanup(func() {
		p.cmd.Process.Signal(syscall.SIGINT) // fast shutdown
		done := make(chan struct{})
		go func() { p.cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(20 * time.Second):
			p.cmd.Process.Kill()
		}
		logf.Close()
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", p.Addr(), time.Second)
		if err == nil {
			c.Close()
			// Accepting TCP is not accepting logins: wait for a query.
			if _, err := p.Exec(context.Background(), "SELECT 1"); err == nil {
				break
			}
		}
		if time.Now().After(deadline) {
			log, _ := os.ReadFile(filepath.Join(dir, "server.log"))
			t.Fatalf("postgres not ready after 30s:\n%s", log)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return p
}

// Exec runs SQL in database postgres as the superuser with psql (outside
// any workload) and returns its unaligned output.
func (p *Postgres) Exec(ctx context.Context, sql string) (string, error) {
	return p.ExecIn(ctx, "postgres", sql)
}

// ExecIn is Exec in database db.
func (p *Postgres) ExecIn(ctx context.Context, db, sql string) (string, error) {
	cmd := exec.CommandContext(ctx, "psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
		"-p", strconv.Itoa(p.Port), "-U", "postgres", "-d", db, "-c", sql)
	cmd.Env = append(os.Environ(), "PGPASSWORD="+p.SuperPassword, "PGCONNECT_TIMEOUT=5")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("psql: %v: %s", err, out)
	}
	return strings.TrimSpace(string(out)), nil
}

// MustExec is Exec that fails t.
func (p *Postgres) MustExec(t testing.TB, sql string) string {
	t.Helper()
	return p.MustExecIn(t, "postgres", sql)
}

// MustExecIn is ExecIn that fails t.
func (p *Postgres) MustExecIn(t testing.TB, db, sql string) string {
	t.Helper()
	out, err := p.ExecIn(context.Background(), db, sql)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
