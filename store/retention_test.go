package store

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"
)

func TestRetainerPrunes(t *testing.T) {
	t.Parallel()
	db, path := openSigned(t)
	key := signedKey(t, path)
	// Sessions that ended days before now (fill's times are fixed).
	fill(t, db, 50)
	keep := time.Duration(0) // off at first: nothing happens
	var mu sync.Mutex
	r := &Retainer{DB: db, Every: 10 * time.Millisecond, Log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		Keep: func() time.Duration { mu.Lock(); defer mu.Unlock(); return keep }}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { r.Run(ctx) })
	defer func() { cancel(); wg.Wait() }()
	for range 5 {
		r.once(ctx) // as Run would, with retention off
	}
	if v := verifyWith(t, db, key); v.PrunedThrough != 0 {
		t.Fatalf("pruned with retention off: %+v", v)
	}
	mu.Lock()
	keep = time.Hour // now on, as after a reload
	mu.Unlock()
	waitFor(t, func() bool { return verifyWith(t, db, key).PrunedThrough > 0 })
	v := verifyWith(t, db, key)
	if v.Problem != nil || v.PrunedThrough != 147 || v.Sessions != 1 {
		t.Errorf("after retention: %+v (problem %v)", v, v.Problem)
	}
}
