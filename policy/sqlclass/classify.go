package sqlclass

import (
	"encoding/json"
	"slices"
	"strings"
	"sync"

	pg_query "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Class names.
const (
	Read           = "read"
	Write          = "write"
	UnboundedWrite = "unbounded-write"
	DDL            = "ddl"
	Drop           = "drop"
	Copy           = "copy"
	CopyProgram    = "copy-program"
	ServerFile     = "server-file"
	Privilege      = "privilege"
	SetRole        = "set-role"
	Procedural     = "procedural"
	Transaction    = "transaction"
	Session        = "session"
	Unknown        = "unknown"
)

// Statement is one classified statement.
type Statement struct {
	// Text is the statement's own text within the query string.
	Text    string
	Classes []string
	// Prepares names the SQL-level prepared statement a PREPARE creates.
	Prepares string
	// Inner are the classes of what a PREPARE prepares.
	Inner []string
	// Executes names the prepared statement an EXECUTE runs (lower case).
	Executes string
	// Deallocates names the prepared statement a DEALLOCATE removes (lower
	// case), or "*" for DEALLOCATE ALL and DISCARD ALL.
	Deallocates string
	// Refs is how it uses columns (for column masks).
	Refs Refs
	// CopyOut describes a COPY ... TO STDOUT (nil for anything else).
	CopyOut *CopyOut
}

// Result is a classified query string (one or more statements).
type Result struct {
	Statements []Statement
	// Classes is the union over statements, sorted.
	Classes []string
	// Err is the parser's complaint, if any (then Classes is [unknown]).
	Err error
	// Calls, Operators and Relations are the functions, operators and
	// relations (tables, views, CTE names) the statements name, sorted:
	// what only the database's catalog can explain (a function's
	// volatility, a view's definition). Shared with the cache: read only.
	Calls, Operators, Relations []Name
	// ReadWrite, when not empty, says how the statements could make a
	// read-only session read-write (SET default_transaction_read_only,
	// BEGIN READ WRITE, set_config of either setting).
	ReadWrite string
}

// Prepared resolves a SQL-level prepared statement name (EXECUTE name) to
// the classes it was prepared with.
type Prepared func(name string) ([]string, bool)

// maxCache bounds the cache; it is cleared when full.
const maxCache = 4096

// maxCachedText is the longest text cached: a long one's result holds
// hundreds of bytes a byte of SQL, and 4,096 distinct ones would hold the
// daemon's memory.
const maxCachedText = 64 << 10

// Classifier classifies SQL. Its zero value is ready; it is safe for
// concurrent use.
type Classifier struct {
	mu    sync.Mutex
	cache map[string]Result
}

// Classify classifies a query string. prepared resolves EXECUTE; nil means
// none are known.
func (c *Classifier) Classify(sql string, prepared Prepared) Result {
	return c.ClassifyMiss(sql, prepared, nil)
}

// ClassifyMiss is Classify, calling miss (if not nil) before it parses a
// text it has not cached: parsing can take a while for a long statement.
func (c *Classifier) ClassifyMiss(sql string, prepared Prepared, miss func()) Result {
	key, single, ok := cacheKey(sql)
	folded := ok && single
	if !folded {
		key = sql
	}
	c.mu.Lock()
	r, hit := c.cache[key]
	c.mu.Unlock()
	if hit {
		if folded && len(r.Statements) == 1 {
			// Same statement but for numbers: report this text.
			st := r.Statements[0]
			st.Text = strings.TrimSpace(strings.TrimRight(strings.TrimSpace(sql), ";"))
			r.Statements = []Statement{st}
		}
		return r
	}
	if miss != nil {
		miss()
	}
	r, cacheable := classify(sql, prepared)
	if cacheable && (!folded || len(r.Statements) == 1) && len(sql) <= maxCachedText {
		c.mu.Lock()
		if c.cache == nil || len(c.cache) >= maxCache {
			c.cache = map[string]Result{}
		}
		c.cache[key] = r
		c.mu.Unlock()
	}
	return r
}

func classify(sql string, prepared Prepared) (Result, bool) {
	tree, err := pg_query.Parse(sql)
	if err != nil {
		return Result{Classes: []string{Unknown}, Err: err}, true
	}
	res := Result{Statements: make([]Statement, 0, len(tree.Stmts))}
	cacheable := true
	all := map[string]bool{}
	// A PREPARE earlier in the same string is visible to a later EXECUTE.
	local := map[string][]string{}
	lookup := func(name string) ([]string, bool) {
		if ks, ok := local[name]; ok {
			return ks, true
		}
		if prepared != nil {
			return prepared(name)
		}
		return nil, false
	}
	for _, raw := range tree.Stmts {
		cl := &classes{set: map[string]bool{}, prepared: lookup}
		cl.statement(raw.Stmt)
		if cl.dependsOnSession {
			cacheable = false
		}
		st := Statement{Text: stmtText(sql, raw), Classes: cl.list(), Prepares: cl.prepares, Inner: cl.inner, Refs: refsOf(raw.Stmt)}
		if cs := raw.Stmt.GetCopyStmt(); cs != nil {
			st.CopyOut = copyOut(cs)
		}
		if st.Refs.positional {
			cacheable = false // ORDER BY 1 and ORDER BY 2 differ only in a number
		}
		if ex := raw.Stmt.GetExecuteStmt(); ex != nil {
			st.Executes = strings.ToLower(ex.Name)
		}
		if d := raw.Stmt.GetDeallocateStmt(); d != nil {
			st.Deallocates = strings.ToLower(d.Name)
			if d.Isall || d.Name == "" {
				st.Deallocates = "*"
			}
		}
		if d := raw.Stmt.GetDiscardStmt(); d != nil && d.Target == pg_query.DiscardMode_DISCARD_ALL {
			st.Deallocates = "*"
		}
		if st.Prepares != "" {
			local[st.Prepares] = st.Inner
		}
		for _, k := range st.Classes {
			all[k] = true
		}
		res.Statements = append(res.Statements, st)
	}
	res.objects(tree)
	if len(res.Statements) == 0 {
		// An empty query: PostgreSQL answers EmptyQueryResponse.
		all[Session] = true
	}
	for k := range all {
		res.Classes = append(res.Classes, k)
	}
	slices.Sort(res.Classes)
	return res, cacheable
}

func stmtText(sql string, raw *pg_query.RawStmt) string {
	start := int(raw.StmtLocation)
	end := len(sql)
	if raw.StmtLen > 0 {
		end = start + int(raw.StmtLen)
	}
	if start < 0 || start > len(sql) || end > len(sql) || start > end {
		return sql
	}
	return strings.TrimSpace(sql[start:end])
}

type classes struct {
	set              map[string]bool
	prepared         Prepared
	dependsOnSession bool
	prepares         string
	inner            []string
}

func (c *classes) add(ks ...string) {
	for _, k := range ks {
		c.set[k] = true
	}
}

func (c *classes) list() []string {
	out := make([]string, 0, len(c.set))
	for k := range c.set {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// sub classifies a nested statement into a fresh set and returns its list.
func (c *classes) sub(n *pg_query.Node) []string {
	s := &classes{set: map[string]bool{}, prepared: c.prepared}
	s.statement(n)
	c.dependsOnSession = c.dependsOnSession || s.dependsOnSession
	return s.list()
}

// statement adds the classes of one top-level statement.
func (c *classes) statement(n *pg_query.Node) {
	if n == nil || n.Node == nil {
		c.add(Unknown)
		return
	}
	switch s := n.Node.(type) {
	case *pg_query.Node_SelectStmt:
		c.add(Read)
	case *pg_query.Node_InsertStmt, *pg_query.Node_MergeStmt:
		c.add(Write)
	case *pg_query.Node_UpdateStmt, *pg_query.Node_DeleteStmt:
		c.add(Write) // unbounded-ness is found by the walk below
	case *pg_query.Node_DropStmt, *pg_query.Node_TruncateStmt, *pg_query.Node_DropdbStmt,
		*pg_query.Node_DropTableSpaceStmt, *pg_query.Node_DropOwnedStmt:
		c.add(Drop)
	case *pg_query.Node_CopyStmt:
		cs := s.CopyStmt
		c.add(Copy)
		if cs.IsProgram {
			c.add(CopyProgram)
		} else if cs.Filename != "" {
			c.add(ServerFile)
		}
		switch {
		case cs.IsFrom:
			c.add(Write)
		case cs.Query == nil:
			c.add(Read)
		default: // COPY (query) TO: whatever the query is, and its rows go out
			c.add(c.sub(cs.Query)...)
		}
	case *pg_query.Node_GrantStmt, *pg_query.Node_GrantRoleStmt, *pg_query.Node_CreateRoleStmt,
		*pg_query.Node_AlterRoleStmt, *pg_query.Node_AlterRoleSetStmt, *pg_query.Node_DropRoleStmt,
		*pg_query.Node_AlterDefaultPrivilegesStmt, *pg_query.Node_AlterSystemStmt,
		*pg_query.Node_ReassignOwnedStmt, *pg_query.Node_SecLabelStmt, *pg_query.Node_AlterOwnerStmt,
		*pg_query.Node_CreateUserMappingStmt, *pg_query.Node_AlterUserMappingStmt:
		c.add(Privilege)
	case *pg_query.Node_VariableSetStmt:
		name := strings.ToLower(s.VariableSetStmt.Name)
		switch {
		case name == "role" || name == "session_authorization" || s.VariableSetStmt.Kind == pg_query.VariableSetKind_VAR_RESET_ALL:
			c.add(SetRole)
		case unsafeSet(s.VariableSetStmt):
			c.add(Unknown) // the server would read later SQL differently
		default:
			c.add(Session)
		}
	case *pg_query.Node_VariableShowStmt, *pg_query.Node_DiscardStmt, *pg_query.Node_DeallocateStmt,
		*pg_query.Node_ListenStmt, *pg_query.Node_UnlistenStmt, *pg_query.Node_CheckPointStmt,
		*pg_query.Node_FetchStmt, *pg_query.Node_ClosePortalStmt, *pg_query.Node_ConstraintsSetStmt:
		c.add(Session)
	case *pg_query.Node_NotifyStmt, *pg_query.Node_LockStmt:
		c.add(Write)
	case *pg_query.Node_DoStmt, *pg_query.Node_CallStmt:
		c.add(Procedural)
	case *pg_query.Node_ReturnStmt: // RETURN expr in a SQL-standard function body
		c.add(Read)
	case *pg_query.Node_TransactionStmt:
		c.add(Transaction)
	case *pg_query.Node_ExplainStmt:
		if explainAnalyze(s.ExplainStmt) {
			c.add(c.sub(s.ExplainStmt.Query)...) // ANALYZE runs the statement
		} else {
			c.add(Read)
		}
		return
	case *pg_query.Node_PrepareStmt:
		c.add(Session)
		c.prepares = strings.ToLower(s.PrepareStmt.Name)
		c.inner = c.sub(s.PrepareStmt.Query)
		return
	case *pg_query.Node_ExecuteStmt:
		c.dependsOnSession = true
		if ks, ok := c.lookup(s.ExecuteStmt.Name); ok {
			c.add(ks...)
		} else {
			c.add(Unknown)
		}
	case *pg_query.Node_DeclareCursorStmt:
		c.add(c.sub(s.DeclareCursorStmt.Query)...)
		return
	case *pg_query.Node_CreateTableAsStmt:
		c.add(DDL)
		c.add(c.sub(s.CreateTableAsStmt.Query)...)
		return
	case *pg_query.Node_CreateFunctionStmt:
		c.add(DDL)
		c.add(functionBody(s.CreateFunctionStmt, c)...)
	case *pg_query.Node_ViewStmt, *pg_query.Node_RuleStmt, *pg_query.Node_CreateTrigStmt,
		*pg_query.Node_IndexStmt, *pg_query.Node_RenameStmt, *pg_query.Node_CommentStmt,
		*pg_query.Node_DefineStmt, *pg_query.Node_CompositeTypeStmt, *pg_query.Node_VacuumStmt,
		*pg_query.Node_ReindexStmt, *pg_query.Node_ClusterStmt, *pg_query.Node_RefreshMatViewStmt:
		c.add(DDL)
	default:
		name := oneofName(n)
		switch {
		case strings.HasPrefix(name, "create_") || strings.HasPrefix(name, "alter_"):
			c.add(DDL)
		default:
			c.add(Unknown)
		}
	}
	// Whatever the statement, what it contains counts too.
	walk(n.ProtoReflect(), c.visit)
}

func (c *classes) lookup(name string) ([]string, bool) {
	if c.prepared == nil {
		return nil, false
	}
	return c.prepared(strings.ToLower(name))
}

func oneofName(n *pg_query.Node) string {
	m := n.ProtoReflect()
	od := m.Descriptor().Oneofs().ByName("node")
	if od == nil {
		return ""
	}
	if fd := m.WhichOneof(od); fd != nil {
		return string(fd.Name())
	}
	return ""
}

func explainAnalyze(e *pg_query.ExplainStmt) bool {
	for _, o := range e.Options {
		if d := o.GetDefElem(); d != nil && strings.EqualFold(d.Defname, "analyze") {
			if a := d.Arg; a == nil || !isFalse(a) {
				return true
			}
		}
	}
	return false
}

func isFalse(n *pg_query.Node) bool {
	if b := n.GetBoolean(); b != nil {
		return !b.Boolval
	}
	if s := n.GetString_(); s != nil {
		v := strings.ToLower(s.Sval)
		return v == "false" || v == "off" || v == "0"
	}
	if c := n.GetAConst(); c != nil {
		if b := c.GetBoolval(); b != nil {
			return !b.Boolval
		}
		if s := c.GetSval(); s != nil {
			v := strings.ToLower(s.Sval)
			return v == "false" || v == "off"
		}
	}
	return false
}

// walk calls visit for every message in the tree under m.
func walk(m protoreflect.Message, visit func(protoreflect.Message)) {
	visit(m)
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Kind() != protoreflect.MessageKind || fd.IsMap() {
			return true
		}
		if fd.IsList() {
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				walk(l.Get(i).Message(), visit)
			}
			return true
		}
		walk(v.Message(), visit)
		return true
	})
}

