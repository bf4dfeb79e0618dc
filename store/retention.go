package store

import (
	"context"
	"errors"
	"log/slog"
	"time"
)

// Retainer prunes what the store holds past its retention (the config's
// retention: section): at Run's start, then every Every.
type Retainer struct {
	// DB is the daemon's store, with checkpoints enabled: its checkpoint
	// key signs the prune marks.
	DB *DB
	// Keep returns how long a session is kept after it ends (read at each
	// prune, so a reloaded config applies); 0 skips the prune.
	Keep func() time.Duration
	// Every is the time between prunes (default: a day).
	Every time.Duration
	// Log receives one line per prune.
	Log *slog.Logger
}

// Run prunes until ctx ends. A failed prune is logged and tried again at
// the next one.
func (r *Retainer) Run(ctx context.Context) {
	every := r.Every
	if every <= 0 {
		every = 24 * time.Hour
	}
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		r.once(ctx)
		t.Reset(every)
	}
}

func (r *Retainer) once(ctx context.Context) {
	keep := r.Keep()
	if keep <= 0 {
		return
	}
	r.DB.wmu.Lock()
	key := r.DB.signer
	r.DB.wmu.Unlock()
	if key == nil {
		r.Log.Error("retention: store not pruned: no checkpoint key")
		return
	}
	before := time.Now().Add(-keep)
	start := time.Now()
	rep, err := r.DB.Prune(ctx, before, key)
	switch {
	case errors.Is(err, context.Canceled):
	case err != nil:
		r.Log.Error("retention: store not pruned", "err", err, "before", before)
	default:
		r.Log.Info("retention: store pruned", "before", before, "through_event", rep.Through, "events", rep.Events,
			"sessions", rep.Sessions, "held_by", rep.HeldBy, "took", time.Since(start).Round(time.Millisecond))
	}
}
