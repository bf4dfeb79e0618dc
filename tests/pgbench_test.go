package tests

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/loopgate/loopgate/tests/lgtest"
)

var latencyLine = regexp.MustCompile(`latency average = ([0-9.]+) ms`)

var tpsLine = regexp.MustCompile(`tps = ([0-9.]+) \((?:without initial connection time|including reconnection times)\)`)

// startPgBouncer runs Debian's PgBouncer in session mode in front of the
// test server, logging in upstream as app like loopgate does.
func startPgBouncer(t testing.TB, s *pgSetup, appPass string) string {
	t.Helper()
	bin, err := exec.LookPath("pgbouncer")
	if err != nil {
		lgtest.Unavailable(t, "pgbouncer not installed")
	}
	// PgBouncer runs as postgres: its dir must be reachable by that user.
	dir, err := os.MkdirTemp("", "lgtest-pgbouncer-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o777)
	port := lgtest.FreePort(t)
	ini := filepath.Join(dir, "pgbouncer.ini")
	os.WriteFile(filepath.Join(dir, "users.txt"), []byte(`"bench" ""`+"\n"), 0o644)
	os.WriteFile(ini, []byte(fmt.Sprintf(`[databases]
app = host=127.0.0.1 port=%d dbname=app user=app password=%s
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = %d
unix_socket_dir =
auth_type = trust
auth_file = %s/users.txt
pool_mode = session
max_client_conn = 200
default_pool_size = 40
logfile = %s/pgbouncer.log
`, s.pg.Port, appPass, port, dir, dir)), 0o644)
	cmd := exec.Command(bin, "-u", "postgres", ini)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true} // its own session, like loopgate's daemon (lgtest)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() })
	lgtest.Eventually(t, 10*time.Second, "pgbouncer", func() bool {
		return exec.Command("pg_isready", "-h", "127.0.0.1", "-p", strconv.Itoa(port)).Run() == nil
	})
	return strconv.Itoa(port)
}

// startPgpool runs Debian's pgpool-II in raw mode with connection_cache
// on (a pooler that keeps each child's server connection across client
// sessions) in front of the test server, trusting clients and logging in
// upstream as app from its pool_passwd, as PgBouncer does. It returns ""
// when pgpool is not installed (it is not in scripts/deps.sh's list:
// the benchmark is not run in CI), unless CI=true.
func startPgpool(t testing.TB, s *pgSetup, appPass string) string {
	t.Helper()
	bin, err := exec.LookPath("pgpool")
	if err != nil {
		if lgtest.InCI() {
			t.Fatal("pgpool not installed (apt-get install pgpool2)")
		}
		fmt.Println("    pgpool not installed (apt-get install pgpool2): its column is skipped")
		return ""
	}
	dir, err := os.MkdirTemp("", "lgtest-pgpool-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o777)
	port, pcpPort := lgtest.FreePort(t), lgtest.FreePort(t)
	conf := filepath.Join(dir, "pgpool.conf")
	os.WriteFile(filepath.Join(dir, "pool_hba.conf"), []byte("host all all 127.0.0.1/32 trust\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "pool_passwd"), []byte("app:TEXT"+appPass+"\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "pcp.conf"), nil, 0o644)
	os.WriteFile(conf, []byte(fmt.Sprintf(`listen_addresses = '127.0.0.1'
port = %d
unix_socket_directories = '%[3]s'
pcp_listen_addresses = ''
pcp_port = %d
pcp_socket_dir = '%[3]s'
backend_clustering_mode = 'raw'
backend_hostname0 = '127.0.0.1'
backend_port0 = %d
backend_weight0 = 1
backend_flag0 = 'DISALLOW_TO_FAILOVER'
connection_cache = on
num_init_children = 16
max_pool = 1
enable_pool_hba = on
pool_passwd = 'pool_passwd'
load_balance_mode = off
health_check_period = 0
sr_check_period = 0
failover_on_backend_error = off
pid_file_name = '%[3]s/pgpool.pid'
logdir = '%[3]s'
log_min_messages = warning
`, port, pcpPort, dir, s.pg.Port)), 0o644)
	cmd := exec.Command(bin, "-n", "-f", conf, "-a", filepath.Join(dir, "pool_hba.conf"), "-F", filepath.Join(dir, "pcp.conf"))
	var log strings.Builder
	cmd.Stdout, cmd.Stderr = &log, &log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true} // its own session, like loopgate's daemon (lgtest)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Signal(syscall.SIGTERM); cmd.Wait() })
	lgtest.Eventually(t, 10*time.Second, "pgpool", func() bool {
		return exec.Command("psql", "-X", "-w", "-h", "127.0.0.1", "-p", strconv.Itoa(port), "-U", "app", "-d", "app", "-c", "SELECT 1").Run() == nil
	})
	return strconv.Itoa(port)
}

