package postgres

import (
	"strings"

	"github.com/jackc/pgx/v5/pgproto3"
)

// SQLSTATEs loopgate answers with.
const (
	codeInsufficientPrivilege = "42501" // a statement policy denies
	codeInvalidAuthorization  = "28000" // a session policy refuses
	codeInvalidPassword       = "28P01" // a refused OIDC token
	codeProtocolViolation     = "08P01"
	codeConnectionFailure     = "08006"
	codeFeatureNotSupported   = "0A000"
	codeAdminShutdown         = "57P01" // the session was ended by loopgate (shutdown, revoked)
	codeTooManyConnections    = "53300" // a session past its workload's or the daemon's budget
	codeProgramLimitExceeded  = "54000" // a statement over max_statement_bytes
)

// raiseSQL returns a DO block that raises SQLSTATE 42501 with msg. Sent in
// place of a denied statement, it makes the server fail exactly where the
// statement would have failed: the client sees the error, an open
// transaction is aborted, a pipeline is skipped up to Sync.
func raiseSQL(msg, hint string) string { return raiseSQLCode(codeInsufficientPrivilege, msg, hint) }

// raiseSQLCode is raiseSQL with another SQLSTATE.
func raiseSQLCode(code, msg, hint string) string {
	q := func(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
	tag := "$loopgate$"
	for strings.Contains(msg+hint, tag) {
		tag = "$loopgate" + tag[1:]
	}
	return "DO " + tag + " BEGIN RAISE EXCEPTION USING ERRCODE = '" + code +
		"', MESSAGE = " + q(msg) + ", HINT = " + q(hint) + "; END " + tag
}

// fatal is an ErrorResponse that ends the session before it started.
func fatal(code, msg string) *pgproto3.ErrorResponse {
	return &pgproto3.ErrorResponse{Severity: "FATAL", SeverityUnlocalized: "FATAL", Code: code, Message: msg}
}
