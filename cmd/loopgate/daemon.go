package main

import (
	"context"
	"log/slog"
	"net/http"
	_ "net/http/pprof" // LOOPGATE_PPROF
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/urfave/cli/v3"

	"github.com/loopgate/loopgate/api"
	"github.com/loopgate/loopgate/intercept"
	"github.com/loopgate/loopgate/l7"
	"github.com/loopgate/loopgate/l7/postgres"
	l7ssh "github.com/loopgate/loopgate/l7/ssh"
	"github.com/loopgate/loopgate/l7/tcp"
	"github.com/loopgate/loopgate/policy"
	"github.com/loopgate/loopgate/policy/sqlclass"
	"github.com/loopgate/loopgate/store"
	"github.com/loopgate/loopgate/store/event"
)

func daemonCommand() *cli.Command {
	return &cli.Command{
		Name:  "daemon",
		Usage: "run the daemon: attach the redirect, accept, relay and record",
		UsageText: usage("loopgate daemon [--config FILE] [options]",
			"loopgate daemon --config /etc/loopgate/loopgate.yaml",
			"loopgate daemon --log-format json --drain 30s"),
		Description: `Loads the config, attaches the eBPF programs to every workload cgroup (pinned
under bpffs so redirection survives a restart and fails closed while the daemon
is down), listens for redirected connections and records each session.

Signals: SIGTERM/SIGINT stop accepting, drain open sessions (--drain), close the
store; the pinned programs stay. SIGHUP reloads the config; a bad file keeps
the old one.

With retention: in the config, the store is pruned at start and daily.`,
		Flags: []cli.Flag{
			configFlag, logLevelFlag, logFormatFlag,
			&cli.DurationFlag{Name: "drain", Value: 10 * time.Second, Usage: "how long to let open sessions finish at shutdown"},
			&cli.DurationFlag{Name: "dns-refresh", Value: 30 * time.Second, Usage: "how often to re-resolve target host names"},
		},
		Action: runDaemon,
	}
}

func runDaemon(ctx context.Context, c *cli.Command) error {
	log, err := newLogger(c)
	if err != nil {
		return cli.Exit(err.Error(), exitUsage)
	}
	if addr := os.Getenv("LOOPGATE_PPROF"); addr != "" {
		// Profiling for developers, on loopback only.
		if ap, err := netip.ParseAddrPort(addr); err != nil || !ap.Addr().IsLoopback() {
			return cli.Exit("LOOPGATE_PPROF must be a loopback ip:port", 2)
		}
		// Where sessions wait, too: blocking and lock contention.
		runtime.SetBlockProfileRate(int(10 * time.Microsecond))
		runtime.SetMutexProfileFraction(10)
		go http.ListenAndServe(addr, nil)
		log.Warn("pprof enabled", "addr", addr)
	}
	cfg, err := loadConfig(c)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	d := &daemon{log: log, configPath: c.String("config"), drain: c.Duration("drain")}
	d.cfg.Store(cfg)
	return d.run(ctx, c.Duration("dns-refresh"))
}

// daemon holds the running daemon's parts. cfg is swapped on reload.
type daemon struct {
	log        *slog.Logger
	configPath string
	drain      time.Duration
	cfg        atomic.Pointer[policy.Config]
	kernel     *intercept.Kernel
	srv        *l7.Server
	daemonCG   uint64
}