// BenchmarkPgbench runs pgbench against the same server direct, through
// loopgate (recording on as by default, a column mask on), through PgBouncer (session
// mode), through pgpool-II (raw mode, connection cache; if installed) and
// through a bare Go epoll relay (epollrelay_test.go),
// alternating rounds in the same run, and reports TPS ratios against
// direct.
func BenchmarkPgbench(b *testing.B) {
	s, appPass := newPGBench(b)
	bouncer := startPgBouncer(b, s, appPass)
	relay := startEpollRelay(b, "127.0.0.1:"+s.port)
	pool := startPgpool(b, s, appPass)
	vias := []string{"direct", "loopgate", "pgbouncer", "go-epoll"}
	if pool != "" {
		vias = append(vias, "pgpool")
	}
	rounds := 3
	if v, err := strconv.Atoi(os.Getenv("LG_BENCH_ROUNDS")); err == nil {
		rounds = v
	}
	secs := "4"
	cells := []struct{ name, args string }{
		{"S-c1-simple", "-S -c 1 -j 1 -M simple"},
		{"S-c1-prepared", "-S -c 1 -j 1 -M prepared"},
		{"S-c8-simple", "-S -c 8 -j 2 -M simple"},
		{"S-c8-prepared", "-S -c 8 -j 2 -M prepared"},
		{"tpcb-c1-simple", "-c 1 -j 1 -M simple"},
		{"tpcb-c8-simple", "-c 8 -j 2 -M simple"},
		{"tpcb-c8-prepared", "-c 8 -j 2 -M prepared"},
		{"S-c8-connect", "-S -c 8 -j 2 -C"},
	}
	for _, cell := range cells {
		b.Run(cell.name, func(b *testing.B) {
			tps, lat := map[string]float64{}, map[string]float64{}
			for r := 0; r < rounds; r++ {
				for _, via := range vias {
					args := append(strings.Fields(cell.args), "-n", "-T", secs, "-h", "127.0.0.1", "-U", "bench", "app")
					var cmd *exec.Cmd
					switch via {
					case "direct":
						direct := append(strings.Fields(cell.args), "-n", "-T", secs, "-h", "127.0.0.1", "-p", s.port, "-U", "app", "app")
						cmd = exec.Command("pgbench", direct...)
						cmd.Env = append(os.Environ(), "PGPASSWORD="+appPass)
					case "loopgate":
						cmd = exec.Command(lgtest.Binary(b), append([]string{"run", "--config", s.cfg, "--workload", "bench", "--", "pgbench"}, append(args, "-p", s.port)...)...)
					case "pgbouncer":
						cmd = exec.Command("pgbench", append(args, "-p", bouncer)...)
					case "pgpool":
						cmd = exec.Command("pgbench", append(strings.Fields(cell.args), "-n", "-T", secs, "-h", "127.0.0.1", "-p", pool, "-U", "app", "app")...)
					case "go-epoll":
						cmd = exec.Command("pgbench", append(strings.Fields(cell.args), "-n", "-T", secs, "-h", "127.0.0.1", "-p", relay, "-U", "app", "app")...)
						cmd.Env = append(os.Environ(), "PGPASSWORD="+appPass)
					}
					out, err := cmd.CombinedOutput()
					m := tpsLine.FindSubmatch(out)
					if err != nil || m == nil {
						b.Fatalf("%s %s: %v\n%s", cell.name, via, err, out)
					}
					v, _ := strconv.ParseFloat(string(m[1]), 64)
					tps[via] += v / float64(rounds)
					if l := latencyLine.FindSubmatch(out); l != nil {
						ms, _ := strconv.ParseFloat(string(l[1]), 64)
						lat[via] += ms / float64(rounds)
					}
				}
			}
			b.ReportMetric(tps["direct"], "direct-tps")
			b.ReportMetric(tps["loopgate"], "loopgate-tps")
			b.ReportMetric(tps["pgbouncer"], "pgbouncer-tps")
			b.ReportMetric(tps["loopgate"]/tps["direct"], "loopgate/direct")
			b.ReportMetric(tps["pgbouncer"]/tps["direct"], "pgbouncer/direct")
			b.ReportMetric(tps["go-epoll"]/tps["direct"], "go-epoll/direct")
			b.ReportMetric(tps["loopgate"]/tps["pgbouncer"], "loopgate/pgbouncer")
			fmt.Printf("    pgbench %-16s tps: direct %6.0f  loopgate %6.0f (%.2f)  pgbouncer %6.0f (%.2f)  go-epoll %6.0f (%.2f)  | loopgate/pgbouncer %.2f | latency ms d/lg/pgb/go %.3f %.3f %.3f %.3f\n", cell.name,
				tps["direct"], tps["loopgate"], tps["loopgate"]/tps["direct"], tps["pgbouncer"], tps["pgbouncer"]/tps["direct"],
				tps["go-epoll"], tps["go-epoll"]/tps["direct"], tps["loopgate"]/tps["pgbouncer"], lat["direct"], lat["loopgate"], lat["pgbouncer"], lat["go-epoll"])
			if pool != "" {
				b.ReportMetric(tps["pgpool"]/tps["direct"], "pgpool/direct")
				fmt.Printf("    pgbench %-16s pgpool %6.0f (%.2f)  loopgate/pgpool %.2f | latency ms %.3f\n", cell.name,
					tps["pgpool"], tps["pgpool"]/tps["direct"], tps["loopgate"]/tps["pgpool"], lat["pgpool"])
			}
		})
	}
}

