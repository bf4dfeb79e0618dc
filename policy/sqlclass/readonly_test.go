package sqlclass

import (
	"slices"
	"strings"
	"testing"
)

// TestReadOnlyEvasions holds statements that would write, or make a
// read-only session read-write, under a rule that allows only read,
// transaction and session. Each must get a class such a rule denies, or
// report ReadWrite, or name the function, operator or view the catalog
// check must resolve (want "catalog: name").
func TestReadOnlyEvasions(t *testing.T) {
	t.Parallel()
	readOnly := []string{Read, Transaction, Session}
	tests := []struct {
		name string
		sql  string
		// want: a class (beyond read, transaction, session), "read-write"
		// (ReadWrite set) or "catalog: f" (Calls, Operators or Relations
		// hold f).
		want string
	}{
		{"txid_current", "SELECT txid_current()", Write},
		{"pg_current_xact_id", "SELECT pg_current_xact_id()", Write},
		{"logical message", "SELECT pg_logical_emit_message(true, 'x', 'y')", Write},
		{"try advisory lock", "SELECT pg_try_advisory_lock(1)", Write},
		{"advisory lock shared", "SELECT pg_advisory_lock_shared(1)", Write},
		{"try xact advisory lock", "SELECT pg_try_advisory_xact_lock(1)", Write},
		{"advisory unlock all", "SELECT pg_advisory_unlock_all()", Write},
		{"qualified builtin", "SELECT pg_catalog.txid_current()", Write},
		{"upper case builtin", "SELECT TXID_CURRENT()", Write},
		{"nextval", "SELECT nextval('s')", Write},
		{"setval in WHERE", "SELECT 1 WHERE setval('s', 5) > 0", Write},
		{"notify", "SELECT pg_notify('c', 'x')", Write},
		{"lo_create", "SELECT lo_create(0)", Write},
		{"lowrite", "SELECT lowrite(0, 'x')", Write},
		{"lo_open", "SELECT lo_open(1, 131072)", Write},
		{"brin summarize", "SELECT brin_summarize_new_values('i')", Write},
		{"gin clean", "SELECT gin_clean_pending_list('i')", Write},
		{"terminate", "SELECT pg_terminate_backend(1)", Privilege},
		{"cancel", "SELECT pg_cancel_backend(1)", Privilege},
		{"reload", "SELECT pg_reload_conf()", Privilege},
		{"stats reset", "SELECT pg_stat_reset()", Privilege},
		{"slot changes", "SELECT * FROM pg_logical_slot_get_changes('s', NULL, NULL)", Privilege},
		{"replication origin", "SELECT pg_replication_origin_create('o')", Privilege},
		{"collations", "SELECT pg_import_system_collations('pg_catalog')", DDL},
		{"dblink_exec", "SELECT dblink_exec('dbname=x', 'DELETE FROM t')", Procedural},
		{"ts_rewrite query", "SELECT ts_rewrite('a'::tsquery, 'SELECT t, s FROM aliases')", Procedural},
		{"hba file", "SELECT * FROM pg_hba_file_rules()", ServerFile},
		{"set read-only off", "SET default_transaction_read_only = off", "read-write"},
		{"set read-only default", "SET default_transaction_read_only TO DEFAULT", "read-write"},
		{"set local", "SET LOCAL default_transaction_read_only = off", "read-write"},
		{"reset read-only", "RESET default_transaction_read_only", "read-write"},
		{"set transaction_read_only", "SET transaction_read_only = off", "read-write"},
		{"set transaction_read_only 0", "SET transaction_read_only = 0", "read-write"},
		{"set then call", "SET default_transaction_read_only = off; SELECT f()", "read-write"},
		{"begin read write", "BEGIN READ WRITE", "read-write"},
		{"begin isolation read write", "BEGIN ISOLATION LEVEL SERIALIZABLE, READ WRITE", "read-write"},
		{"start transaction read write", "START TRANSACTION READ WRITE", "read-write"},
		{"set transaction read write", "SET TRANSACTION READ WRITE", "read-write"},
		{"session characteristics", "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE", "read-write"},
		{"set_config", "SELECT set_config('default_transaction_read_only', 'off', false)", "read-write"},
		{"set_config upper case", "SELECT set_config('DEFAULT_TRANSACTION_READ_ONLY', 'off', false)", "read-write"},
		{"set_config transaction", "SELECT set_config('transaction_read_only', 'off', true)", "read-write"},
		{"set_config cast name", "SELECT set_config('default_transaction_read_only'::text, 'off', false)", "read-write"},
		{"set_config qualified", "SELECT pg_catalog.set_config('transaction_read_only', 'off', true)", "read-write"},
		{"set_config in subquery", "SELECT (SELECT set_config('transaction_read_only', 'off', true))", "read-write"},
		{"user function", "SELECT f()", "catalog: f"},
		{"function in FROM", "SELECT * FROM f()", "catalog: f"},
		{"function in WHERE", "SELECT 1 WHERE f() > 0", "catalog: f"},
		{"recursive CTE", "WITH RECURSIVE r AS (SELECT f()) SELECT * FROM r", "catalog: f"},
		{"over generate_series", "SELECT f() FROM generate_series(1,1)", "catalog: f"},
		{"qualified function", "SELECT public.f()", "catalog: public.f"},
		{"quoted function", `SELECT "F"()`, "catalog: F"},
		{"function in ORDER BY", "SELECT 1 ORDER BY f()", "catalog: f"},
		{"function in VALUES", "VALUES (f())", "catalog: f"},
		{"function in lateral", "SELECT * FROM ro_t, LATERAL (SELECT f_upd()) x", "catalog: f_upd"},
		{"function as argument", "SELECT lower(f()::text)", "catalog: f"},
		{"view", "SELECT x FROM v", "catalog: v"},
		{"qualified view", "SELECT * FROM public.v", "catalog: public.v"},
		{"view in join", "SELECT * FROM ro_t JOIN v ON true", "catalog: v"},
		{"user operator", "SELECT 1 === 1", "catalog: ==="},
		{"qualified operator", "SELECT 1 OPERATOR(public.===) 1", "catalog: public.==="},
		{"explain analyze", "EXPLAIN ANALYZE SELECT f()", "catalog: f"},
		{"prepare", "PREPARE p AS SELECT f()", "catalog: f"},
		{"cursor", "DECLARE c CURSOR FOR SELECT f()", "catalog: f"},
	}
	var c Classifier
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := c.Classify(tt.sql, nil)
			if r.Err != nil {
				t.Fatalf("parse: %v", r.Err)
			}
			switch {
			case tt.want == "read-write":
				if r.ReadWrite == "" {
					t.Errorf("ReadWrite not set; classes %v", r.Classes)
				}
			case strings.HasPrefix(tt.want, "catalog: "):
				name := strings.TrimPrefix(tt.want, "catalog: ")
				var all []string
				for _, ns := range [][]Name{r.Calls, r.Operators, r.Relations} {
					for _, n := range ns {
						all = append(all, n.String())
					}
				}
				if !slices.Contains(all, name) {
					t.Errorf("names %v, want %s among them", all, name)
				}
			default:
				if !slices.Contains(r.Classes, tt.want) {
					t.Errorf("classes %v, want %s among them", r.Classes, tt.want)
				}
				for _, k := range r.Classes {
					if !slices.Contains(readOnly, k) {
						return
					}
				}
				t.Errorf("classes %v pass a read-only rule", r.Classes)
			}
		})
	}
	// And what must stay a plain read.
	for _, sql := range []string{"SELECT 1", "BEGIN READ ONLY", "SET TRANSACTION READ ONLY", "SELECT set_config('work_mem', '8MB', false)",
		"SELECT random(), clock_timestamp(), currval('s')"} {
		if r := c.Classify(sql, nil); r.ReadWrite != "" {
			t.Errorf("%s: ReadWrite %q", sql, r.ReadWrite)
		}
	}
}

