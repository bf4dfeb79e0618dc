package intercept

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/loopgate/loopgate/bpf"
)

// Spec is what the kernel programs enforce: where the listener is, who the
// daemon is, which destinations are targets and which cgroups are workloads.
// cmd builds it from the policy config.
type Spec struct {
	// Listen is the IPv4 loopback listener redirected connections go to.
	Listen netip.AddrPort
	// Listen6 redirects IPv6-only sockets to [::1] at Listen's port.
	Listen6 bool
	// DaemonCgroupID is exempt from every program.
	DaemonCgroupID uint64
	Targets        []TargetSpec
	Workloads      []WorkloadSpec
}

// TargetSpec is one protected target.
type TargetSpec struct {
	ID uint32
	// Addresses are host:port; names are resolved (A and AAAA).
	Addresses []string
}

// WorkloadSpec is one workload cgroup.
type WorkloadSpec struct {
	ID uint32
	// Cgroup is relative to the cgroup2 mount.
	Cgroup      string
	DefaultDeny bool
	Allow       []AllowSpec
}

// AllowSpec is one destination a default-deny workload may reach directly.
type AllowSpec struct {
	// Proto is "tcp", "udp" or "unix".
	Proto string
	// Addr is "ip", "ip:port", "host" or "host:port" (tcp, udp; no port is
	// any port), or an absolute socket path or "@name" (unix).
	Addr string
}

type attachment struct {
	name   string
	attach ebpf.AttachType
}

// attachments are redirect.c's attach points, in attach order. sockops goes
// first so that a connect redirected by connect4/6 always has its flow
// published; getpeername before connect so no redirected socket ever
// reports the listener.
var attachments = []attachment{
	{bpf.RedirectProgLgSockops, ebpf.AttachCGroupSockOps},
	{bpf.RedirectProgLgSockCreate, ebpf.AttachCGroupInetSockCreate},
	{bpf.RedirectProgLgSendmsg4, ebpf.AttachCGroupUDP4Sendmsg},
	{bpf.RedirectProgLgSendmsg6, ebpf.AttachCGroupUDP6Sendmsg},
	{bpf.RedirectProgLgGetpeername4, ebpf.AttachCgroupInet4GetPeername},
	{bpf.RedirectProgLgGetpeername6, ebpf.AttachCgroupInet6GetPeername},
	{bpf.RedirectProgLgConnect4, ebpf.AttachCGroupInet4Connect},
	{bpf.RedirectProgLgConnect6, ebpf.AttachCGroupInet6Connect},
}

// unixAttachments are unix.c's, attached only where the kernel has them
// (UnixHooks).
var unixAttachments = []attachment{
	{bpf.UnixProgLgConnectUnix, ebpf.AttachCgroupUnixConnect},
	{bpf.UnixProgLgSendmsgUnix, ebpf.AttachCgroupUnixSendmsg},
}

// Kernel holds the loaded programs and maps. Apply and Close may be called
// from different goroutines; mu guards spec and links.
type Kernel struct {
	mount  string
	pinDir string
	log    *slog.Logger
	coll   *ebpf.Collection
	// unix is unix.c's programs and allow map; nil where the kernel lacks
	// the unix hooks (unixErr says why).
	unix    *ebpf.Collection
	unixErr error

	mu    sync.Mutex
	spec  Spec
	links map[uint64][]link.Link // cgroup id -> attached links
}

