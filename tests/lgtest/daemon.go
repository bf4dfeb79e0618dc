package lgtest

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// Binary builds cmd/loopgate once per test process and returns its path.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "loopgate-bin-")
		if err != nil {
			buildErr = err
			return
		}
		os.Chmod(dir, 0o755)
		binPath = filepath.Join(dir, "loopgate")
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Join(filepath.Dir(file), "..", "..")
		cmd := exec.Command("go", "build", "-o", binPath, "./cmd/loopgate")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// Daemon is a running `loopgate daemon` started by a test.
type Daemon struct {
	t      testing.TB
	Config string
	cmd    *exec.Cmd
	mu     sync.Mutex
	log    bytes.Buffer
	exited chan struct{}
}

// WriteConfig writes a config file into a fresh temp dir and returns its path.
func WriteConfig(t testing.TB, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "loopgate.yaml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// StartDaemon starts the daemon on config and waits until it is ready. At
// cleanup it stops the daemon (SIGTERM) and tears redirection down.
func StartDaemon(t testing.TB, config string) *Daemon {
	t.Helper()
	RequireRoot(t)
	d := &Daemon{t: t, Config: config}
	d.start()
	t.Cleanup(func() {
		d.Stop(syscall.SIGTERM)
		out, err := exec.Command(Binary(t), "teardown", "--force", "--config", config).CombinedOutput()
		if err != nil {
			t.Errorf("teardown: %v\n%s", err, out)
		}
	})
	return d
}

// Restart starts a stopped daemon again.
func (d *Daemon) Restart() { d.t.Helper(); d.start() }

func (d *Daemon) start() {
	t := d.t
	t.Helper()
	pr, pw := io.Pipe()
	cmd := exec.Command(Binary(t), "daemon", "--config", d.Config, "--drain", "2s")
	cmd.Stdout, cmd.Stderr = pw, pw
	// Its own session, as under systemd. The kernel's autogroup scheduling
	// gives each session a fair CPU share: a daemon in the test's session
	// would share one with the clients it serves.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start daemon: %v", err)
	}
	d.cmd = cmd
	d.exited = make(chan struct{})
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			line := sc.Text()
			d.mu.Lock()
			d.log.WriteString(line + "\n")
			d.mu.Unlock()
			if strings.Contains(line, `msg="daemon ready"`) {
				select {
				case ready <- true:
				default:
				}
			}
		}
	}()
	go func() {
		cmd.Wait()
		pw.Close()
		close(d.exited)
		select {
		case ready <- false:
		default:
		}
	}()
	select {
	case ok := <-ready:
		if !ok {
			if InCI() || strings.Contains(d.Log(), "load bpf") {
				t.Fatalf("daemon exited before ready:\n%s", d.Log())
			}
			t.Fatalf("daemon exited before ready:\n%s", d.Log())
		}
	case <-time.After(30 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("daemon not ready after 30s:\n%s", d.Log())
	}
}

// PID is the running daemon's process id.
func (d *Daemon) PID() int { return d.cmd.Process.Pid }

// Log returns what the daemon has logged so far.
func (d *Daemon) Log() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.log.String()
}

// Stop sends sig and waits for the daemon to exit.
func (d *Daemon) Stop(sig syscall.Signal) {
	if d.cmd == nil || d.cmd.Process == nil {
		return
	}
	select {
	case <-d.exited:
		return
	default:
	}
	d.cmd.Process.Signal(sig)
	select {
	case <-d.exited:
	case <-time.After(20 * time.Second):
		d.cmd.Process.Kill()
		<-d.exited
		d.t.Errorf("daemon did not stop on %v within 20s", sig)
	}
}

// Signal sends sig without waiting.
func (d *Daemon) Signal(sig syscall.Signal) { d.cmd.Process.Signal(sig) }

// Session is a session as `loopgate sessions list --json` prints it.
type Session struct {
	ID         string `json:"id"`
	Workload   string `json:"workload"`
	Target     string `json:"target"`
	OrigDst    string `json:"orig_dst"`
	Client     string `json:"client"`
	PID        int    `json:"pid"`
	UID        uint32 `json:"uid"`
	GID        uint32 `json:"gid"`
	CgroupPath string `json:"cgroup_path"`
	Exe        string `json:"exe"`
	Started    string `json:"started"`
	Ended      string `json:"ended"`
	BytesUp    int64  `json:"bytes_up"`
	BytesDown  int64  `json:"bytes_down"`
	Outcome    string `json:"outcome"`
	Error      string `json:"error"`
	ProcStart  string `json:"process_start"`
}

// Sessions runs `loopgate sessions list --json` with extra args.
func Sessions(t testing.TB, config string, args ...string) []Session {
	t.Helper()
	cmd := exec.Command(Binary(t), append([]string{"sessions", "list", "--json", "--config", config}, args...)...)
	out, err := cmd.Output()
	if err != nil {
		var stderr []byte
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = ee.Stderr
		}
		t.Fatalf("sessions list: %v\n%s", err, stderr)
	}
	var list []Session
	dec := json.NewDecoder(bytes.NewReader(out))
	for dec.More() {
		var s Session
		if err := dec.Decode(&s); err != nil {
			t.Fatalf("sessions list: bad JSON: %v\n%s", err, out)
		}
		list = append(list, s)
	}
	return list
}

// Run runs `loopgate run --workload W [extra...] -- args...` with env added
// to the environment and returns stdout, stderr and the exit code.
func Run(t testing.TB, config, workload string, env, extra []string, args ...string) (string, string, int) {
	t.Helper()
	full := append([]string{"run", "--config", config, "--workload", workload}, extra...)
	full = append(full, "--")
	full = append(full, args...)
	cmd := exec.Command(Binary(t), full...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("loopgate run: %v", err)
	}
	return stdout.String(), stderr.String(), code
}
