package mask

import (
	"io"
	"slices"
	"strings"
	"testing"

	"github.com/loopgate/loopgate/policy"
)

// BenchmarkStream masks log-like output in 32 KiB SSH-sized chunks.
func BenchmarkStream(b *testing.B) {
	m := streamMasker(b)
	line := "2026-11-30T12:00:00Z INFO request served path=/api/v1/items status=200 bytes=5123 user=bob@example.com\n"
	text := []byte(strings.Repeat(line, (1<<20)/len(line)))
	s := NewStream(m, io.Discard)
	b.SetBytes(int64(len(text)))
	b.ReportAllocs()
	for b.Loop() {
		for c := range slices.Chunk(text, 32<<10) {
			s.Write(c)
		}
		s.Flush()
	}
}

func BenchmarkScanWhole(b *testing.B) {
	m := streamMasker(b)
	line := "2026-11-30T12:00:00Z INFO request served path=/api/v1/items status=200 bytes=5123 user=bob@example.com\n"
	text := []byte(strings.Repeat(line, (1<<20)/len(line)))
	b.SetBytes(int64(len(text)))
	for b.Loop() {
		m.Scan(text)
	}
}

// BenchmarkStreamPlain masks output without secrets with two detectors.
func BenchmarkStreamPlain(b *testing.B) {
	cfg := &policy.Config{Masks: []policy.Mask{{Name: "e", Detect: "email", Mode: "redact"}, {Name: "k", Detect: "aws-key", Mode: "redact"}}}
	m, err := New(cfg, []string{"e", "k"}, nil)
	if err != nil {
		b.Fatal(err)
	}
	line := "2026-11-30T12:00:00Z INFO request served path=/api/v1/items status=200 bytes=5123 took=3.2ms\n"
	text := []byte(strings.Repeat(line, (1<<20)/len(line)))
	s := NewStream(m, io.Discard)
	b.SetBytes(int64(len(text)))
	b.ReportAllocs()
	for b.Loop() {
		for c := range slices.Chunk(text, 32<<10) {
			s.Write(c)
		}
		s.Flush()
	}
}
