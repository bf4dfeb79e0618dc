package postgres

// Startup parameters: PostgreSQL applies every one other than user,
// database, options and replication as a setting, as if the session had
// begun with SET, and the -c settings in options too (expandOptions). loopgate forwards each of them to the target, or refuses
// the session with a FATAL that names it; none is dropped silently (a
// client that asked for default_transaction_read_only=on must not get a
// writable session). The server itself refuses a name it does not know
// ("unrecognized configuration parameter") or may not set for the login.
//
// Pooled server connections stay apart by their parameters: they are part
// of the pool key, and DISCARD ALL resets each setting to its value at
// login (RESET ALL), so one session's parameters never reach another's.

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/loopgate/loopgate/policy"
	"github.com/loopgate/loopgate/policy/sqlclass"
)

// harmlessParams are settings drivers send on every connection that only
// change how values are formatted or the session is named: forwarded
// without a policy decision (a rule need not allow "session" for psql or
// lib/pq to connect).
var harmlessParams = map[string]bool{
	"application_name": true, "client_encoding": true, "datestyle": true, "timezone": true,
	"extra_float_digits": true, "intervalstyle": true, "standard_conforming_strings": true,
	"search_path": true, "bytea_output": true,
}

// runtimeParams returns the settings to log in with for the agent's
// startup parameters: names lower-cased (PostgreSQL's are
// case-insensitive, and so a setting loopgate forces, assigned by its
// lower-case name, always wins), user and database left to the login. It
// refuses what could change the role the session runs as or how the server
// parses SQL:
//   - options: command-line switches (-c role=..., -c client_encoding=...)
//     loopgate would have to parse as the server does;
//   - replication: a walsender session runs replication commands, not SQL;
//   - role and session_authorization: the session would run as another
//     role than the login's, which policy and masks were written for;
//   - client_encoding other than an ASCII-safe one, and
//     standard_conforming_strings off: a backslash could then hide a
//     statement inside what the classifier reads as a string.
//
// search_path is forwarded: it changes which objects names resolve to,
// not how statements parse, and SET search_path is a session statement
// any rule allowing "session" lets through anyway.
func runtimeParams(agent map[string]string) (map[string]string, error) {
	out := make(map[string]string, len(agent))
	refuse := func(format string, args ...any) error {
		return &startupRefused{code: codeFeatureNotSupported, msg: "loopgate: " + fmt.Sprintf(format, args...)}
	}
	// In order, so that which of two spellings is reported is stable.
	for _, k := range slices.Sorted(maps.Keys(agent)) {
		v := agent[k]
		name := strings.ToLower(k)
		switch name {
		case "user", "database":
			continue // the login's: credentials come from the config
		case "replication":
			switch strings.ToLower(v) {
			case "", "false", "off", "no", "0", "f", "n":
				continue
			}
			return nil, refuse("replication connections are not allowed")
		case "options":
			// Its -c settings were expanded into parameters of their own
			// (expandOptions); anything left here is not a setting.
			if strings.TrimSpace(v) == "" {
				continue
			}
			return nil, refuse("the startup parameter \"options\" is not allowed (it can set roles and settings around policy)")
		case "role", "session_authorization":
			return nil, refuse("the startup parameter %q is not allowed (it would change the role the session runs as)", k)
		}
		if sqlclass.UnsafeSetting(name, v) {
			return nil, refuse("%s=%s is not supported: the server would read SQL differently from policy (use UTF8 and standard_conforming_strings=on)", k, v)
		}
		if old, dup := out[name]; dup && old != v {
			return nil, refuse("the startup parameter %q is given twice, with different values", name)
		}
		out[name] = v
	}
	return out, nil
}