// visit adds the classes a nested node implies.
func (c *classes) visit(m protoreflect.Message) {
	switch x := m.Interface().(type) {
	case *pg_query.InsertStmt, *pg_query.MergeStmt:
		c.add(Write)
	case *pg_query.UpdateStmt:
		c.add(Write)
		if unbounded(x.WhereClause) {
			c.add(UnboundedWrite)
		}
	case *pg_query.DeleteStmt:
		c.add(Write)
		if unbounded(x.WhereClause) {
			c.add(UnboundedWrite)
		}
	case *pg_query.SelectStmt:
		if x.IntoClause != nil {
			c.add(DDL) // SELECT INTO creates a table
		}
		if len(x.LockingClause) > 0 {
			c.add(Write) // FOR UPDATE/SHARE locks rows
		}
	case *pg_query.FuncCall:
		c.function(x)
	}
}

// unbounded reports whether a WHERE clause cannot narrow the rows: none at
// all, or one that references no column (WHERE true, WHERE 1=1).
func unbounded(where *pg_query.Node) bool {
	if where == nil {
		return true
	}
	found := false
	walk(where.ProtoReflect(), func(m protoreflect.Message) {
		switch m.Interface().(type) {
		case *pg_query.ColumnRef, *pg_query.SubLink, *pg_query.ParamRef, *pg_query.FuncCall:
			found = true
		}
	})
	return !found
}

