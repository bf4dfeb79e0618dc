package postgres

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
)

// TestCancelKeys: the agent sees its backend's real PID; a cancel reaches
// that backend with the real secret only when it carries the session's
// secret and comes from the session's workload; and once the session gives
// its server connection to the pool, its key is gone: a cancel sent at that
// very moment (forced by the pool's test seam) is refused, so it cannot hit
// the next session on that backend.
func TestCancelKeys(t *testing.T) {
	f := startFakePG(t)
	h := &Handler{}
	t.Cleanup(func() { h.Close() })
	ctx := context.Background()
	fs, ferr := startFakeSession(t, h, f, "w", map[string]string{"user": "a", "database": "d"})
	if ferr != nil {
		t.Fatalf("login refused: %s", ferr.Message)
	}
	if fs.key == nil || fs.key.ProcessID != f.pid {
		t.Fatalf("BackendKeyData %+v, want the backend's real PID %d", fs.key, f.pid)
	}
	if string(fs.key.SecretKey) == string(fakeSecret) {
		t.Fatal("the agent was given the backend's real secret")
	}
	forged := append([]byte(nil), fs.key.SecretKey...)
	forged[0] ^= 1
	tests := []struct {
		name     string
		workload string
		pid      uint32
		secret   []byte
		ok       bool
	}{
		{"forged secret", "w", f.pid, forged, false},
		{"other workload", "v", f.pid, fs.key.SecretKey, false},
		{"other pid", "w", f.pid + 1, fs.key.SecretKey, false},
		{"the session's key", "w", f.pid, fs.key.SecretKey, true},
	}
	for _, tt := range tests {
		err := h.cancels.cancel(ctx, f.addr(), tt.workload, &pgproto3.CancelRequest{ProcessID: tt.pid, SecretKey: tt.secret})
		if (err == nil) != tt.ok {
			t.Errorf("%s: cancel returned %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
	select {
	case c := <-f.cancels:
		if c.ProcessID != f.pid || string(c.SecretKey) != string(fakeSecret) {
			t.Errorf("server got cancel %+v, want pid %d and the real secret", c, f.pid)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the server got no cancel")
	}

	var late error
	h.pool.onPut = func() {
		late = h.cancels.cancel(ctx, f.addr(), "w", &pgproto3.CancelRequest{ProcessID: fs.key.ProcessID, SecretKey: fs.key.SecretKey})
	}
	if err := fs.end(t); err != nil {
		t.Fatal(err)
	}
	h.pool.onPut = nil
	if late == nil {
		t.Error("a cancel sent as the server connection went to the pool was forwarded")
	}
	select {
	case c := <-f.cancels:
		t.Errorf("the server got a late cancel %+v", c)
	default:
	}
	// The next session reuses the backend, with a fresh secret.
	fs2, ferr := startFakeSession(t, h, f, "w", map[string]string{"user": "a", "database": "d"})
	if ferr != nil {
		t.Fatalf("login refused: %s", ferr.Message)
	}
	if string(fs2.key.SecretKey) == string(fs.key.SecretKey) {
		t.Error("the next session on the backend got the same secret")
	}
	if err := h.cancels.cancel(ctx, f.addr(), "w", &pgproto3.CancelRequest{ProcessID: f.pid, SecretKey: fs.key.SecretKey}); err == nil {
		t.Error("the ended session's key cancels the next session's statement")
	}
	fs2.end(t)
}
