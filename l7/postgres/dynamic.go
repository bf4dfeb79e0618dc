package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/loopgate/loopgate/policy"
)

// sessionRole is a per-session login role created with the target's admin
// credentials. Vault-style dynamic roles stop new logins when they expire
// but leave open sessions running; loopgate also ends the session.
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
		return nil, fmt.Errorf("create session role: %w", err)
	}
	return r, nil
}

// drop ends the role's sessions and drops it (and anything it owns).
func (r *sessionRole) drop(ctx context.Context) error {
	id := pgx.Identifier{r.name}.Sanitize()
	return adminExec(ctx, r.admin,
		"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '"+r.name+"'; "+
			"DROP OWNED BY "+id+"; DROP ROLE "+id)
}

// terminate ends the role's backends without dropping it.
func (r *sessionRole) terminate(ctx context.Context) error {
	return adminExec(ctx, r.admin, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '"+r.name+"'")
}

func adminExec(ctx context.Context, cfg *pgconn.Config, sql string) error {
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	c, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("connect as administrator: %w", err)
	}
	defer c.Close(ctx)
	_, err = c.Exec(ctx, sql).ReadAll()
	return err
}