// decideParams puts the agent's startup parameters that are not mere
// formatting through policy as the SET statements they amount to: a rule
// that would deny SET statement_timeout = ... in the session denies it at
// startup too. A parameter a rule holds for approval is refused (nobody
// is asked before the session exists; SET it in the session instead).
func (h *Handler) decideParams(cfg *policy.Config, sub *policy.Subject, agent map[string]string) error {
	for _, k := range slices.Sorted(maps.Keys(agent)) {
		name := strings.ToLower(k)
		switch {
		case harmlessParams[name], name == "user", name == "database", name == "replication", name == "options",
			name == "role", name == "session_authorization", strings.HasPrefix(name, "_pq_."):
			// Formatting, the login's, or refused by runtimeParams.
			continue
		}
		sql := "SET " + pgx.Identifier{name}.Sanitize() + " TO '" + strings.ReplaceAll(agent[k], "'", "''") + "'"
		res := h.classifier().Classify(sql, nil)
		d := cfg.Decide(sub, res.Classes)
		if d.Action == policy.Allow {
			continue
		}
		msg := fmt.Sprintf("loopgate: startup parameter %s=%s: %s", k, agent[k], d.Reason)
		if d.Action == policy.Approve {
			msg = fmt.Sprintf("loopgate: startup parameter %s=%s needs approval, which a startup cannot wait for; SET it in the session", k, agent[k])
		}
		return &startupRefused{code: codeInsufficientPrivilege, msg: msg}
	}
	return nil
}

// expandOptions turns the settings in the startup parameter "options"
// (libpq's PGOPTIONS: "-c name=value", "-cname=value" or "--name=value",
// split on spaces, a backslash keeping the next character, as the server's
// pg_split_opts does) into parameters of their own, so each is forwarded
// or refused, and decided, as if the agent had sent it alone. Any other
// switch (the server's command-line options: -B, -D, -o, ...) refuses the
// session. As in the server, a parameter sent on its own wins over the
// same setting in options.
// With no "options", params is returned as it is.
func expandOptions(params map[string]string) (map[string]string, error) {
	var raw string
	var key string
	for k, v := range params {
		if strings.EqualFold(k, "options") {
			raw, key = v, k
		}
	}
	if key == "" {
		return params, nil
	}
	refuse := func(format string, args ...any) error {
		return &startupRefused{code: codeFeatureNotSupported, msg: "loopgate: options: " + fmt.Sprintf(format, args...)}
	}
	words := splitOptions(raw)
	out := make(map[string]string, len(params)+len(words))
	for k, v := range params {
		if k != key {
			out[k] = v
		}
	}
	for i := 0; i < len(words); i++ {
		w := words[i]
		var setting string
		switch {
		case w == "-c":
			if i+1 == len(words) {
				return nil, refuse("-c without a setting")
			}
			i++
			setting = words[i]
		case strings.HasPrefix(w, "-c"):
			setting = w[2:]
		case strings.HasPrefix(w, "--") && len(w) > 2:
			setting = w[2:]
		default:
			return nil, refuse("%q is not allowed; only -c name=value settings are", w)
		}
		name, value, ok := strings.Cut(setting, "=")
		if !ok || name == "" {
			return nil, refuse("%q is not a name=value setting", setting)
		}
		// The server reads dashes in a name as underscores.
		name = strings.ToLower(strings.ReplaceAll(name, "-", "_"))
		direct := false
		for k := range params {
			direct = direct || k != key && strings.EqualFold(k, name)
		}
		if !direct {
			// The server applies options first, then the parameters:
			// a parameter of the same name wins, and a later -c an
			// earlier one.
			out[name] = value
		}
	}
	return out, nil
}

// splitOptions splits options as pg_split_opts does: on spaces, a
// backslash taking the next character as it is.
func splitOptions(s string) []string {
	var words []string
	var w strings.Builder
	in := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v':
			if in {
				words = append(words, w.String())
				w.Reset()
				in = false
			}
			continue
		case c == '\\' && i+1 < len(s):
			i++
			c = s[i]
		}
		w.WriteByte(c)
		in = true
	}
	if in {
		words = append(words, w.String())
	}
	return words
}
