// Package http is loopgate's HTTP(S) handler. An agent dials the real
// https://host (or http://host); the kernel redirects the connection here
// and the handler:
//
//   - terminates TLS with a leaf for the SNI minted on demand by loopgate's
//     CA (ca.go: P-256, exact SAN, a day's life, cached, concurrent mints
//     collapsed), after checking that the SNI resolves to the address the
//     agent dialled (names.go); a Host other than the SNI gets 421;
//   - or, for tls: passthrough targets, decides on the SNI alone and
//     splices the bytes unopened (passthrough.go);
//   - serves HTTP/2 and HTTP/1.1 with net/http on the one connection
//     (handler.go), and decides every request (session.go): the path is
//     normalised first (path.go: dot segments, empty segments,
//     percent-encoding; ambiguous paths are refused), the method gives the
//     class (read, write, delete, unknown), the rule's requests: patterns
//     refine it, and l7.Session.Authorize decides, holds for approval and
//     records before anything is forwarded. A request held past
//     ApprovalWait gets 403 naming its approval, which stays pending: once
//     approved, the agent's retry of the same request (method, path, query
//     and body hash) passes;
//   - strips the agent's credentials and injects the target's (creds.go),
//     refusing a request that brings a credential of its own, and scrubs
//     the credential from responses that echo it (scrub.go);
//   - relays with httputil.ReverseProxy (upstream.go) to the address the
//     agent dialled, TLS verified against the system roots or the target's
//     ca_file, keeping connections per target; streaming bodies flow
//     unbuffered, Alt-Svc is stripped;
//   - masks JSON (streamed token by token under a cap, fail closed), SSE
//     (per data line, best effort) and text bodies on masked routes
//     (respmask.go); binary bodies pass unmasked;
//   - records each request's result (record.go: status, bytes, duration,
//     masked headers and body excerpts up to 64 KiB with a truncated flag)
//     and each WebSocket frame of an upgraded exchange (ws.go).
//
// It must not open SQLite, read YAML or talk to the kernel: it sees a
// net.Conn and an l7.Session. Routes are plain HTTP today; a future
// kind: kubernetes classifies requests its own way (RequestInfo) and
// reuses everything else.
package http