// Open mounts bpffs if needed and loads the programs, reusing maps pinned
// under pinDir by an earlier daemon so in-flight state survives a restart.
// It attaches nothing: Apply does.
func Open(pinDir string, log *slog.Logger) (*Kernel, error) {
	mount, err := Cgroup2Mount()
	if err != nil {
		return nil, err
	}
	if err := EnsureBPFFS(pinDir); err != nil {
		return nil, err
	}
	mapsDir := filepath.Join(pinDir, "maps")
	if err := os.MkdirAll(mapsDir, 0o700); err != nil {
		return nil, fmt.Errorf("create %s: %w", mapsDir, err)
	}
	spec, err := bpf.LoadRedirect()
	if err != nil {
		return nil, err
	}
	opts := &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: mapsDir}}
	coll, err := ebpf.NewCollectionWithOptions(spec, *opts)
	if errors.Is(err, ebpf.ErrMapIncompatible) {
		// Maps pinned by a different build: replace them. Links keep the
		// old programs (and maps) alive until Apply updates them.
		log.Warn("pinned maps incompatible with this build; replacing", "dir", mapsDir)
		if err := removePins(mapsDir); err != nil {
			return nil, err
		}
		coll, err = ebpf.NewCollectionWithOptions(spec, *opts)
	}
	if err != nil {
		var verr *ebpf.VerifierError
		if errors.As(err, &verr) {
			return nil, fmt.Errorf("load bpf programs: %+v", verr)
		}
		return nil, fmt.Errorf("load bpf programs: %w", err)
	}
	// Flows published to an earlier daemon's listener can never be
	// accepted by this one (that listener and its queue are gone): a
	// restart must not let another socket claim them.
	if err := clearMap[bpf.RedirectFlowKey, bpf.RedirectRecord](coll.Maps[bpf.RedirectMapLgFlows]); err != nil {
		coll.Close()
		return nil, fmt.Errorf("clear stale flows: %w", err)
	}
	k := &Kernel{mount: mount, pinDir: pinDir, log: log, coll: coll, links: map[uint64][]link.Link{}}
	k.unix, k.unixErr = loadUnix(coll, mapsDir)
	return k, nil
}

// loadUnix loads unix.c's programs, sharing redirect.c's workload and config
// maps, or says why this kernel cannot run them.
func loadUnix(coll *ebpf.Collection, mapsDir string) (*ebpf.Collection, error) {
	if err := UnixHooks(); err != nil {
		return nil, err
	}
	spec, err := bpf.LoadUnix()
	if err != nil {
		return nil, err
	}
	u, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{
		Maps: ebpf.MapOptions{PinPath: mapsDir},
		MapReplacements: map[string]*ebpf.Map{
			bpf.UnixMapLgWorkloads: coll.Maps[bpf.RedirectMapLgWorkloads],
			bpf.UnixMapLgConfig:    coll.Maps[bpf.RedirectMapLgConfig],
		},
	})
	if err != nil {
		var verr *ebpf.VerifierError
		if errors.As(err, &verr) {
			return nil, fmt.Errorf("load unix socket programs: %+v", verr)
		}
		return nil, fmt.Errorf("load unix socket programs: %w", err)
	}
	return u, nil
}

// UnixCovered reports whether unix sockets are enforced (nil), or why not.
func (k *Kernel) UnixCovered() error { return k.unixErr }

// Mount is the cgroup2 mount point.
func (k *Kernel) Mount() string { return k.mount }

// Close releases this process's handles. Pinned links and maps stay, so
// workloads stay redirected (and fail closed while no daemon listens).
func (k *Kernel) Close() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	for id, ls := range k.links {
		for _, l := range ls {
			l.Close()
		}
		delete(k.links, id)
	}
	if k.coll != nil {
		k.coll.Close()
		k.coll = nil
	}
	if k.unix != nil {
		k.unix.Close()
		k.unix = nil
	}
	return nil
}