func (d *daemon) run(ctx context.Context, dnsRefresh time.Duration) error {
	cfg := d.cfg.Load()
	opts := store.Options{Sync: store.SyncNormal}
	if cfg.StoreSync == policy.StoreSyncFull {
		opts.Sync = store.SyncFull
	}
	db, err := store.OpenWith(ctx, cfg.Store, opts)
	if err != nil {
		return err
	}
	defer db.Close()
	db.OnAsyncError(func(err error, n int, kept bool) {
		if kept {
			d.log.Error("queued records not written yet; kept for the next commit", "err", err, "events", n)
			return
		}
		d.log.Error("queued record not written", "err", err, "events", n)
	})
	if err := db.EnableCheckpoints(ctx, cfg.AuditKey); err != nil {
		return err
	}
	maskKey, err := store.DeriveKey(cfg.AuditKey, "loopgate mask hash v1")
	if err != nil {
		return err
	}
	// The local CA for agents that ask PostgreSQL targets for TLS.
	ca, err := postgres.LoadOrCreateCA(filepath.Join(filepath.Dir(cfg.Store), "ca"))
	if err != nil {
		return err
	}
	defer func() {
		// Sign the tail so deleting it later shows in audit verify.
		if err := db.Checkpoint(context.WithoutCancel(ctx)); err != nil {
			d.log.Error("final checkpoint not written", "err", err)
		}
	}()
	if n, err := db.AbandonPendingApprovals(ctx, time.Now()); err != nil {
		return err
	} else if n > 0 {
		d.log.Warn("approval requests left pending by a previous daemon marked abandoned", "count", n)
	}
	if n, err := db.InterruptOpenSessions(ctx, time.Now()); err != nil {
		return err
	} else if n > 0 {
		d.log.Warn("sessions left open by a previous daemon marked interrupted", "count", n)
	}

	mount, err := intercept.Cgroup2Mount()
	if err != nil {
		return err
	}
	dcg, id, err := intercept.EnsureCgroup(mount, cfg.DaemonCgroup)
	if err != nil {
		return err
	}
	// Our own upstream dials must never be redirected: run outside every
	// workload cgroup (the programs also exempt this cgroup by id).
	if err := intercept.JoinCgroup(dcg); err != nil {
		return err
	}
	d.daemonCG = id

	k, err := intercept.Open(cfg.BPFFSDir, d.log)
	if err != nil {
		return err
	}
	d.kernel = k
	defer k.Close() // pins stay: workloads stay redirected, fail closed
	if err := k.UnixCovered(); err != nil {
		d.log.Warn("unix sockets are not covered: default: deny workloads can reach any unix socket", "err", err)
	}

	var accepters []l7.Accepter
	ln4, err := k.Listen(cfg.Listen, workloadCgroups(cfg))
	if err != nil {
		return err
	}
	accepters = append(accepters, d.accepter(ln4))
	listen6 := netip.AddrPortFrom(netip.IPv6Loopback(), cfg.Listen.Port())
	ln6, err := k.Listen(listen6, workloadCgroups(cfg))
	if err != nil {
		d.log.Warn("no IPv6 listener; IPv6-only sockets to targets will fail closed", "addr", listen6, "err", err)
	} else {
		accepters = append(accepters, d.accepter(ln6))
	}
	if err := k.Apply(ctx, d.spec(cfg, ln6 != nil)); err != nil {
		for _, a := range accepters {
			a.Close()
		}
		return err
	}
	learned, learnRec, err := learnedColumns(ctx, db, d.log)
	if err != nil {
		return err
	}
	pg := &postgres.Handler{Classifier: &sqlclass.Classifier{}, Verifier: policy.NewVerifier(cfg.OIDC, nil), MaskKey: maskKey, CA: ca,
		Learned: learned}
	defer pg.Close() // after srv.Run: every session has ended
	// http targets: TLS toward agents with loopgate's CA (runtrust.go).
	hh, err := httpHandler(ca, maskKey)
	if err != nil {
		return err
	}
	defer hh.Close()
	srv := &l7.Server{
		Accepters: accepters,
		Handlers: map[string]l7.Handler{
			policy.ProtocolTCP:      &tcp.Handler{},
			policy.ProtocolPostgres: pg,
			policy.ProtocolSSH:      &l7ssh.Handler{Dir: filepath.Dir(cfg.Store), Verifier: policy.NewVerifier(cfg.OIDC, nil), MaskKey: maskKey},
			policy.ProtocolHTTP:     hh,
		},
		Recorder: db,
		Log:      d.log,
		Drain:    d.drain,
		Policy:   d.cfg.Load,
		Broker: &policy.Broker{
			Policy: d.cfg.Load, Recorder: approvalRecorder{db},
			Timeout: cfg.Approvals.Timeout, MaxPending: cfg.Approvals.MaxPending,
		},
	}
	srv.MaxSessions = raiseNoFile(d.log, cfg.Limits.MaxSessions)
	d.srv = srv
	apiSrv := &api.Server{Broker: srv.Broker, Store: db, Policy: d.cfg.Load, Log: d.log,
		Verifier:       policy.NewVerifier(apiIssuers(cfg), nil),
		LearnedChanged: func(c event.LearnedColumn) { learned.SetState(c.Rule, c.Mask, c.Column, c.State) }}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	bgCtx, cancelBG := context.WithCancel(ctx)
	defer cancelBG()
	var bg sync.WaitGroup
	bg.Go(func() { d.background(bgCtx, hup, dnsRefresh, ln6 != nil) })
	bg.Go(func() { learnRec.run(bgCtx) })
	retain := &store.Retainer{DB: db, Log: d.log, Every: retentionEvery(),
		Keep: func() time.Duration { return d.cfg.Load().Retention.Keep }}
	bg.Go(func() { retain.Run(bgCtx) })
	if cfg.Approvals.Webhook != "" {
		wh := &api.Webhook{URL: cfg.Approvals.Webhook, Broker: srv.Broker, Log: d.log}
		bg.Go(func() { wh.Run(bgCtx) })
	}
	// The API listens before the daemon says it is ready: whoever waits
	// for "daemon ready" (a test, a unit's READY) can reach it at once.
	status := "STATUS=redirecting; api on " + cfg.API.Socket
	if err := apiSrv.Listen(cfg.API.Socket, cfg.API.Listen); err != nil {
		d.log.Error("api not started; approvals cannot be decided", "err", err)
		status = "STATUS=redirecting; api not started: " + err.Error()
	} else {
		bg.Go(func() { apiSrv.Serve(bgCtx) })
	}
	d.log.Info("daemon ready", "listen", cfg.Listen, "ipv6", ln6 != nil, "store", cfg.Store,
		"workloads", len(cfg.Workloads), "targets", len(cfg.Targets), "version", version)
	// systemd (Type=notify): every workload's programs are attached
	// (Apply), the listener and the API are up.
	if _, err := sdNotify("READY=1\n" + status); err != nil {
		d.log.Warn("service manager not told we are ready", "err", err)
	}
	defer context.AfterFunc(ctx, func() { sdNotify("STOPPING=1") })()

	err = srv.Run(ctx)
	cancelBG()
	bg.Wait()
	d.log.Info("daemon stopped; redirection stays pinned (fail closed)")
	return err
}

