package policy

import (
	"strings"
	"testing"
	"time"
)

func TestParseRetention(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, yaml string
		keep       time.Duration
		err        string // in the error; "" for none
	}{
		{name: "absent: keep forever", yaml: "listen: 127.0.0.1:1\n", keep: 0},
		{name: "days", yaml: "retention: {keep: 90d}\n", keep: 90 * 24 * time.Hour},
		{name: "duration", yaml: "retention:\n  keep: 36h\n", keep: 36 * time.Hour},
		{name: "too short", yaml: "retention: {keep: 5m}\n", err: "f.yaml:1:19: retention: keep: must be at least 1h"},
		{name: "not a duration", yaml: "retention:\n  keep: forever\n", err: `f.yaml:2:9: retention: keep: want a duration such as 90d or 2160h, got "forever"`},
		{name: "keep missing", yaml: "retention: {}\n", err: "f.yaml:1:12: retention: keep: is required"},
		{name: "unknown key", yaml: "retention: {keep: 1d, at: 3am}\n", err: "f.yaml:1:23"},
		{name: "not a mapping", yaml: "retention: 90d\n", err: "f.yaml:1:12"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := Parse("f.yaml", []byte(tt.yaml))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Retention.Keep != tt.keep {
				t.Errorf("keep = %v, want %v", cfg.Retention.Keep, tt.keep)
			}
		})
	}
}
