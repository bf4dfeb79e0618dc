package postgres

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/loopgate/loopgate/policy"
)

// startupRefused is an error the agent should see as a FATAL ErrorResponse.
type startupRefused struct {
	code, msg string
}

func (e *startupRefused) Error() string { return e.msg }

// password reads a target's password from where the config says it is.
func password(c policy.Credentials) (string, error) {
	switch {
	case c.PasswordFile != "":
		b, err := os.ReadFile(c.PasswordFile)
		if err != nil {
			return "", fmt.Errorf("read password file: %w", err)
		}
		return strings.TrimRight(string(b), "\r\n"), nil
	case c.PasswordEnv != "":
		v, ok := os.LookupEnv(c.PasswordEnv)
		if !ok {
			return "", fmt.Errorf("password env %s is not set", c.PasswordEnv)
		}
		return v, nil
	}
	return "", nil
}

// upstream is a logged-in server connection for one session.
type upstream struct {
	hj     *pgconn.HijackedConn
	role   *sessionRole // set for dynamic credentials
	key    string       // pool key; "" when the connection may not be pooled
	reused bool         // taken from the pool
}

// connectUpstream logs in to the target with the target's credentials (or,
// for dynamic credentials, with a session role it creates with them) and
// hijacks the connection from pgconn. A static login may come from the
// pool of connections earlier sessions of the workload left (see pool.go).
// readOnly logs in with default_transaction_read_only on (readonly.go),
// which keeps the pool's read-only and writable logins apart.
func (h *Handler) connectUpstream(ctx context.Context, t *policy.Target, addr string, params map[string]string, workload string, readOnly bool) (*upstream, error) {
	cfg, err := upstreamConfig(t, addr, params)
	if err != nil {
		return nil, err
	}
	if readOnly {
		forceReadOnly(cfg.RuntimeParams)
	}
	if t.Credentials.Dynamic == nil {
		key := poolKey(workload, cfg)
		if hj := h.pool.get(key); hj != nil {
			return &upstream{hj: hj, key: key, reused: true}, nil
		}
		hj, err := dialHijack(ctx, cfg, addr)
		if err != nil {
			return nil, err
		}
		return &upstream{hj: hj, key: key}, nil
	}
	var role *sessionRole
	if dyn := t.Credentials.Dynamic; dyn != nil {
		admin := cfg.Copy()
		delete(admin.RuntimeParams, readOnlyParam) // it creates the role
		if role, err = createRole(ctx, admin, dyn); err != nil {
			return nil, err
		}
		cfg.User, cfg.Password = role.name, role.password
	}
	hj, err := dialHijack(ctx, cfg, addr)
	if err != nil {
		role.drop(context.WithoutCancel(ctx))
		return nil, err
	}
	return &upstream{hj: hj, role: role}, nil
}

// baseConfig is what every upstream config starts from. pgconn only
// connects with configs from its ParseConfig, which reads the environment
// and the user's service and password files each call (25 µs a session
// here). The daemon's environment does not change, so one parse serves
// every session; what a session needs is set on its copy.
var baseConfig = sync.OnceValues(func() (*pgconn.Config, error) { return pgconn.ParseConfig("sslmode=disable") })

// upstreamConfig is the login for a session with the agent's startup
// parameters params. Its RuntimeParams hold every setting to log in with
// (params.go), by lower-case name: a setting loopgate forces is assigned
// by that name and so wins over the agent's.
func upstreamConfig(t *policy.Target, addr string, params map[string]string) (*pgconn.Config, error) {
	runtime, err := runtimeParams(params)
	if err != nil {
		return nil, err
	}
	host, port, _ := strings.Cut(addr, ":")
	if i := strings.LastIndex(addr, ":"); i >= 0 {
		host, port = strings.Trim(addr[:i], "[]"), addr[i+1:]
	}
	base, err := baseConfig()
	if err != nil {
		return nil, err
	}
	cfg := base.Copy()
	if cfg.TLSConfig, err = tlsConfig(t.TLS, host); err != nil {
		return nil, err
	}
	p, _ := strconv.ParseUint(port, 10, 16)
	cfg.Host, cfg.Port = host, uint16(p)
	cfg.Fallbacks = nil
	cfg.User = t.Credentials.User
	if cfg.User == "" {
		cfg.User = params["user"]
	}
	if cfg.Password, err = password(t.Credentials); err != nil {
		return nil, &startupRefused{code: codeConnectionFailure, msg: "loopgate: target credentials unavailable"}
	}
	cfg.Database = params["database"]
	if cfg.Database == "" {
		cfg.Database = params["user"]
	}
	cfg.RuntimeParams = runtime
	return cfg, nil
}

// tlsConfig builds the client TLS config for a target. pgconn then sends
// SSLRequest and fails if the server refuses: no plaintext fallback.
func tlsConfig(t policy.TLS, host string) (*tls.Config, error) {
	switch t.Mode {
	case policy.TLSDisable, "":
		return nil, nil
	case policy.TLSRequire:
		return &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}, nil //nolint:gosec // mode require: encryption without verification, by config
	}
	c := &tls.Config{ServerName: host, MinVersion: tls.VersionTLS12}
	if t.ServerName != "" {
		c.ServerName = t.ServerName
	}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read target CA: %w", err)
		}
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("target CA %s holds no PEM certificate", t.CAFile)
		}
	}
	return c, nil
}

func dialHijack(ctx context.Context, cfg *pgconn.Config, addr string) (*pgconn.HijackedConn, error) {
	pc, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) {
			return nil, &startupRefused{code: pgErr.Code, msg: pgErr.Message}
		}
		return nil, fmt.Errorf("connect upstream %s: %w", addr, err)
	}
	// A login write slower than 15 ms starts pgconn's background reader,
	// which can still be reading the socket when the login ends: it would
	// take the answer to the agent's first statement, and the agent would
	// wait forever. SyncConn stops it (pgconn asks for it before Hijack).
	if err := pc.SyncConn(ctx); err != nil {
		pc.Close(ctx)
		return nil, fmt.Errorf("sync upstream: %w", err)
	}
	hj, err := pc.Hijack()
	if err != nil {
		pc.Close(ctx)
		return nil, fmt.Errorf("hijack upstream: %w", err)
	}
	if n := hj.Frontend.ReadBufferLen(); n != 0 {
		hj.Conn.Close()
		return nil, fmt.Errorf("upstream sent %d bytes after ReadyForQuery", n)
	}
	return hj, nil
}
