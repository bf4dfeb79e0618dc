package postgres

import (
	"slices"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
)

// TestProtocolNegotiation: a startup packet of protocol 3.2 (pgx's
// min_protocol_version=3.2, libpq 18), or with "_pq_." options, is
// answered as PostgreSQL 15 answers it, with NegotiateProtocolVersion
// naming 3.0 and the options it does not know, and the session goes on at
// 3.0 (a 4-byte secret); the options never reach the server.
func TestProtocolNegotiation(t *testing.T) {
	f := startFakePG(t)
	h := &Handler{}
	t.Cleanup(func() { h.Close() })
	tests := []struct {
		name    string
		version uint32
		params  map[string]string
		want    *pgproto3.NegotiateProtocolVersion
	}{
		{"3.0", pgproto3.ProtocolVersion30, nil, nil},
		{"3.2", pgproto3.ProtocolVersion32, nil, &pgproto3.NegotiateProtocolVersion{NewestMinorProtocol: pgproto3.ProtocolVersion30}},
		{"3.0 with options", pgproto3.ProtocolVersion30, map[string]string{"_pq_.b": "1", "_pq_.a": "x"},
			&pgproto3.NegotiateProtocolVersion{NewestMinorProtocol: pgproto3.ProtocolVersion30, UnrecognizedOptions: []string{"_pq_.a", "_pq_.b"}}},
		{"3.2 with options", pgproto3.ProtocolVersion32, map[string]string{"_pq_.a": "x"},
			&pgproto3.NegotiateProtocolVersion{NewestMinorProtocol: pgproto3.ProtocolVersion30, UnrecognizedOptions: []string{"_pq_.a"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			params := map[string]string{"user": "a", "database": "d"}
			for k, v := range tt.params {
				params[k] = v
			}
			fs, ferr := startFakeSessionWith(t, h, f, "w", &pgproto3.StartupMessage{ProtocolVersion: tt.version, Parameters: params})
			if ferr != nil {
				t.Fatalf("login refused: %s", ferr.Message)
			}
			defer fs.end(t)
			got := fs.negotiated
			if (got == nil) != (tt.want == nil) || got != nil && (got.NewestMinorProtocol != tt.want.NewestMinorProtocol ||
				!slices.Equal(got.UnrecognizedOptions, tt.want.UnrecognizedOptions)) {
				t.Errorf("negotiated %+v, want %+v", got, tt.want)
			}
			if fs.key == nil || len(fs.key.SecretKey) != 4 {
				t.Errorf("BackendKeyData %+v, want a 4-byte secret (protocol 3.0)", fs.key)
			}
			f.mu.Lock()
			last := f.params[len(f.params)-1]
			f.mu.Unlock()
			for k := range last {
				if k == "_pq_.a" || k == "_pq_.b" {
					t.Errorf("the server got the protocol option %s", k)
				}
			}
		})
	}
}