// retentionEvery is how often the daemon prunes by the config's retention:
// daily, or LOOPGATE_RETENTION_EVERY (a duration, for tests).
func retentionEvery() time.Duration {
	if d, err := time.ParseDuration(os.Getenv("LOOPGATE_RETENTION_EVERY")); err == nil && d > 0 {
		return d
	}
	return 24 * time.Hour
}

// background reloads on SIGHUP and re-resolves target names periodically.
func (d *daemon) background(ctx context.Context, hup <-chan os.Signal, dnsRefresh time.Duration, listen6 bool) {
	tick := time.NewTicker(dnsRefresh)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			d.reload(ctx, listen6)
		case <-tick.C:
			if err := d.kernel.Refresh(ctx); err != nil {
				d.log.Warn("target refresh failed", "err", err)
			}
		}
	}
}

func (d *daemon) reload(ctx context.Context, listen6 bool) {
	old := d.cfg.Load()
	cfg, err := policy.Load(d.configPath)
	if err != nil {
		d.log.Error("reload refused; keeping the running config", "err", err)
		return
	}
	if cfg.Listen != old.Listen || cfg.Store != old.Store || cfg.BPFFSDir != old.BPFFSDir || cfg.DaemonCgroup != old.DaemonCgroup || cfg.AuditKey != old.AuditKey {
		d.log.Error("reload refused: listen, store, bpffs, daemon_cgroup and audit_key need a restart")
		return
	}
	if err := d.kernel.Apply(ctx, d.spec(cfg, listen6)); err != nil {
		d.log.Error("reload failed to apply; kernel may hold a mix, keeping the running config", "err", err)
		return
	}
	d.cfg.Store(cfg)
	revoked := d.srv.Recheck(ctx, cfg)
	d.log.Info("config reloaded", "workloads", len(cfg.Workloads), "targets", len(cfg.Targets), "rules", len(cfg.Rules), "sessions_revoked", revoked)
}

