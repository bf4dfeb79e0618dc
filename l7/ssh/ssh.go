package ssh

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/loopgate/loopgate/l7"
	"github.com/loopgate/loopgate/policy"
	"github.com/loopgate/loopgate/store/event"
)

// Handler serves SSH sessions. It is safe for concurrent use; one Handler
// serves every ssh target.
type Handler struct {
	// Dir holds the host and user CA keys (HostCAFile, UserCAFile),
	// created on first use: the daemon's state directory.
	Dir string
	// Verifier checks OIDC tokens workloads present as their password;
	// nil refuses workloads that need one.
	Verifier *policy.Verifier
	// MaskKey keys the hash masking mode.
	MaskKey []byte
	// DialTimeout bounds the upstream dial and login; 0 means 15 seconds.
	DialTimeout time.Duration
	// LoginTimeout bounds the agent's handshake; 0 means 30 seconds.
	LoginTimeout time.Duration
	// KeepAlive is how often the target is asked whether it is alive
	// (keepalive@openssh.com); no answer within as long again ends the
	// session. 0 means 30 seconds.
	KeepAlive time.Duration

	once    sync.Once
	initErr error
	userCA  *CA
	hosts   *hostKeys
}

func (h *Handler) init() error {
	h.once.Do(func() {
		hostCA, err := LoadOrCreateCA(filepath.Join(h.Dir, HostCAFile))
		if err != nil {
			h.initErr = err
			return
		}
		if h.userCA, err = LoadOrCreateCA(filepath.Join(h.Dir, UserCAFile)); err != nil {
			h.initErr = err
			return
		}
		h.hosts, h.initErr = newHostKeys(hostCA)
	})
	return h.initErr
}

// loginInfo is what the agent asked for at login, for the record.
type loginInfo struct {
	User    string `json:"user"`
	Method  string `json:"method"`
	Version string `json:"client_version"`
	KeyID   string `json:"cert_key_id,omitempty"`
	Serial  uint64 `json:"cert_serial,omitempty"`
	Until   string `json:"cert_valid_before,omitempty"`
	HostKey string `json:"target_host_key,omitempty"`
}

