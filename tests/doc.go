// Package tests holds loopgate's end-to-end tests: the real daemon binary,
// eBPF programs loaded into the running kernel, real targets on loopback and
// unmodified client programs started in workload cgroups with `loopgate run`.
// Shared fixtures live in tests/lgtest.
package tests
