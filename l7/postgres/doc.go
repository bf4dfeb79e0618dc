// Package postgres is loopgate's PostgreSQL handler: it speaks the wire
// protocol (v3) to the agent as a server and to the target as a client, logs
// in upstream with credentials the agent never sees, and puts every
// statement through policy before the database sees it.
//
// Layers, one file each:
//   - frontend.go: the agent's side up to ReadyForQuery: SSLRequest and
//     GSSENCRequest answered 'N', StartupMessage (protocol 3.x; a newer
//     minor or "_pq_." options get NegotiateProtocolVersion and go on at
//     3.0, as PostgreSQL 15 does), an OIDC token as password when the
//     workload needs one, CancelRequest.
//   - params.go: startup parameters, each forwarded or refused (those that
//     could change the role or how SQL parses), never dropped.
//   - upstream.go: pgconn logs in with the target's credentials (SCRAM,
//     md5), then Hijack()s the connection; the agent gets a synthesized
//     AuthenticationOk, the server's ParameterStatus, BackendKeyData with
//     the backend's real PID and a loopgate-issued secret, and
//     ReadyForQuery.
//   - relay.go: the two message pumps. Agent to target: messages are
//     decoded with pgproto3, statements classified (policy/sqlclass) and
//     decided; extended-protocol messages are held until Sync or Flush so a
//     denied statement in a pipeline is replaced in place. Target to agent:
//     messages are framed, not decoded, except the few that end a command.
//   - deny.go: how a denial looks. The denied statement is replaced by a DO
//     block that raises SQLSTATE 42501 with loopgate's message, so the
//     server itself puts the session in the state it would be in after a
//     real error (transaction aborted, pipeline skipped to Sync).
//   - cancel.go: loopgate-issued cancel secrets mapped to the real ones,
//     held by a session only while it owns its backend.
//   - dynamic.go: per-session roles, and the sweep that drops those left.
//   - readonly.go, catalog.go: read-only must hold. The functions,
//     operators and views a statement names are resolved in the target's
//     catalog (a VOLATILE function that is not built in is procedural),
//     and a session whose rule allows no class that can write runs
//     read-only on the server too.
//
// Traps: pgproto3 messages are valid only until the next Receive; relay.go
// copies what it keeps. Nothing here opens SQLite or reads YAML.
package postgres