// Functions with effects beyond reading, by unqualified name.
var functionClasses = map[string]string{}

func init() {
	for class, names := range map[string][]string{
		ServerFile: {"pg_read_file", "pg_read_binary_file", "pg_ls_dir", "pg_stat_file", "pg_ls_logdir",
			"pg_ls_waldir", "pg_ls_tmpdir", "pg_ls_archive_statusdir", "pg_ls_logicalsnapdir",
			"pg_ls_logicalmapdir", "pg_ls_replslotdir", "lo_import", "lo_export", "pg_file_write",
			"pg_file_rename", "pg_file_unlink", "pg_file_sync", "pg_logdir_ls"},
		// Functions that run SQL given as text, or read whole tables,
		// schemas or databases by name: opaque to policy and to masks.
		Procedural: {"query_to_xml", "query_to_xmlschema", "query_to_xml_and_xmlschema", "cursor_to_xml",
			"cursor_to_xmlschema", "table_to_xml", "table_to_xmlschema", "table_to_xml_and_xmlschema",
			"schema_to_xml", "schema_to_xmlschema", "schema_to_xml_and_xmlschema", "database_to_xml",
			"database_to_xmlschema", "database_to_xml_and_xmlschema", "ts_stat",
			"dblink", "dblink_exec", "dblink_open", "dblink_send_query", "dblink_fetch"},
		Privilege: {"pg_terminate_backend", "pg_cancel_backend", "pg_reload_conf", "pg_rotate_logfile",
			"pg_promote", "pg_switch_wal", "pg_create_restore_point", "pg_backup_start", "pg_start_backup",
			"pg_drop_replication_slot", "pg_create_physical_replication_slot", "pg_create_logical_replication_slot"},
		Write: {"pg_notify", "nextval", "setval", "lo_create", "lo_creat", "lo_unlink", "lo_put",
			"lo_from_bytea", "lo_truncate", "pg_advisory_lock", "pg_advisory_xact_lock"},
	} {
		for _, n := range names {
			functionClasses[n] = class
		}
	}
}