// Serve runs one SSH session: the agent's handshake with a host
// certificate for the target, a login upstream with the daemon's
// credentials, then each channel bridged under policy.
func (h *Handler) Serve(ctx context.Context, conn net.Conn, s *l7.Session) (l7.Result, error) {
	client := &l7.CountingConn{Conn: conn}
	result := client.Result
	if err := h.init(); err != nil {
		return result(), err
	}
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	lt := h.LoginTimeout
	if lt == 0 {
		lt = 30 * time.Second
	}
	conn.SetDeadline(time.Now().Add(lt))

	sub := s.Subject
	cfg := s.Policy()
	hostSigner, err := h.hosts.signer(HostPrincipals(sub.Target.Addresses, sub.OrigDst.Addr()))
	if err != nil {
		return result(), err
	}
	var method string
	var tokenErr error
	sc := &ssh.ServerConfig{ServerVersion: "SSH-2.0-loopgate", MaxAuthTries: 3}
	agentConn, ciphers := peekVersion(client)
	sc.Ciphers = ciphers
	if w, ok := cfg.WorkloadByName(sub.Workload); ok && w.Token != nil {
		// The workload's OIDC token is its password; nothing else logs in.
		sc.PasswordCallback = func(_ ssh.ConnMetadata, pw []byte) (*ssh.Permissions, error) {
			method = "password (oidc token)"
			if err := cfg.Authenticate(ctx, h.Verifier, sub, string(pw)); err != nil {
				tokenErr = err
				return nil, fmt.Errorf("oidc token refused: %w", err)
			}
			tokenErr = nil
			return nil, nil
		}
	} else {
		// Identity comes from the kernel: the first offer is accepted.
		sc.NoClientAuth = true
		sc.NoClientAuthCallback = func(ssh.ConnMetadata) (*ssh.Permissions, error) { method = "none"; return nil, nil }
		sc.PublicKeyCallback = func(_ ssh.ConnMetadata, k ssh.PublicKey) (*ssh.Permissions, error) {
			method = "publickey " + ssh.FingerprintSHA256(k)
			return nil, nil
		}
		sc.PasswordCallback = func(ssh.ConnMetadata, []byte) (*ssh.Permissions, error) { method = "password"; return nil, nil }
	}
	sc.AddHostKey(hostSigner)
	sconn, chans, reqs, err := ssh.NewServerConn(agentConn, sc)
	if err != nil {
		if tokenErr != nil {
			msg := "loopgate: OIDC token refused: " + tokenErr.Error()
			d := policy.Decision{Action: policy.Deny, Reason: msg}
			s.Record(ctx, event.Event{Kind: event.KindDecision, Text: "login", Decision: string(d.Action), Error: msg})
			return result(), &l7.DeniedError{Decision: d}
		}
		return result(), fmt.Errorf("agent handshake: %w", err)
	}
	defer sconn.Close()
	conn.SetDeadline(time.Time{})
	info := loginInfo{User: sconn.User(), Method: method, Version: string(sconn.ClientVersion())}

	// Session admission, then the upstream login. Until both pass, every
	// channel is refused with the reason (the agent's ssh prints it).
	login := &l7.Command{Kind: event.KindDecision, Text: "login " + info.User, Decision: cfg.Admit(sub)}
	var up *upstream
	refusal := ""
	if err := s.Authorize(ctx, login); err != nil {
		refusal = "the session could not be recorded"
	} else if login.Decision.Action != policy.Allow {
		refusal = login.Decision.Reason
	} else {
		keyID := fmt.Sprintf("loopgate:%s:%s", s.ID, sub.Workload)
		up, err = h.dial(ctx, sub.Target, sub.OrigDst.String(), keyID, h.extensions(s))
		if err != nil {
			s.Log.Error("upstream login failed", "err", err)
			refusal = "cannot reach the target"
			s.Record(ctx, event.Event{Kind: event.KindNote, Text: "upstream login", Error: err.Error()})
		} else {
			defer up.client.Close()
			if up.cert != nil {
				info.KeyID, info.Serial, info.Until = up.cert.KeyID, up.cert.Serial, up.cert.ValidBefore.UTC().Format(time.RFC3339)
			}
			info.HostKey = up.hostKey
		}
	}
	js, _ := json.Marshal(info)
	s.RecordAsync(event.Event{Kind: event.KindNote, Text: "ssh login", Params: string(js)})

	b := &bridge{h: h, s: s, up: up, agent: sconn}
	var wg sync.WaitGroup
	stopKA := make(chan struct{})
	wg.Go(b.safe(func() { b.globalRequests(reqs) }))
	if up != nil {
		// The target hung up: end the agent's connection too.
		wg.Go(func() { up.client.Wait(); sconn.Close() })
		wg.Go(b.safe(func() { b.keepalive(stopKA, cmp.Or(h.KeepAlive, 30*time.Second)) }))
	}
	for nc := range chans {
		if refusal != "" {
			nc.Reject(ssh.Prohibited, "loopgate: "+refusal)
			continue
		}
		if n := b.open.Add(1); n > maxChannels {
			b.open.Add(-1)
			nc.Reject(ssh.ResourceShortage, fmt.Sprintf("loopgate: more than %d channels open", maxChannels))
			continue
		}
		done := func() { b.open.Add(-1) }
		switch nc.ChannelType() {
		case "session":
			wg.Go(b.safe(func() { defer done(); b.session(ctx, nc) }))
		case "direct-tcpip":
			wg.Go(b.safe(func() { defer done(); b.directTCPIP(ctx, nc) }))
		default:
			done()
			// x11, auth-agent@openssh.com, direct-streamlocal@openssh.com:
			// no rule names them.
			s.RecordAsync(event.Event{Kind: event.KindDecision, Text: "channel " + nc.ChannelType(), Decision: string(policy.Deny),
				Error: "channel type refused"})
			nc.Reject(ssh.Prohibited, "loopgate: channel type "+nc.ChannelType()+" refused")
		}
	}
	// The agent hung up.
	close(stopKA)
	if up != nil {
		up.client.Close()
	}
	b.closeAll()
	wg.Wait()
	if p := b.panicked.Load(); p != nil {
		return result(), fmt.Errorf("internal error: %v", *p)
	}
	if ctx.Err() != nil {
		return result(), context.Cause(ctx)
	}
	if refusal != "" && login.Decision.Action != policy.Allow {
		return result(), &l7.DeniedError{Decision: login.Decision}
	}
	return result(), nil
}