// newPGBench is newPGSetup for a benchmark, with the pgbench schema loaded.
func newPGBench(b *testing.B) (*pgSetup, string) {
	s := newPGSetupTB(b)
	out, stderr, code := lgtest.Run(b, s.cfg, "admin", nil, nil, "pgbench", "-i", "-s", "10", "-q", "-h", "127.0.0.1", "-p", s.port, "-U", "bench", "app")
	if code != 0 {
		b.Fatalf("pgbench -i: %s %s", out, stderr)
	}
	// The bench workload records as the default config does, unless
	// LG_BENCH_RECORD=async asks for its rule's record: async.
	if os.Getenv("LG_BENCH_RECORD") != "async" {
		text, err := os.ReadFile(s.cfg)
		if err != nil {
			b.Fatal(err)
		}
		rule := "    mask: [ssn]\n    record: async\n"
		if !strings.Contains(string(text), rule) {
			b.Fatalf("bench rule not found in %s", s.cfg)
		}
		if err := os.WriteFile(s.cfg, []byte(strings.Replace(string(text), rule, "    mask: [ssn]\n", 1)), 0o600); err != nil {
			b.Fatal(err)
		}
		s.daemon.Signal(syscall.SIGHUP)
		lgtest.Eventually(b, 10*time.Second, "reload", func() bool { return strings.Contains(s.daemon.Log(), "config reloaded") })
	}
	return s, s.appPass
}
