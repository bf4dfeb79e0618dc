package intercept_test

import (
	"bufio"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/loopgate/loopgate/bpf"
	"github.com/loopgate/loopgate/intercept"
	"github.com/loopgate/loopgate/tests/lgtest"
)

// TestRedirectOrigin loads the programs into the real kernel, runs a real
// client (bash /dev/tcp) in a workload cgroup and checks that its connect to
// a target lands on the listener with the kernel's account of it.
func TestRedirectOrigin(t *testing.T) {
	lgtest.RequireRoot(t)
	log := slog.New(slog.NewTextHandler(t.Output(), nil))
	pin := lgtest.PinDir(t)
	k, err := intercept.Open(pin, log)
	if err != nil {
		lgtest.Unavailable(t, "load bpf: %v", err)
	}
	defer k.Close()

	echo := lgtest.StartEcho(t, "127.0.0.2:0")
	listen := netip.MustParseAddrPort("127.0.0.1:" + itoa(lgtest.FreePort(t)))
	cg := lgtest.CgroupName(t)
	spec := intercept.Spec{
		Listen:    listen,
		Targets:   []intercept.TargetSpec{{ID: 7, Addresses: []string{echo.Addr().String()}}},
		Workloads: []intercept.WorkloadSpec{{ID: 3, Cgroup: cg}},
	}
	ctx := lgtest.Context(t, 30*time.Second)
	if err := k.Apply(ctx, spec); err != nil {
		t.Fatalf("apply: %v", err)
	}
	dir := filepath.Join(k.Mount(), cg)
	if err := intercept.Enforced(pin, dir); err != nil {
		t.Fatalf("enforced: %v", err)
	}
	ln, err := k.Listen(listen, []string{cg})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	cmd := exec.Command("bash", "-c", `exec 3<>/dev/tcp/127.0.0.2/`+itoa(echo.Addr().Port)+`; echo hello >&3; read -r line <&3; echo "$line"`)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := intercept.StartIn(cmd, dir); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	c, o, err := ln.Accept()
	if err != nil {
		t.Fatalf("accept: %v", err)
	}
	defer c.Close()
	if o.OrigDst.String() != echo.Addr().String() {
		t.Errorf("OrigDst = %s, want %s", o.OrigDst, echo.Addr())
	}
	if o.PID != cmd.Process.Pid {
		t.Errorf("PID = %d, want %d", o.PID, cmd.Process.Pid)
	}
	if o.TargetID != 7 || o.WorkloadID != 3 {
		t.Errorf("target/workload = %d/%d, want 7/3", o.TargetID, o.WorkloadID)
	}
	if o.ProcessErr != nil || !strings.HasSuffix(o.Process.Exe, "/bash") {
		t.Errorf("process = %+v, %v", o.Process, o.ProcessErr)
	}
	if o.CgroupPath != cg {
		t.Errorf("CgroupPath = %q, want %q", o.CgroupPath, cg)
	}
	t.Logf("origin: %+v", o)
	br := bufio.NewReader(c)
	line, _ := br.ReadString('\n')
	if line != "hello\n" {
		t.Errorf("got %q", line)
	}
	io.WriteString(c, "from-daemon\n")
	got, _ := io.ReadAll(out)
	if string(got) != "from-daemon\n" {
		t.Errorf("client read %q", got)
	}
	// A direct connection has no record.
	d, err := net.Dial("tcp", listen.String())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	c2, _, err := ln.Accept()
	if c2 != nil {
		c2.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "no redirect record") {
		t.Errorf("direct connect: err = %v, want no redirect record", err)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

// TestFlowBoundToSocket writes flow records by hand for a socket outside
// every workload and checks that the listener honours one only when its
// socket cookie is that socket's: a record can never be presented by a
// socket it was not written for, whatever the tuple.
func TestFlowBoundToSocket(t *testing.T) {
	lgtest.RequireRoot(t)
	log := slog.New(slog.NewTextHandler(t.Output(), nil))
	pin := lgtest.PinDir(t)
	k, err := intercept.Open(pin, log)
	if err != nil {
		lgtest.Unavailable(t, "load bpf: %v", err)
	}
	defer k.Close()
	listen := netip.MustParseAddrPort("127.0.0.1:" + itoa(lgtest.FreePort(t)))
	ln, err := k.Listen(listen, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	flows, err := ebpf.LoadPinnedMap(filepath.Join(pin, "maps", bpf.RedirectMapLgFlows), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer flows.Close()

	for _, tc := range []struct {
		name    string
		cookie  func(own uint64) uint64
		wantErr string
	}{
		{"another socket's record", func(own uint64) uint64 { return own + 1 }, "not the one that connected"},
		{"its own record", func(own uint64) uint64 { return own }, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(fd)
			port := lgtest.FreePort(t)
			if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}, Port: port}); err != nil {
				t.Fatal(err)
			}
			own, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_COOKIE)
			if err != nil {
				t.Fatal(err)
			}
			netns, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
			if err != nil {
				t.Fatal(err)
			}
			var now unix.Timespec
			unix.ClockGettime(unix.CLOCK_MONOTONIC, &now)
			lo := netip.MustParseAddr("::ffff:127.0.0.1").As16()
			key := bpf.RedirectFlowKey{ClientAddr: lo, ListenAddr: lo, ClientPort: uint16(port), ListenPort: listen.Port(), NetnsCookie: netns}
			rec := bpf.RedirectRecord{OrigAddr: lo, OrigPort: 5432, Family: unix.AF_INET, TargetId: 1, WorkloadId: 1,
				Tgid: uint32(os.Getpid()), SocketCookie: tc.cookie(own), Ktime: uint64(now.Nano()), NetnsCookie: netns}
			if err := flows.Put(key, rec); err != nil {
				t.Fatal(err)
			}
			if err := unix.Connect(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}, Port: int(listen.Port())}); err != nil {
				t.Fatal(err)
			}
			c, o, err := ln.Accept()
			if c != nil {
				c.Close()
			}
			switch {
			case tc.wantErr == "" && err != nil:
				t.Errorf("own record refused: %v", err)
			case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
				t.Errorf("err = %v (origin %+v), want %q", err, o, tc.wantErr)
			}
		})
	}
}
