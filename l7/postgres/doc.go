// Package postgres is loopgate's PostgreSQL handler: it speaks the wire
// protocol (v3) to the agent as a server and to the target as a client, logs
// in upstream with credentials the agent never sees, and puts every
// statement through policy before the database sees it.
//
// Files, by layer:
//
// Session setup
//   - postgres.go: Handler and Serve, a session from accept to end, in
//     named steps: login, admit (decided through l7.Session.Authorize like
//     every statement), openUpstream, keepRole, greet, transportFor, run.
//   - frontend.go: the agent's side up to ReadyForQuery. SSLRequest is
//     answered 'N', or 'S' with TLS from the daemon's CA (ca.go) when the
//     target has tls: {agent: true}; GSSENCRequest 'N'; StartupMessage
//     (protocol 3.x; a newer minor or "_pq_." options get
//     NegotiateProtocolVersion and go on at 3.0, as PostgreSQL 15 does); an
//     OIDC token as password when the workload needs one; CancelRequest.
//   - reader.go: framing of the agent's messages and startup packets, with
//     size limits, from pooled buffers.
//   - params.go: startup parameters, each forwarded or refused (those that
//     could change the role or how SQL parses), never dropped.
//   - upstream.go: pgconn logs in with the target's credentials (SCRAM,
//     md5), then Hijack()s the connection; the agent gets a synthesized
//     AuthenticationOk, the server's ParameterStatus, BackendKeyData with
//     the backend's real PID and a loopgate-issued secret, and
//     ReadyForQuery.
//   - pool.go: server connections kept for the next session of the same
//     login after DISCARD ALL (PgBouncer's session mode).
//   - dynamic.go: per-session roles, and the sweep that drops those left.
//   - cancel.go: loopgate-issued cancel secrets mapped to the real ones,
//     held by a session only while it owns its backend.
//   - ca.go: the local CA and leaf certificates for TLS toward the agent.
//
// The relay: one protocol session, two transports
//   - relay.go: a session's protocol state (statements, portals, held
//     extended-protocol messages, pending commands, masks).
//   - transport.go: the transport interface (pump, final, close, stop,
//     mayBlock), the one place a session's end is decided (what the agent
//     is told, whether the server connection can be reused, which error
//     counts), and the goroutine transport, used for TLS.
//   - loop.go, loopfd.go: the epoll transport shared by plaintext
//     sessions, and its sockets (taken from Go's poller, output queued
//     without blocking the loop).
//   - agent.go: agent to target. Messages are decoded with pgproto3,
//     statements classified (policy/sqlclass), decided and recorded through
//     l7.Session.Authorize (AuthorizeNow on the event loop); extended-protocol
//     messages are held until Sync or Flush so a denied statement in a
//     pipeline is replaced in place.
//   - target.go: target to agent. Messages are framed, not decoded, except
//     the few that end a command or carry rows to mask; relayMessage
//     dispatches each type to a named step (dataRow, copyData, ...).
//   - deny.go: how a denial looks. The denied statement is replaced by a DO
//     block that raises SQLSTATE 42501 (54000 for a statement over the size
//     limit) with loopgate's message, so the server itself puts the session
//     in the state it would be in after a real error.
//   - limit.go: statements over max_statement_bytes, denied unread; FATAL
//     53300 for a session past its budget.
//   - reset.go: which connection errors are a normal end.
//
// Policy that needs the database
//   - readonly.go, catalog.go: read-only must hold. The functions,
//     operators and views a statement names are resolved in the target's
//     catalog (a VOLATILE function that is not built in is procedural),
//     and a session whose rule allows no class that can write runs
//     read-only on the server too.
//   - columns.go: result columns resolved to their real table columns over
//     a side connection, cached.
//   - maskrule.go, mask.go, copymask.go: column masks (the rule itself is
//     policy/sqlpolicy.MaskDenial, shared with policy explain) and value detectors
//     applied to rows, errors, notices and COPY output. A detector that
//     fires on a result row's table column teaches the rule
//     (Handler.Learned): from the next statement on, in every session,
//     the column is one of the rule's column masks.
//
// Traps: pgproto3 messages are valid only until the next Receive; relay.go
// copies what it keeps. A socket handed to the loop is the loop's until it
// gives it back (loopfd.go). Nothing here opens SQLite or reads YAML.
package postgres