// Apply makes the kernel enforce spec: config first, then targets, workloads
// and allow lists, then attaches programs to every workload cgroup (creating
// it if missing) and detaches them from cgroups no longer in spec. Host
// names are resolved with ctx.
func (k *Kernel) Apply(ctx context.Context, spec Spec) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.coll == nil {
		return errors.New("apply: kernel closed")
	}
	if err := k.setConfig(spec); err != nil {
		return err
	}
	if err := k.syncTargets(ctx, spec.Targets); err != nil {
		return err
	}
	keep := map[uint64]bool{}
	workloads := map[uint64]bpf.RedirectWorkloadVal{}
	allowed := map[bpf.RedirectAllowKey]bool{}
	allowedUnix := map[bpf.UnixUnixAllowKey]bool{}
	for _, w := range spec.Workloads {
		dir, id, err := EnsureCgroup(k.mount, w.Cgroup)
		if err != nil {
			return err
		}
		val := bpf.RedirectWorkloadVal{WorkloadId: w.ID}
		if w.DefaultDeny {
			val.Flags = 1
		}
		workloads[id] = val
		for _, a := range w.Allow {
			if a.Proto == "unix" {
				allowedUnix[unixAllowKey(w.ID, a.Addr)] = true
				continue
			}
			keys, err := resolveAllow(ctx, a)
			if err != nil {
				k.log.Warn("allow entry not resolved; skipped", "workload_cgroup", w.Cgroup, "allow", a.Proto+"://"+a.Addr, "err", err)
			}
			for _, key := range keys {
				key.WorkloadId = w.ID
				allowed[key] = true
			}
		}
		keep[id] = true
		if err := k.attach(dir, id); err != nil {
			return err
		}
	}
	if err := syncMap(k.coll.Maps[bpf.RedirectMapLgWorkloads], workloads); err != nil {
		return fmt.Errorf("sync workloads map: %w", err)
	}
	if err := syncMap(k.coll.Maps[bpf.RedirectMapLgAllowed], boolsToU8(allowed)); err != nil {
		return fmt.Errorf("sync allow map: %w", err)
	}
	if k.unix != nil {
		if err := syncMap(k.unix.Maps[bpf.UnixMapLgAllowedUnix], boolsToU8(allowedUnix)); err != nil {
			return fmt.Errorf("sync unix allow map: %w", err)
		}
	}
	if err := k.detachExcept(keep); err != nil {
		return err
	}
	k.spec = spec
	return nil
}

// Refresh re-resolves target host names of the last applied spec.
func (k *Kernel) Refresh(ctx context.Context) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.coll == nil {
		return errors.New("refresh: kernel closed")
	}
	return k.syncTargets(ctx, k.spec.Targets)
}

func (k *Kernel) setConfig(spec Spec) error {
	if !spec.Listen.Addr().Is4() {
		return fmt.Errorf("listener %s is not IPv4", spec.Listen)
	}
	cfg := bpf.RedirectConfig{
		Listen4:        spec.Listen.Addr().As4(),
		Listen6:        netip.IPv6Loopback().As16(),
		Port:           spec.Listen.Port(),
		DaemonCgroupId: spec.DaemonCgroupID,
	}
	if spec.Listen6 {
		cfg.HasListen6 = 1
	}
	if err := k.coll.Maps[bpf.RedirectMapLgConfig].Put(uint32(0), cfg); err != nil {
		return fmt.Errorf("set bpf config: %w", err)
	}
	return nil
}

func (k *Kernel) syncTargets(ctx context.Context, targets []TargetSpec) error {
	want := map[bpf.RedirectTargetKey]bpf.RedirectTargetVal{}
	for _, t := range targets {
		for _, a := range t.Addresses {
			aps, err := resolveHostPort(ctx, a)
			if err != nil {
				// Keep what the map had for this address rather than
				// unprotect it on a DNS hiccup.
				k.log.Warn("target address not resolved; keeping previous entries", "address", a, "err", err)
				if err := k.keepExisting(t.ID, want); err != nil {
					return err
				}
				continue
			}
			for _, ap := range aps {
				want[targetKey(ap)] = bpf.RedirectTargetVal{TargetId: t.ID}
			}
		}
	}
	if err := syncMap(k.coll.Maps[bpf.RedirectMapLgTargets], want); err != nil {
		return fmt.Errorf("sync targets map: %w", err)
	}
	return nil
}

func (k *Kernel) keepExisting(id uint32, want map[bpf.RedirectTargetKey]bpf.RedirectTargetVal) error {
	var key bpf.RedirectTargetKey
	var val bpf.RedirectTargetVal
	it := k.coll.Maps[bpf.RedirectMapLgTargets].Iterate()
	for it.Next(&key, &val) {
		if val.TargetId == id {
			want[key] = val
		}
	}
	return it.Err()
}

func targetKey(ap netip.AddrPort) bpf.RedirectTargetKey {
	return bpf.RedirectTargetKey{Addr: as16(ap.Addr()), Port: ap.Port()}
}

// as16 is the 16-byte form the maps use: IPv4 as v4-mapped IPv6.
func as16(a netip.Addr) [16]byte {
	return a.Unmap().As16()
}

func resolveHostPort(ctx context.Context, hostport string) ([]netip.AddrPort, error) {
	host, portStr, err := net.SplitHostPort(hostport)
	if err != nil {
		return nil, err
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("bad port %q", portStr)
	}
	addrs, err := resolveHost(ctx, host)
	if err != nil {
		return nil, err
	}
	out := make([]netip.AddrPort, 0, len(addrs))
	for _, a := range addrs {
		out = append(out, netip.AddrPortFrom(a, uint16(port)))
	}
	return out, nil
}

