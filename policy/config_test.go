package policy

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

const validConfig = `listen: 127.0.0.1:15001
store: /var/lib/loopgate/loopgate.db
targets:
  - name: echo
    protocol: tcp
    address: 127.0.0.2:7000          # ip:port or host:port; or addresses: [..]
  - name: api
    protocol: tcp
    addresses: ["[::1]:8443", "api.internal:443"]
workloads:
  - name: demo
    cgroup: loopgate/demo
    default: allow
  - name: locked
    cgroup: /loopgate/locked/
    default: deny
    allow: ["10.0.0.7", "db.internal:5432"]
`

func TestParseValid(t *testing.T) {
	t.Parallel()
	cfg, err := Parse("loopgate.yaml", []byte(validConfig))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Listen.String() != "127.0.0.1:15001" || len(cfg.Targets) != 2 || len(cfg.Workloads) != 2 {
		t.Fatalf("cfg = %+v", cfg)
	}
	if got := cfg.Targets[1].Addresses; len(got) != 2 || got[1] != "api.internal:443" {
		t.Errorf("addresses = %v", got)
	}
	w, _ := cfg.WorkloadByName("locked")
	if w.Cgroup != "loopgate/locked" || !w.DefaultDeny || len(w.Allow) != 2 {
		t.Errorf("locked = %+v", w)
	}
	if cfg.BPFFSDir != DefaultBPFFSDir || cfg.DaemonCgroup != DefaultDaemonCgroup {
		t.Errorf("defaults = %q %q", cfg.BPFFSDir, cfg.DaemonCgroup)
	}
	if got, ok := cfg.WorkloadByCgroup("loopgate/demo/sub/deeper"); !ok || got.Name != "demo" {
		t.Errorf("WorkloadByCgroup = %v %v", got, ok)
	}
	if _, ok := cfg.WorkloadByCgroup("loopgate/demonic"); ok {
		t.Error("loopgate/demonic matched loopgate/demo")
	}
	tg, _ := cfg.TargetByName("echo")
	if got, ok := cfg.Target(tg.ID); !ok || got.Name != "echo" {
		t.Errorf("Target(%d) = %v", tg.ID, got)
	}
}

func TestParseErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		yaml string
		want string // substring, including position
	}{
		{"unknown top key", "listen: 127.0.0.1:1\nlisten_on: x\n", `f.yaml:2:1: config: unknown key "listen_on"`},
		{"unknown target key", "targets:\n  - name: x\n    protocol: tcp\n    adress: 1.2.3.4:5\n", `f.yaml:4:5: target: unknown key "adress"`},
		{"duplicate key", "store: a\nstore: b\n", `f.yaml:2:1: config: duplicate key "store"`},
		{"bad store sync", "store: {path: /a, sync: always}\n", `f.yaml:1:25: store: sync must be normal or full, got "always"`},
		{"unknown store key", "store: {file: /a}\n", `f.yaml:1:9: store: unknown key "file"`},
		{"address of two targets", "targets:\n  - {name: a, protocol: tcp, address: 1.1.1.1:1}\n  - {name: b, protocol: tcp, address: 1.1.1.1:1}\n", `target "b": address 1.1.1.1:1 is already target "a"'s`},
		{"duplicate target", "targets:\n  - {name: x, protocol: tcp, address: 1.1.1.1:1}\n  - {name: x, protocol: tcp, address: 1.1.1.1:2}\n", `f.yaml:3:5: target: duplicate name "x"`},
		{"unknown protocol", "targets:\n  - name: db\n    protocol: ftp\n    address: 1.1.1.1:21\n", `f.yaml:3:15: target "db": unknown protocol "ftp"`},
		{"no port", "targets:\n  - name: db\n    protocol: tcp\n    address: 1.1.1.1\n", `f.yaml:2:5: target "db": address "1.1.1.1": want host:port`},
		{"bad port", "targets:\n  - name: db\n    protocol: tcp\n    address: 1.1.1.1:99999\n", `bad port "99999"`},
		{"listen not loopback", "listen: 10.0.0.1:15001\n", `f.yaml:1:9: listen: must be an IPv4 loopback address`},
		{"listen garbage", "listen: nope\n", `f.yaml:1:9: listen: want ip:port`},
		{"bad default", "workloads:\n  - name: w\n    cgroup: a/b\n    default: maybe\n", `f.yaml:4:14: workload "w": default must be allow or deny`},
		{"cgroup escapes", "workloads:\n  - name: w\n    cgroup: ../etc\n", `f.yaml:3:13: workload "w": cgroup "../etc" must be a path below`},
		{"cgroup root", "workloads:\n  - name: w\n    cgroup: /\n", `must be a path below`},
		{"same cgroup twice", "workloads:\n  - {name: a, cgroup: x/y}\n  - {name: b, cgroup: /x/y}\n", `cgroup "x/y" is already workload "a"'s`},
		{"daemon inside workload", "daemon_cgroup: lg/w/daemon\nworkloads:\n  - {name: a, cgroup: lg/w}\n", `f.yaml:1:16: daemon_cgroup: "lg/w/daemon" lies inside workload "a"`},
		{"bad name", "workloads:\n  - {name: 'a b', cgroup: x}\n", `workload: name "a b" must match`},
		{"not a mapping", "- a\n- b\n", `f.yaml:1:1: config must be a mapping`},
		{"syntax", "targets: [\n", `f.yaml:`},
		{"empty", "", `f.yaml:1:1: empty config`},
		{"scalar list", "targets: 3\n", `f.yaml:1:10: targets must be a list`},
		{"bad allow", "workloads:\n  - {name: a, cgroup: x, allow: ['not a host!']}\n", `allow "not a host!"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := Parse("f.yaml", []byte(tc.yaml))
			if err == nil {
				t.Fatalf("no error; cfg = %+v", cfg)
			}
			if cfg != nil {
				t.Errorf("got a config with the error")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q\ndoes not contain %q", err, tc.want)
			}
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Errorf("error is not a *ConfigError: %T", err)
			}
		})
	}
}

func TestSubject(t *testing.T) {
	t.Parallel()
	cfg, err := Parse("f.yaml", []byte(validConfig))
	if err != nil {
		t.Fatal(err)
	}
	echo, _ := cfg.TargetByName("echo")
	demo, _ := cfg.WorkloadByName("demo")
	tests := []struct {
		name         string
		facts        KernelFacts
		wantWorkload string
		wantErr      bool
	}{
		{"by kernel workload id", KernelFacts{TargetID: echo.ID, WorkloadID: demo.ID}, "demo", false},
		{"by cgroup path", KernelFacts{TargetID: echo.ID, WorkloadID: 0xffffffff, CgroupPath: "loopgate/locked/x"}, "locked", false},
		{"unknown target", KernelFacts{TargetID: 12345, WorkloadID: demo.ID}, "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := cfg.Subject(tc.facts)
			if (err != nil) != tc.wantErr {
				t.Fatalf("err = %v", err)
			}
			if err == nil && s.Workload != tc.wantWorkload {
				t.Errorf("workload = %q, want %q", s.Workload, tc.wantWorkload)
			}
		})
	}
}

// FuzzParse feeds arbitrary bytes to the config parser: it must never panic
// and must return a config xor an error.
func FuzzParse(f *testing.F) {
	f.Add([]byte(validConfig))
	f.Add([]byte("listen: 127.0.0.1:1\n"))
	f.Add([]byte("a: &x [*x]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := Parse("fuzz.yaml", data)
		if (cfg == nil) == (err == nil) {
			t.Fatalf("cfg %v, err %v: want exactly one", cfg, err)
		}
		if cfg != nil {
			for _, w := range cfg.Workloads {
				if w.Cgroup == "" || slices.Contains(strings.Split(w.Cgroup, "/"), "..") {
					t.Fatalf("bad cgroup %q accepted", w.Cgroup)
				}
			}
		}
	})
}

func TestParseStore(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, yaml, path, sync string
	}{
		{name: "default", yaml: "listen: 127.0.0.1:1\n", path: DefaultStore, sync: StoreSyncNormal},
		{name: "path", yaml: "store: /x/lg.db\n", path: "/x/lg.db", sync: StoreSyncNormal},
		{name: "mapping", yaml: "store: {path: /x/lg.db, sync: full}\n", path: "/x/lg.db", sync: StoreSyncFull},
		{name: "sync only", yaml: "store: {sync: normal}\n", path: DefaultStore, sync: StoreSyncNormal},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse("f.yaml", []byte(tt.yaml))
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Store != tt.path || cfg.StoreSync != tt.sync {
				t.Errorf("store = %q, sync %q; want %q, %q", cfg.Store, cfg.StoreSync, tt.path, tt.sync)
			}
		})
	}
}
