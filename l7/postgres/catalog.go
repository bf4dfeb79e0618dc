package postgres

// What the catalog says about the functions, operators and views a
// statement names: the classifier reads text, and SELECT f() is a write
// when f deletes. Lookups go over a side connection with the target's
// credentials, as column names do (columns.go), and are cached per target
// and database for namesTTL.

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/loopgate/loopgate/policy"
	"github.com/loopgate/loopgate/policy/sqlclass"
)

// catalog resolves names to the functions they run (pg_proc rows). It is
// safe for concurrent use; mu guards cache.
type catalog struct {
	mu    sync.Mutex
	cache map[string]*procCache // target \x00 database
}

// procCache holds one database's verdicts for up to namesTTL: a function
// redefined since is seen as it is by then (and the server runs read-only
// sessions read-only meanwhile). A name that resolved to nothing that adds
// a class is kept too: most functions, operators and relations do not.
type procCache struct {
	at                    time.Time
	funcs, ops, relations map[sqlclass.Name]verdict
	size                  int
}

// verdict is what calling (or using, or reading) one name adds: classes
// and why, in words for the record.
type verdict struct {
	classes []string
	why     string
}

// maxProcCache bounds the names cached per database; the cache is cleared
// when full.
const maxProcCache = 8192

// catalogClasses are the classes a catalog lookup can add to a statement:
// if a rule allows them all, the lookup cannot change its decision.
var catalogClasses = []string{sqlclass.Procedural, sqlclass.Write, sqlclass.DDL, sqlclass.Privilege, sqlclass.ServerFile}