func (c *classes) function(f *pg_query.FuncCall) {
	if len(f.Funcname) == 0 {
		return
	}
	s := f.Funcname[len(f.Funcname)-1].GetString_()
	if s == nil {
		return
	}
	name := strings.ToLower(s.Sval)
	if k, ok := functionClasses[name]; ok {
		c.add(k)
	}
	if name == "set_config" {
		// set_config('role', ...) is SET ROLE by another name; a name
		// that is not a constant could be anything.
		setting := ""
		if len(f.Args) > 0 {
			if ac := f.Args[0].GetAConst(); ac != nil && ac.GetSval() != nil {
				setting = strings.ToLower(ac.GetSval().Sval)
			}
		}
		switch setting {
		case "role", "session_authorization", "":
			c.add(SetRole)
		case "standard_conforming_strings", "client_encoding":
			v, ok := "", false
			if len(f.Args) > 1 {
				v, ok = constText(f.Args[1])
			}
			if !ok || UnsafeSetting(setting, v) {
				c.add(Unknown) // the server would read later SQL differently
			} else {
				c.add(Session)
			}
		default:
			c.add(Session)
		}
	}
}

// functionBody classifies what a function created by CREATE FUNCTION would
// run: SQL bodies are parsed as SQL, PL/pgSQL bodies with PostgreSQL's own
// PL/pgSQL parser; dynamic SQL (EXECUTE) and other languages are unknown or
// procedural, since their effect cannot be read from the text.
func functionBody(f *pg_query.CreateFunctionStmt, c *classes) []string {
	var lang, body string
	for _, o := range f.Options {
		d := o.GetDefElem()
		if d == nil {
			continue
		}
		switch d.Defname {
		case "language":
			if s := d.Arg.GetString_(); s != nil {
				lang = strings.ToLower(s.Sval)
			}
		case "as":
			if l := d.Arg.GetList(); l != nil && len(l.Items) > 0 {
				if s := l.Items[0].GetString_(); s != nil {
					body = s.Sval
				}
			}
		}
	}
	out := map[string]bool{}
	switch {
	case f.SqlBody != nil: // BEGIN ATOMIC ... END / RETURN expr
		walkStatements(f.SqlBody, func(n *pg_query.Node) {
			for _, k := range c.sub(n) {
				out[k] = true
			}
		})
	case lang == "sql":
		r, _ := classify(body, nil)
		for _, k := range r.Classes {
			out[k] = true
		}
	case lang == "plpgsql":
		for _, k := range plpgsqlClasses(f, body) {
			out[k] = true
		}
	default:
		out[Procedural] = true
	}
	var ks []string
	for k := range out {
		ks = append(ks, k)
	}
	return ks
}

