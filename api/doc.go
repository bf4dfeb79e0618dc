// Package api is loopgate's local HTTP API for approvers and auditors:
// pending approvals (list, get, approve, deny, a server-sent event stream),
// recorded sessions and their events, health and Prometheus metrics, and
// the columns value detectors learned (list, confirm, drop).
//
// It listens on a unix socket, where callers are identified by their uid
// (SO_PEERCRED) mapped to approvers in the config, and optionally on a
// loopback TCP address, where callers present an OIDC bearer token for the
// API's own audience. Errors are JSON with a stable code. Request bodies are
// limited to 64 KiB.
//
// It decides nothing itself: approvals go through policy.Broker, records
// come from the store, and a confirmed or dropped learned column reaches the
// daemon's sessions through Server.LearnedChanged.
package api