func TestProcClass(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		p     Proc
		class string
		why   string
	}{
		{"user volatile", Proc{Schema: "public", Name: "f", Volatile: 'v', Language: "sql"}, Procedural, "function public.f is VOLATILE sql"},
		{"user plpgsql", Proc{Schema: "public", Name: "f_upd", Volatile: 'v', Language: "plpgsql"}, Procedural, "function public.f_upd is VOLATILE plpgsql"},
		{"extension volatile", Proc{Schema: "public", Name: "dblink_exec", Volatile: 'v', Language: "c"}, Procedural, "VOLATILE c"},
		{"user stable", Proc{Schema: "public", Name: "f", Volatile: 's', Language: "sql"}, "", ""},
		{"user immutable", Proc{Schema: "public", Name: "f", Volatile: 'i', Language: "plpgsql"}, "", ""},
		{"builtin volatile read", Proc{Schema: "pg_catalog", Name: "random", Volatile: 'v', Language: "internal", BuiltIn: true}, "", ""},
		{"builtin stable write", Proc{Schema: "pg_catalog", Name: "txid_current", Volatile: 's', Language: "internal", BuiltIn: true}, Write, "built-in"},
		{"builtin lock", Proc{Schema: "pg_catalog", Name: "pg_try_advisory_lock", Volatile: 'v', Language: "internal", BuiltIn: true}, Write, "built-in"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			class, why := ProcClass(tt.p)
			if class != tt.class || !strings.Contains(why, tt.why) {
				t.Errorf("ProcClass = %q, %q; want %q, %q", class, why, tt.class, tt.why)
			}
		})
	}
}
