// Package loopgate is the module root. It holds no code: see cmd/loopgate for
// the daemon and CLI, and ARCHITECTURE.md for how the packages fit together.
package loopgate
