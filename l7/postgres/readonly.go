package postgres

// Read-only must hold: under a rule that allows no class that can write,
// two layers stop a statement that would write, each enough on its own.
//
//  1. The catalog: the functions a statement calls, the operators it uses
//     and the views (and row security policies) of the relations it reads
//     are resolved to pg_proc rows (catalog.go); a VOLATILE function that
//     is not built in is procedural, a built-in gets the class of the
//     reviewed table (policy/sqlclass). A lookup that fails is unknown.
//  2. The server: the session logs in with default_transaction_read_only
//     on (a startup parameter, so RESET, RESET ALL and DISCARD ALL return
//     to on, and pooled connections are kept apart from writable ones by
//     their login), and whatever could turn it off is denied (SET or RESET
//     of default_transaction_read_only or transaction_read_only, READ
//     WRITE in BEGIN, START TRANSACTION, SET TRANSACTION and SET SESSION
//     CHARACTERISTICS, set_config of either). Should the server still
//     report default_transaction_read_only off (a function that is not
//     VOLATILE calling set_config), the session is ended.
//
// A reload that makes a writable session's rule read-only does not make
// its server connection read-only: every later statement of it is denied
// until the agent reconnects. A session that was read-only stays so.

import (
	"fmt"
	"slices"
	"strings"

	"github.com/loopgate/loopgate/policy"
	"github.com/loopgate/loopgate/policy/sqlclass"
)

// readOnlyParam is the setting that makes a server session read-only.
const readOnlyParam = "default_transaction_read_only"

// forceReadOnly sets a login's startup parameters to run the session
// read-only, dropping any spelling of the read-only settings the agent
// sent (setting names are case-insensitive).
func forceReadOnly(params map[string]string) {
	for k := range params {
		if strings.EqualFold(k, readOnlyParam) || strings.EqualFold(k, "transaction_read_only") {
			delete(params, k)
		}
	}
	params[readOnlyParam] = "on"
}

// readOnlyState is a session's read-only mode. on and rule are set before
// the relay starts and never change (both sides read them); cfg and stale
// belong to the agent side.
type readOnlyState struct {
	on    bool // the server session runs read-only
	rule  string
	cfg   *policy.Config // the config last checked
	stale string         // set: deny everything, for this reason
	// moot: the rule of mootCfg allows every class a catalog lookup can
	// add, so no lookup can change a decision.
	moot    bool
	mootCfg *policy.Config
}

// readOnlyRule reports whether the rule deciding for s allows no class
// that can write, and holds none for approval.
func readOnlyRule(cfg *policy.Config, s *policy.Subject) bool {
	for _, k := range sqlclass.WriteClasses {
		if cfg.Decide(s, []string{k}).Action != policy.Deny {
			return false
		}
	}
	return true
}

// vetted is a classified statement after the read-only layers.
type vetted struct {
	classes []string
	why     string // what the catalog found, for the reason of a denial
	deny    string // set: denied whatever the rule says, for this reason
}

// vet applies the read-only layers to a classified query string.
func (r *relay) vet(res sqlclass.Result) vetted {
	v := vetted{classes: res.Classes}
	cfg := r.s.Policy()
	if r.ro.on && res.ReadWrite != "" {
		v.deny = fmt.Sprintf("the session is read-only under rule %s: %s could make it read-write", r.ro.rule, res.ReadWrite)
		return v
	}
	if stale := r.stale(cfg); stale != "" {
		v.deny = stale
		return v
	}
	if len(res.Calls)+len(res.Operators)+len(res.Relations) == 0 {
		return v
	}
	if d := cfg.Decide(r.s.Subject, res.Classes); d.Action == policy.Deny {
		return v // denied as it is
	}
	if cfg != r.ro.mootCfg {
		r.ro.mootCfg, r.ro.moot = cfg, true
		for _, k := range catalogClasses {
			r.ro.moot = r.ro.moot && cfg.Decide(r.s.Subject, []string{k}).Action == policy.Allow
		}
	}
	if r.ro.moot {
		return v // nothing the catalog could say would change the decision
	}
	extra, why, err := r.h.catalog.classes(r.ctx, r.s.Subject.Target, r.s.Subject.OrigDst.String(), r.params, res, r.parsing)
	if err != nil {
		r.s.Log.Warn("catalog lookup failed; statement is unknown", "err", err)
		extra, why = []string{sqlclass.Unknown}, "the catalog could not be asked: "+err.Error()
	}
	if len(extra) == 0 {
		return v
	}
	v.classes = slices.Clone(res.Classes) // shared with the classifier's cache
	for _, k := range extra {
		if !slices.Contains(v.classes, k) {
			v.classes = append(v.classes, k)
		}
	}
	slices.Sort(v.classes)
	v.why = why
	return v
}

// stale returns why a session opened writable must be denied everything
// under cfg (its rule now allows no writes), or "".
func (r *relay) stale(cfg *policy.Config) string {
	if !r.ro.on && cfg != r.ro.cfg {
		r.ro.cfg = cfg
		if readOnlyRule(cfg, r.s.Subject) {
			r.ro.stale = "the rule now allows no writes, but this session's server connection was opened writable; reconnect"
		}
	}
	return r.ro.stale
}

// decide decides a vetted statement under the current policy (a
// statement vetted at Parse is decided at each Execute).
func (r *relay) decide(v vetted) policy.Decision {
	cfg := r.s.Policy()
	d := cfg.Decide(r.s.Subject, v.classes)
	switch {
	case r.stale(cfg) != "":
		d.Action, d.Reason = policy.Deny, r.ro.stale
	case v.deny != "":
		d.Action, d.Reason = policy.Deny, v.deny
	case d.Action != policy.Allow && v.why != "":
		d.Reason += fmt.Sprintf(" (classified %s: %s)", d.Class, v.why)
	}
	return d
}

// readOnlyLost reports whether a ParameterStatus from the server says a
// read-only session is read-only no more.
func (r *relay) readOnlyLost(name, value string) bool {
	return r.ro.on && name == readOnlyParam && value != "on"
}

// serverError is how an error of the server is recorded: a read-only
// session's 25006 (read_only_sql_transaction) says that the server's
// layer stopped the statement.
func (r *relay) serverError(code, msg string) string {
	if r.ro.on && code == "25006" {
		return "server read-only: " + code + ": " + msg
	}
	return code + ": " + msg
}
