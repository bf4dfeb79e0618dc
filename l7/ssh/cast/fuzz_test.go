package cast

import (
	"bytes"
	"io"
	"os"
	"testing"
	"unicode/utf8"
)

// FuzzCastWriter writes any bytes cut at a fuzzed size: the cast always
// reads back, and valid UTF-8 comes back unchanged however it was cut.
func FuzzCastWriter(f *testing.F) {
	f.Add([]byte(text), uint8(1))
	f.Add([]byte("a\xffb\xe6\x97"), uint8(2))
	f.Add([]byte("🎉🎉🎉"), uint8(3))
	f.Fuzz(func(t *testing.T, data []byte, chunk uint8) {
		var buf bytes.Buffer
		w, err := NewWriter(&buf, Header{Width: 80, Height: 24})
		if err != nil {
			t.Fatal(err)
		}
		size := int(chunk)%16 + 1
		for i := 0; i < len(data); i += size {
			w.Output(data[i:min(i+size, len(data))])
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		got, _ := outputs(t, buf.Bytes())
		if utf8.Valid(data) && got != string(data) {
			t.Fatalf("got %q, want %q", got, data)
		}
	})
}

// FuzzCastReader reads any bytes as a cast: an error or events, never a
// panic.
func FuzzCastReader(f *testing.F) {
	if b, err := os.ReadFile("testdata/session.cast"); err == nil {
		f.Add(b)
	}
	f.Add([]byte("{\"version\": 2, \"width\": 80, \"height\": 24}\n[1, \"r\", \"100x30\"]\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := NewReader(bytes.NewReader(b))
		if err != nil {
			return
		}
		for range 10000 {
			e, err := r.Next()
			if err != nil {
				if err != io.EOF && err.Error() == "" {
					t.Fatal("empty error")
				}
				return
			}
			e.Size()
		}
	})
}
