// Package sqlclass sorts SQL statements into the command classes policy
// rules name (read, write, unbounded-write, ddl, drop, copy, copy-program,
// server-file, privilege, set-role, procedural, transaction, session,
// unknown), with PostgreSQL's own parser (pg_query_go, libpg_query), never
// with regular expressions.
//
// A statement gets every class that applies: a CTE that reads and deletes is
// read and write; SELECT pg_read_file(...) is read and server-file. Anything
// the parser rejects, and anything whose effect cannot be known from its text
// (EXECUTE of an unknown prepared statement, dynamic SQL in a function body),
// is unknown, which policy denies unless a rule names it.
//
// What only the database knows (whether f in SELECT f() writes, what a
// view runs) cannot be read from text: a Result names the functions,
// operators and relations a statement uses for the caller to resolve in
// the catalog, and ProcClass turns a pg_proc row into a class (functions.go
// holds the reviewed table of built-ins that do more than read).
//
// Classifier caches results by statement text and is safe for concurrent
// use. It does no I/O.
package sqlclass