func resolveHost(ctx context.Context, host string) ([]netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{a.Unmap()}, nil
	}
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", host, err)
	}
	for i := range addrs {
		addrs[i] = addrs[i].Unmap()
	}
	return addrs, nil
}

// unixAllowKey is the allowed_unix key of a path ("/run/x.sock") or an
// abstract name ("@name"), laid out as unix.c normalises what a process
// passes.
func unixAllowKey(workload uint32, addr string) bpf.UnixUnixAllowKey {
	k := bpf.UnixUnixAllowKey{WorkloadId: workload}
	if name, ok := strings.CutPrefix(addr, "@"); ok {
		copy(k.Path[1:], name)
		k.Len = uint32(1 + len(name))
		return k
	}
	copy(k.Path[:], addr)
	return k
}

func resolveAllow(ctx context.Context, a AllowSpec) ([]bpf.RedirectAllowKey, error) {
	proto := uint8(unix.IPPROTO_TCP)
	if a.Proto == "udp" {
		proto = unix.IPPROTO_UDP
	}
	entry := a.Addr
	host, port := entry, uint64(0)
	if h, p, err := net.SplitHostPort(entry); err == nil {
		host = h
		if port, err = strconv.ParseUint(p, 10, 16); err != nil {
			return nil, fmt.Errorf("bad port %q", p)
		}
	}
	addrs, err := resolveHost(ctx, host)
	if err != nil {
		return nil, err
	}
	var keys []bpf.RedirectAllowKey
	for _, a := range addrs {
		keys = append(keys, bpf.RedirectAllowKey{Addr: as16(a), Port: uint16(port), Proto: proto})
	}
	return keys, nil
}

func boolsToU8[K comparable](m map[K]bool) map[K]uint8 {
	out := make(map[K]uint8, len(m))
	for k := range m {
		out[k] = 1
	}
	return out
}

// clearMap deletes every entry of m.
func clearMap[K comparable, V any](m *ebpf.Map) error {
	return syncMap(m, map[K]V{})
}

// syncMap makes m hold exactly want: puts every entry, then deletes keys not
// wanted. Puts come first so an entry is never briefly missing.
func syncMap[K comparable, V any](m *ebpf.Map, want map[K]V) error {
	for k, v := range want {
		if err := m.Put(k, v); err != nil {
			return err
		}
	}
	var stale []K
	var key K
	var val V
	it := m.Iterate()
	for it.Next(&key, &val) {
		if _, ok := want[key]; !ok {
			stale = append(stale, key)
		}
	}
	if err := it.Err(); err != nil {
		return err
	}
	for _, key := range stale {
		if err := m.Delete(key); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return err
		}
	}
	return nil
}

func (k *Kernel) linkDir(cgroupID uint64) string {
	return filepath.Join(k.pinDir, "links", strconv.FormatUint(cgroupID, 10))
}

// attach attaches every program to the cgroup at dir, or, where a pinned
// link from an earlier daemon exists, swaps its program atomically.
func (k *Kernel) attach(dir string, id uint64) error {
	ldir := k.linkDir(id)
	if err := os.MkdirAll(ldir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", ldir, err)
	}
	if _, done := k.links[id]; done {
		// Already attached by this process: links point at our programs.
		return nil
	}
	progs := k.coll.Programs
	all := attachments
	if k.unix != nil {
		progs = maps.Clone(progs)
		maps.Copy(progs, k.unix.Programs)
		all = append(slices.Clip(all), unixAttachments...)
	}
	var ls []link.Link
	for _, a := range all {
		prog := progs[a.name]
		pin := filepath.Join(ldir, a.name)
		l, err := link.LoadPinnedLink(pin, nil)
		if err == nil {
			if err := l.Update(prog); err != nil {
				l.Close()
				closeAll(ls)
				return fmt.Errorf("update pinned link %s: %w", pin, err)
			}
		} else {
			if !errors.Is(err, fs.ErrNotExist) {
				k.log.Warn("pinned link unusable; re-attaching", "pin", pin, "err", err)
				os.Remove(pin)
			}
			l, err = link.AttachCgroup(link.CgroupOptions{Path: dir, Attach: a.attach, Program: prog})
			if err != nil {
				closeAll(ls)
				return fmt.Errorf("attach %s to %s: %w", a.name, dir, err)
			}
			if err := l.Pin(pin); err != nil {
				l.Close()
				closeAll(ls)
				return fmt.Errorf("pin %s: %w", pin, err)
			}
		}
		ls = append(ls, l)
	}
	k.links[id] = ls
	return nil
}

