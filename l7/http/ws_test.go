package http

import (
	"fmt"
	"slices"
	"testing"
)

// frames parses b split into chunks of n bytes and returns what it saw.
func frames(b []byte, n int) []string {
	var out []string
	p := frameParser{dir: "d", emit: func(_ string, op byte, fin bool, length uint64, payload []byte) {
		out = append(out, fmt.Sprintf("%d %v %d %q", op, fin, length, payload))
	}}
	for len(b) > 0 {
		k := min(n, len(b))
		p.feed(b[:k])
		b = b[k:]
	}
	return out
}

func TestFrameParser(t *testing.T) {
	t.Parallel()
	var stream []byte
	stream = append(stream, 0x81, 0x85, 1, 2, 3, 4) // masked "hello"
	for i, c := range []byte("hello") {
		stream = append(stream, c^[]byte{1, 2, 3, 4}[i%4])
	}
	stream = append(stream, 0x82, 126, 0, 200) // binary, 16-bit length
	stream = append(stream, make([]byte, 200)...)
	stream = append(stream, 0x89, 0)             // empty ping
	stream = append(stream, 0x88, 2, 0x03, 0xe8) // close 1000
	want := frames(stream, len(stream))
	if len(want) != 4 || want[0] != `1 true 5 "hello"` || want[2] != `9 true 0 ""` {
		t.Fatalf("frames: %q", want)
	}
	for n := 1; n < 16; n++ {
		if got := frames(stream, n); !slices.Equal(got, want) {
			t.Errorf("split by %d: %q", n, got)
		}
	}
}

// FuzzFrames: the parser never panics and sees the same frames however the
// stream is split into reads.
func FuzzFrames(f *testing.F) {
	f.Add([]byte{0x81, 0x85, 1, 2, 3, 4, 'i', 'g', 'o', 'h', 'n'}, uint8(3))
	f.Add([]byte{0x82, 127, 0, 0, 0, 0, 0, 0, 0, 2, 'a', 'b'}, uint8(1))
	f.Add([]byte{0x01, 0x02, 'a', 'b', 0x80, 0x01, 'c'}, uint8(2))
	f.Fuzz(func(t *testing.T, b []byte, n uint8) {
		whole := frames(b, len(b)+1)
		if got := frames(b, int(n%32)+1); !slices.Equal(got, whole) {
			t.Fatalf("split by %d: %q, whole: %q", n%32+1, got, whole)
		}
	})
}
