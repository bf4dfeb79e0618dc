// Package policy owns loopgate's configuration file and the decisions made
// from it: which destinations are protected targets, which cgroups are
// workloads, and who a connecting process is (Subject).
//
// Load parses loopgate.yaml strictly: unknown keys, duplicate keys and
// duplicate names are errors, and every error carries file:line:column
// (ConfigError). A Config is immutable once returned and safe for concurrent
// use; reloads build a new one and swap it.
//
// The package does no network I/O: host names in target addresses are
// resolved by package intercept, which keeps the kernel's target map fresh.
package policy