func (d *daemon) spec(cfg *policy.Config, listen6 bool) intercept.Spec {
	s := intercept.Spec{Listen: cfg.Listen, Listen6: listen6, DaemonCgroupID: d.daemonCG}
	for _, t := range cfg.Targets {
		s.Targets = append(s.Targets, intercept.TargetSpec{ID: t.ID, Addresses: t.Addresses})
	}
	for _, w := range cfg.Workloads {
		s.Workloads = append(s.Workloads, intercept.WorkloadSpec{ID: w.ID, Cgroup: w.Cgroup, DefaultDeny: w.DefaultDeny, Allow: allowSpecs(w.Allowed)})
	}
	return s
}

func workloadCgroups(cfg *policy.Config) []string {
	var out []string
	for _, w := range cfg.Workloads {
		out = append(out, w.Cgroup)
	}
	return out
}

// accepter adapts an intercept.Listener to l7: it turns each Origin into a
// policy.Subject under the config current at accept time.
func (d *daemon) accepter(ln *intercept.Listener) l7.Accepter {
	return &originAccepter{ln: ln, d: d}
}

type originAccepter struct {
	ln *intercept.Listener
	d  *daemon
}

func (a *originAccepter) Close() error { return a.ln.Close() }

func (a *originAccepter) Accept() (l7.Accepted, error) {
	conn, o, err := a.ln.Accept()
	if conn == nil {
		return l7.Accepted{}, err
	}
	if err != nil {
		return l7.Accepted{Conn: conn, Err: err}, nil
	}
	facts := policy.KernelFacts{
		TargetID: o.TargetID, WorkloadID: o.WorkloadID,
		OrigDst: o.OrigDst, Client: o.Client,
		PID: o.PID, TID: o.TID, UID: o.UID, GID: o.GID,
		CgroupID: o.CgroupID, CgroupPath: o.CgroupPath, Comm: o.Comm,
		Exe: o.Process.Exe, ProcessStart: o.Process.Start,
		NetnsCookie: o.NetnsCookie, SocketCookie: o.SocketCookie,
	}
	sub, err := a.d.cfg.Load().Subject(facts)
	return l7.Accepted{Conn: conn, Subject: sub, Err: err}, nil
}

// apiIssuers are the configured issuers with the API's own audience: a
// workload's token must not open the approval API.
func apiIssuers(cfg *policy.Config) []policy.Issuer {
	out := make([]policy.Issuer, len(cfg.OIDC))
	for i, is := range cfg.OIDC {
		is.Audience = cfg.API.Audience
		out[i] = is
	}
	return out
}

// approvalRecorder stores broker requests as event.Approval records.
type approvalRecorder struct{ db *store.DB }

func (a approvalRecorder) RecordApproval(ctx context.Context, r policy.Request) error {
	return a.db.RecordApproval(ctx, event.Approval{
		ID: r.ID, SessionID: r.SessionID, State: r.State, Workload: r.Workload, Target: r.Target, Class: r.Class,
		RuleID: r.RuleID, Command: r.Command, ParamsHash: r.ParamsHash, ApprovedBy: r.ApprovedBy,
		DecidedBy: r.DecidedBy, Reason: r.Reason, Scope: r.Scope, Requested: r.Created, Expires: r.Expires, Decided: r.Decided,
	})
}

func allowSpecs(entries []policy.AllowEntry) []intercept.AllowSpec {
	out := make([]intercept.AllowSpec, len(entries))
	for i, e := range entries {
		out[i] = intercept.AllowSpec{Proto: e.Proto, Addr: e.Addr}
	}
	return out
}
