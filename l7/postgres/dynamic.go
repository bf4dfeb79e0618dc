package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/loopgate/loopgate/policy"
)

// sessionRole is a per-session login role created with the target's admin
// credentials. Vault-style dynamic roles stop new logins when they expire
// but leave open sessions running; loopgate also ends the session.
//
// What the administrator needs: CREATEROLE (or superuser), and on
// PostgreSQL 16 and later ADMIN OPTION on the group role. To end a
// session role's backends and drop what it owns, the administrator grants
// itself the session role first (CREATEROLE may), so it needs neither
// pg_signal_backend nor superuser for that.
type sessionRole struct {
	name     string
	password string
	expires  time.Time
	admin    *pgconn.Config // how to reach the target as the administrator
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// createRole creates the session's role: LOGIN, random password, VALID
// UNTIL now+TTL, member of the configured group role.
func createRole(ctx context.Context, admin *pgconn.Config, dyn *policy.DynamicRole) (*sessionRole, error) {
	r := &sessionRole{
		name:     "lg_" + randomHex(8),
		password: randomHex(24),
		expires:  time.Now().Add(dyn.TTL).UTC().Truncate(time.Second),
		admin:    admin,
	}
	sql := fmt.Sprintf("CREATE ROLE %s LOGIN PASSWORD '%s' VALID UNTIL '%s' IN ROLE %s",
		pgx.Identifier{r.name}.Sanitize(), r.password, r.expires.Format("2006-01-02 15:04:05+00"),
		pgx.Identifier{dyn.Role}.Sanitize())
	if err := adminExec(ctx, admin, sql); err != nil {
		if lacks, _, ierr := inspectAdmin(ctx, admin, dyn.Role); ierr == nil && lacks != "" {
			return nil, fmt.Errorf("create session role: %w (the administrator %s lacks %s)", err, admin.User, lacks)
		}
		return nil, fmt.Errorf("create session role: %w", err)
	}
	return r, nil
}

// takeOver makes the administrator a member of the role, so that it may
// end the role's backends and drop what the role owns (PostgreSQL checks
// privileges of the role for both; CREATEROLE alone is not enough).
func (r *sessionRole) takeOver() string {
	return "GRANT " + pgx.Identifier{r.name}.Sanitize() + " TO CURRENT_USER"
}

// drop ends the role's sessions and drops it (and anything it owns). A
// role that is gone already is dropped.
func (r *sessionRole) drop(ctx context.Context) error {
	id := pgx.Identifier{r.name}.Sanitize()
	return adminDo(ctx, r.admin, func(c *pgconn.PgConn) error {
		res := c.ExecParams(ctx, "SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1", [][]byte{[]byte(r.name)}, nil, nil, nil).Read()
		if res.Err != nil {
			return res.Err
		}
		if len(res.Rows) == 0 {
			return nil
		}
		var errs []error
		for _, sql := range []string{r.takeOver(),
			"SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity WHERE usename = '" + r.name + "'",
			"DROP OWNED BY " + id, "DROP ROLE " + id} {
			if _, err := c.Exec(ctx, sql).ReadAll(); err != nil {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	})
}

// terminate ends the role's backends without dropping it.
func (r *sessionRole) terminate(ctx context.Context) error {
	return adminExec(ctx, r.admin, r.takeOver()+"; SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity WHERE usename = '"+r.name+"'")
}

func adminExec(ctx context.Context, cfg *pgconn.Config, sql string) error {
	return adminDo(ctx, cfg, func(c *pgconn.PgConn) error {
		_, err := c.Exec(ctx, sql).ReadAll()
		return err
	})
}

func adminDo(ctx context.Context, cfg *pgconn.Config, f func(*pgconn.PgConn) error) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	c, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("connect as administrator: %w", err)
	}
	defer c.Close(ctx)
	return f(c)
}

// roleKeeper looks after the session roles of each dynamic target: it
// checks once a sweep period what the administrator lacks (and logs it),
// and drops session roles that could not be dropped when their session
// ended, and expired ones a daemon before it left (a crash, a restart),
// so that they never accumulate. It is safe for concurrent use.
type roleKeeper struct {
	mu      sync.Mutex                // guards the fields below
	swept   map[string]time.Time      // admin login -> last check and sweep
	lacking map[string]string         // admin login -> what it lacked then
	left    map[string][]*sessionRole // admin login -> roles not dropped
}

// sweepEvery is how often a target's expired roles are looked for.
const sweepEvery = time.Minute

func adminKey(admin *pgconn.Config, dyn *policy.DynamicRole) string {
	return strings.Join([]string{admin.Host, strconv.Itoa(int(admin.Port)), admin.User, admin.Database, dyn.Role}, "\x00")
}

// failed remembers a role whose drop failed, to drop it again.
func (k *roleKeeper) failed(r *sessionRole, dyn *policy.DynamicRole) {
	key := adminKey(r.admin, dyn)
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.left == nil {
		k.left = map[string][]*sessionRole{}
	}
	if len(k.left[key]) < 1000 { // the sweep finds the rest once expired
		k.left[key] = append(k.left[key], r)
	}
}

// tidy runs before a session role is created with admin: it drops roles
// left over, and once a sweep period checks the administrator's
// privileges and drops expired session roles of the group.
func (k *roleKeeper) tidy(ctx context.Context, log *slog.Logger, admin *pgconn.Config, dyn *policy.DynamicRole) {
	key := adminKey(admin, dyn)
	k.mu.Lock()
	left := k.left[key]
	delete(k.left, key)
	due := time.Since(k.swept[key]) >= sweepEvery
	if due {
		if k.swept == nil {
			k.swept, k.lacking = map[string]time.Time{}, map[string]string{}
		}
		k.swept[key] = time.Now()
	}
	k.mu.Unlock()
	for _, r := range left {
		if err := r.drop(ctx); err != nil {
			log.Error("session role still not dropped", "role", r.name, "err", err)
			k.failed(r, dyn)
		} else {
			log.Info("session role left over dropped", "role", r.name)
		}
	}
	if !due {
		return
	}
	lacks, expired, err := inspectAdmin(ctx, admin, dyn.Role)
	if err != nil {
		log.Warn("dynamic roles: administrator's privileges not checked", "err", err)
		return
	}
	k.mu.Lock()
	changed := k.lacking[key] != lacks
	k.lacking[key] = lacks
	k.mu.Unlock()
	switch {
	case lacks != "" && changed:
		log.Error("dynamic roles: the administrator lacks what session roles need", "admin", admin.User, "group_role", dyn.Role, "missing", lacks)
	case lacks == "" && changed:
		log.Info("dynamic roles: the administrator has what session roles need", "admin", admin.User, "group_role", dyn.Role)
	}
	for _, name := range expired {
		r := &sessionRole{name: name, admin: admin}
		if err := r.drop(ctx); err != nil {
			log.Error("expired session role not dropped", "role", name, "err", err)
			continue
		}
		log.Info("expired session role dropped", "role", name)
	}
}

// inspectAdmin reports what the administrator lacks to create, end and
// drop session roles in group ("" for nothing), and the expired session
// roles of the group.
func inspectAdmin(ctx context.Context, admin *pgconn.Config, group string) (lacks string, expired []string, err error) {
	err = adminDo(ctx, admin, func(c *pgconn.PgConn) error {
		res := c.ExecParams(ctx, `SELECT r.rolsuper, r.rolcreaterole,
	g.oid IS NOT NULL, COALESCE(g.rolsuper, false),
	EXISTS (SELECT 1 FROM pg_catalog.pg_auth_members m WHERE m.roleid = g.oid AND m.member = r.oid AND m.admin_option),
	pg_catalog.current_setting('server_version_num')::int >= 160000
FROM pg_catalog.pg_roles r LEFT JOIN pg_catalog.pg_roles g ON g.rolname = $1
WHERE r.rolname = current_user`, [][]byte{[]byte(group)}, nil, nil, nil).Read()
		if res.Err != nil {
			return res.Err
		}
		if len(res.Rows) != 1 || len(res.Rows[0]) != 6 {
			return errors.New("administrator's role not found")
		}
		b := func(i int) bool { return string(res.Rows[0][i]) == "t" }
		super, createRole, groupExists, groupSuper, adminOption, v16 := b(0), b(1), b(2), b(3), b(4), b(5)
		var miss []string
		switch {
		case super:
		case !groupExists:
			miss = append(miss, fmt.Sprintf("the group role %q (it does not exist)", group))
		case groupSuper:
			miss = append(miss, "SUPERUSER (the group role is a superuser)")
		default:
			if !createRole {
				miss = append(miss, "CREATEROLE")
			}
			if v16 && !adminOption {
				miss = append(miss, fmt.Sprintf("ADMIN OPTION on %q (GRANT %s TO %s WITH ADMIN OPTION)", group, group, admin.User))
			}
		}
		lacks = strings.Join(miss, ", ")
		if !groupExists {
			return nil
		}
		res = c.ExecParams(ctx, `SELECT r.rolname FROM pg_catalog.pg_roles r
WHERE r.rolname ~ '^lg_[0-9a-f]{16}$' AND r.rolvaliduntil < now()
	AND pg_catalog.pg_has_role(r.oid, (SELECT oid FROM pg_catalog.pg_roles WHERE rolname = $1), 'MEMBER')`,
			[][]byte{[]byte(group)}, nil, nil, nil).Read()
		if res.Err != nil {
			return res.Err
		}
		for _, row := range res.Rows {
			expired = append(expired, string(row[0]))
		}
		return nil
	})
	return lacks, expired, err
}