// extensions are the certificate extensions policy grants this session:
// permit-pty only if shells may run, permit-port-forwarding only if
// forwards may; never agent or X11 forwarding or user rc.
func (h *Handler) extensions(s *l7.Session) []string {
	var ext []string
	if s.Check(ClassShell).Action != policy.Deny {
		ext = append(ext, "permit-pty")
	}
	if s.Check(ClassForward).Action != policy.Deny || forwardPatterns(s) {
		ext = append(ext, "permit-port-forwarding")
	}
	return ext
}

// bridge is one agent connection's state. mu guards chans and casts.
type bridge struct {
	h     *Handler
	s     *l7.Session
	up    *upstream
	agent *ssh.ServerConn

	open     atomic.Int32 // channels being served
	panicked atomic.Pointer[any]

	mu    sync.Mutex
	chans []ssh.Channel
	casts int // casts started, to name them
}

// maxChannels bounds the channels one agent connection has open at once
// (OpenSSH's sshd allows 10 sessions a connection by default).
const maxChannels = 64

// safe wraps a goroutine of the session: a panic is logged with its
// stack and ends this agent's connection, never the daemon (l7.Server's
// recover sees only the session's own goroutine).
func (b *bridge) safe(fn func()) func() {
	return func() {
		defer func() {
			if p := recover(); p != nil {
				b.s.Log.Error("ssh session goroutine panicked", "panic", p, "stack", string(debug.Stack()))
				b.panicked.CompareAndSwap(nil, &p)
				b.agent.Close()
			}
		}()
		fn()
	}
}

// track remembers an open channel pair so closeAll can end it.
func (b *bridge) track(chs ...ssh.Channel) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.chans = append(b.chans, chs...)
}

func (b *bridge) closeAll() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, c := range b.chans {
		c.Close()
	}
}

// keepalive asks the target every period whether it is alive, and ends
// the session when it does not answer within another period: a target
// that vanished without a FIN must not hold the agent forever.
func (b *bridge) keepalive(stop <-chan struct{}, period time.Duration) {
	t := time.NewTicker(period)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		answered := make(chan struct{})
		go func() {
			b.up.client.SendRequest("keepalive@openssh.com", true, nil) // any reply will do
			close(answered)
		}()
		select {
		case <-answered:
		case <-stop:
			return
		case <-time.After(period):
			b.s.Log.Warn("target did not answer a keepalive; ending the session")
			b.s.RecordAsync(event.Event{Kind: event.KindNote, Text: "target keepalive", Error: "no answer within " + period.String()})
			b.up.client.Close()
			b.agent.Close()
			return
		}
	}
}

// globalRequests answers the agent's global requests locally: keepalives
// get a reply (OpenSSH only needs one), remote forwards are refused (no
// rule names them), and nothing is forwarded.
func (b *bridge) globalRequests(reqs <-chan *ssh.Request) {
	for r := range reqs {
		switch r.Type {
		case "keepalive@openssh.com", "no-more-sessions@openssh.com":
		case "tcpip-forward", "streamlocal-forward@openssh.com":
			b.s.RecordAsync(event.Event{Kind: event.KindDecision, Text: r.Type, Decision: string(policy.Deny),
				Error: "remote forwarding refused"})
		}
		r.Reply(false, nil)
	}
}
