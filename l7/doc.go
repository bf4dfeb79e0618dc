// Package l7 runs sessions: it takes accepted connections with their
// Subject, records each session's start before anything is forwarded ("no
// record, no forward"), hands the connection to the protocol's Handler
// (l7/tcp, l7/postgres, l7/ssh, l7/http) and records how it ended.
//
// Every handler decides through one path, Session.Authorize (authorize.go):
// a Command carries its text, parameters and classes (or a decision the
// handler refined from Session.Check, the one pure policy query); Authorize
// decides, holds it for approval where the rule says so, and records the
// decision before it returns, so nothing is forwarded unrecorded. A command
// with Hold keeps its classes open for the session's life, and every
// admitted session is re-decided on reload.
//
// It sees only a net.Conn and a policy.Subject: it never imports intercept,
// store or api. Recording goes through the small Recorder interface declared
// here, which *store.DB satisfies, so protocol tests need neither root nor
// SQLite.
//
// Each session goroutine has one recover: a panic in a handler is recorded as
// internal_error and logged with its stack, and the daemon keeps serving.
package l7