func closeAll(ls []link.Link) {
	for _, l := range ls {
		l.Close()
	}
}

// detachExcept detaches and unpins links of cgroups not in keep, including
// pins left by an earlier daemon for workloads since removed.
func (k *Kernel) detachExcept(keep map[uint64]bool) error {
	entries, err := os.ReadDir(filepath.Join(k.pinDir, "links"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("read pinned links: %w", err)
	}
	for _, e := range entries {
		id, err := strconv.ParseUint(e.Name(), 10, 64)
		if err != nil || keep[id] {
			continue
		}
		if ls, ok := k.links[id]; ok {
			closeAll(ls)
			delete(k.links, id)
		}
		if err := removePins(filepath.Join(k.pinDir, "links", e.Name())); err != nil {
			return err
		}
		k.log.Info("workload cgroup detached", "cgroup_id", id)
	}
	return nil
}

// removePins unpins everything below dir (detaching pinned links whose last
// reference that was) and removes dir.
func removePins(dir string) error {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", dir, err)
	}
	for _, e := range entries {
		p := filepath.Join(dir, e.Name())
		if e.IsDir() {
			if err := removePins(p); err != nil {
				return err
			}
			continue
		}
		if err := os.Remove(p); err != nil {
			return fmt.Errorf("unpin %s: %w", p, err)
		}
	}
	if err := os.Remove(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", dir, err)
	}
	return nil
}

// Enforced reports whether every program is attached to the cgroup at dir
// through links pinned under pinDir: the check `loopgate run` makes before it
// starts anything in a workload. unix.c's programs count where the daemon
// loaded them, which its pinned unix allow map shows: a stat, where asking
// the kernel's BTF again would cost every run about 14 ms.
func Enforced(pinDir, dir string) error {
	id, err := CgroupID(dir)
	if err != nil {
		return err
	}
	all := attachments
	if _, err := os.Stat(filepath.Join(pinDir, "maps", bpf.UnixMapLgAllowedUnix)); err == nil {
		all = append(slices.Clip(all), unixAttachments...)
	}
	for _, a := range all {
		pin := filepath.Join(pinDir, "links", strconv.FormatUint(id, 10), a.name)
		l, err := link.LoadPinnedLink(pin, nil)
		if err != nil {
			return fmt.Errorf("%s not attached to %s: %w", a.name, dir, err)
		}
		info, err := l.Info()
		l.Close()
		if err != nil {
			return fmt.Errorf("inspect %s: %w", pin, err)
		}
		if cg := info.Cgroup(); cg == nil || cg.CgroupId != id {
			return fmt.Errorf("%s: pinned link is not attached to %s", a.name, dir)
		}
	}
	return nil
}

// Teardown ends redirection: it unpins (and so detaches) every link and map
// under pinDir and removes the given workload cgroups (relative to the
// cgroup2 mount) and their parents where loopgate created them
// (EnsureCgroup marked them) and they are empty. A cgroup it found, and
// every parent above one, stays. It is the only way redirection ends.
func Teardown(pinDir string, cgroups []string) (removed []string, err error) {
	if err := removePins(pinDir); err != nil {
		return nil, err
	}
	mount, err := Cgroup2Mount()
	if err != nil {
		return nil, err
	}
	for _, c := range cgroups {
		for p := filepath.Clean("/" + c); p != "/"; p = filepath.Dir(p) {
			dir := filepath.Join(mount, p)
			if !createdByLoopgate(dir) {
				break
			}
			ok, err := RemoveCgroup(dir)
			if err != nil {
				return removed, err
			}
			if !ok {
				break
			}
			removed = append(removed, strings.TrimPrefix(p, "/"))
		}
	}
	return removed, nil
}