// classes returns the classes the functions res names, the operators it
// uses and the views (and row security policies) it reads would add, and
// why, in words for the record. before is called before the first lookup
// that waits on the database. An error means the catalog could not be
// asked: the caller fails closed.
func (c *catalog) classes(ctx context.Context, t *policy.Target, addr string, params map[string]string, res sqlclass.Result, before func()) ([]string, string, error) {
	db := params["database"]
	if db == "" {
		db = params["user"]
	}
	key := t.Name + "\x00" + db
	c.mu.Lock()
	if c.cache == nil {
		c.cache = map[string]*procCache{}
	}
	pc := c.cache[key]
	if pc == nil || time.Since(pc.at) > namesTTL || pc.size > maxProcCache {
		pc = &procCache{at: time.Now(), funcs: map[sqlclass.Name]verdict{}, ops: map[sqlclass.Name]verdict{},
			relations: map[sqlclass.Name]verdict{}}
		c.cache[key] = pc
	}
	missF, missO, missR := missing(pc.funcs, res.Calls), missing(pc.ops, res.Operators), missing(pc.relations, res.Relations)
	c.mu.Unlock()
	if len(missF)+len(missO)+len(missR) > 0 {
		before()
		f, o, r, err := procLookup(ctx, t, addr, params, missF, missO, missR)
		if err != nil {
			return nil, "", err
		}
		c.mu.Lock()
		for _, set := range []struct {
			dst  map[sqlclass.Name]verdict
			src  map[sqlclass.Name][]sqlclass.Proc
			want []sqlclass.Name
			what string
		}{{pc.funcs, f, missF, ""}, {pc.ops, o, missO, "operator %s runs "}, {pc.relations, r, missR, "view or policy of %s calls "}} {
			for _, n := range set.want {
				set.dst[n] = judge(n, set.src[n], set.what)
				pc.size++
			}
		}
		c.mu.Unlock()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var classes []string
	why := ""
	for _, set := range []struct {
		m     map[sqlclass.Name]verdict
		names []sqlclass.Name
	}{{pc.funcs, res.Calls}, {pc.ops, res.Operators}, {pc.relations, res.Relations}} {
		for _, n := range set.names {
			v := set.m[n]
			for _, k := range v.classes {
				if !slices.Contains(classes, k) {
					classes = append(classes, k)
				}
			}
			if why == "" || slices.Contains(v.classes, sqlclass.Procedural) && !strings.Contains(why, "VOLATILE") {
				why = cmp.Or(v.why, why)
			}
		}
	}
	return classes, why, nil
}

// judge sums up the functions one name runs (what: how it runs them, a
// format with the name, or "" for a call).
func judge(n sqlclass.Name, procs []sqlclass.Proc, what string) verdict {
	var v verdict
	for _, p := range procs {
		k, w := sqlclass.ProcClass(p)
		if k == "" {
			continue
		}
		if !slices.Contains(v.classes, k) {
			v.classes = append(v.classes, k)
		}
		if v.why == "" || k == sqlclass.Procedural && !strings.Contains(v.why, "VOLATILE") {
			v.why = w
			if what != "" {
				v.why = fmt.Sprintf(what, n) + w
			}
		}
	}
	return v
}

// missing returns the names not in m.
func missing(m map[sqlclass.Name]verdict, names []sqlclass.Name) []sqlclass.Name {
	var out []sqlclass.Name
	for _, n := range names {
		if _, ok := m[n]; !ok {
			out = append(out, n)
		}
	}
	return out
}

// Catalog queries. A name without a schema matches in every schema (more
// than the search path would find, never less). Views are followed through
// their rewrite rules' dependencies (pg_depend) to the relations they read,
// recursively; the functions those rules and the relations' row security
// policies call, directly or as an operator's function, are returned.
const (
	funcsQuery = `SELECT p.proname, n.nspname, n.nspname, p.proname, p.provolatile, l.lanname, p.oid < 16384
	FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
	JOIN pg_catalog.pg_language l ON l.oid = p.prolang WHERE p.proname = ANY($1::text[])`
	opsQuery = `SELECT o.oprname, opn.nspname, n.nspname, p.proname, p.provolatile, l.lanname, p.oid < 16384
	FROM pg_catalog.pg_operator o JOIN pg_catalog.pg_namespace opn ON opn.oid = o.oprnamespace
	JOIN pg_catalog.pg_proc p ON p.oid = o.oprcode JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
	JOIN pg_catalog.pg_language l ON l.oid = p.prolang WHERE o.oprname = ANY($1::text[])`
	relationsQuery = `WITH RECURSIVE rel(nsp, name, oid) AS (
		SELECT n.nspname, c.relname, c.oid FROM pg_catalog.pg_class c
		JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.relname = ANY($1::text[])
	UNION
		SELECT rel.nsp, rel.name, d.refobjid FROM rel
		JOIN pg_catalog.pg_rewrite w ON w.ev_class = rel.oid
		JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::regclass AND d.objid = w.oid
			AND d.refclassid = 'pg_catalog.pg_class'::regclass AND d.refobjid <> rel.oid
	), obj(nsp, name, classid, objid) AS (
		SELECT rel.nsp, rel.name, 'pg_catalog.pg_rewrite'::regclass, w.oid FROM rel JOIN pg_catalog.pg_rewrite w ON w.ev_class = rel.oid
	UNION ALL
		SELECT rel.nsp, rel.name, 'pg_catalog.pg_policy'::regclass, p.oid FROM rel JOIN pg_catalog.pg_policy p ON p.polrelid = rel.oid
	), fn(nsp, name, oid) AS (
		SELECT obj.nsp, obj.name, CASE WHEN d.refclassid = 'pg_catalog.pg_proc'::regclass THEN d.refobjid ELSE o.oprcode END
		FROM obj JOIN pg_catalog.pg_depend d ON d.classid = obj.classid AND d.objid = obj.objid
		LEFT JOIN pg_catalog.pg_operator o ON d.refclassid = 'pg_catalog.pg_operator'::regclass AND o.oid = d.refobjid
		WHERE d.refclassid IN ('pg_catalog.pg_proc'::regclass, 'pg_catalog.pg_operator'::regclass)
	)
	SELECT DISTINCT fn.name, fn.nsp, n.nspname, p.proname, p.provolatile, l.lanname, p.oid < 16384
	FROM fn JOIN pg_catalog.pg_proc p ON p.oid = fn.oid JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
	JOIN pg_catalog.pg_language l ON l.oid = p.prolang`
)

// procLookup is lookupProcs; tests of the relay against a stand-in for
// the server, which has no catalog, replace it.
var procLookup = lookupProcs

// lookupProcs asks the target's catalog, in the session's database, what
// functions the named functions, operators and relations run. Each query
// returns (name, its schema, the function's schema, name, provolatile,
// language, built in).
func lookupProcs(ctx context.Context, t *policy.Target, addr string, params map[string]string, funcs, ops, rels []sqlclass.Name) (f, o, r map[sqlclass.Name][]sqlclass.Proc, err error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	cfg, err := upstreamConfig(t, addr, params)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("catalog lookup: %w", err)
	}
	forceReadOnly(cfg.RuntimeParams) // it only reads
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("catalog lookup: %w", err)
	}
	defer conn.Close(ctx)
	run := func(query string, names []sqlclass.Name) (map[sqlclass.Name][]sqlclass.Proc, error) {
		out := map[sqlclass.Name][]sqlclass.Proc{}
		if len(names) == 0 {
			return out, nil
		}
		list := make([]string, len(names))
		for i, n := range names {
			list[i] = n.Name
		}
		rr := conn.ExecParams(ctx, query, [][]byte{[]byte(textArray(list))}, nil, nil, nil)
		res := rr.Read()
		if res.Err != nil {
			return nil, fmt.Errorf("catalog lookup: %w", res.Err)
		}
		for _, row := range res.Rows {
			p := sqlclass.Proc{Schema: string(row[2]), Name: string(row[3]), Language: string(row[5]), BuiltIn: string(row[6]) == "t"}
			if len(row[4]) == 1 {
				p.Volatile = row[4][0]
			}
			for _, n := range names {
				if n.Name == string(row[0]) && (n.Schema == "" || n.Schema == string(row[1])) {
					out[n] = append(out[n], p)
				}
			}
		}
		return out, nil
	}
	if f, err = run(funcsQuery, funcs); err != nil {
		return nil, nil, nil, err
	}
	if o, err = run(opsQuery, ops); err != nil {
		return nil, nil, nil, err
	}
	if r, err = run(relationsQuery, rels); err != nil {
		return nil, nil, nil, err
	}
	return f, o, r, nil
}

// textArray is a text[] literal of names, each quoted.
func textArray(names []string) string {
	var b strings.Builder
	b.WriteByte('{')
	for i, n := range names {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteByte('"')
		for _, c := range n {
			if c == '"' || c == '\\' {
				b.WriteByte('\\')
			}
			b.WriteRune(c)
		}
		b.WriteByte('"')
	}
	b.WriteByte('}')
	return b.String()
}