func walkStatements(n *pg_query.Node, fn func(*pg_query.Node)) {
	if l := n.GetList(); l != nil {
		for _, it := range l.Items {
			walkStatements(it, fn)
		}
		return
	}
	fn(n)
}

// plpgsqlClasses parses a PL/pgSQL body and classifies every embedded SQL
// statement; dynamic EXECUTE makes it unknown.
func plpgsqlClasses(f *pg_query.CreateFunctionStmt, body string) []string {
	// The PL/pgSQL parser wants a whole CREATE FUNCTION statement.
	src := "CREATE FUNCTION loopgate_probe() RETURNS void LANGUAGE plpgsql AS " + dollarQuote(body)
	js, err := pg_query.ParsePlPgSqlToJSON(src)
	if err != nil {
		return []string{Unknown}
	}
	var tree any
	if err := json.Unmarshal([]byte(js), &tree); err != nil {
		return []string{Unknown}
	}
	out := map[string]bool{Procedural: true}
	var visit func(v any, key string)
	visit = func(v any, key string) {
		switch x := v.(type) {
		case map[string]any:
			for k, e := range x {
				switch k {
				case "PLpgSQL_stmt_dynexecute", "PLpgSQL_stmt_dynfors", "PLpgSQL_stmt_open":
					out[Unknown] = true
				case "query":
					if q, ok := e.(string); ok {
						for _, c := range exprClasses(q) {
							out[c] = true
						}
					}
				}
				visit(e, k)
			}
		case []any:
			for _, e := range x {
				visit(e, key)
			}
		}
	}
	visit(tree, "")
	var ks []string
	for k := range out {
		ks = append(ks, k)
	}
	return ks
}

func dollarQuote(s string) string {
	tag := "lgq"
	for strings.Contains(s, "$"+tag+"$") {
		tag += "x"
	}
	return "$" + tag + "$" + s + "$" + tag + "$"
}

// exprClasses classifies a PL/pgSQL embedded query or expression: a
// statement ("DELETE FROM t"), a bare expression ("a > 1") or an assignment
// ("x := f(1)").
func exprClasses(q string) []string {
	for _, cand := range []string{q, "SELECT " + q} {
		if r, _ := classify(cand, nil); r.Err == nil {
			return r.Classes
		}
	}
	if i := strings.Index(q, ":="); i >= 0 {
		if r, _ := classify("SELECT "+q[i+2:], nil); r.Err == nil {
			return r.Classes
		}
	}
	return []string{Unknown}
}
