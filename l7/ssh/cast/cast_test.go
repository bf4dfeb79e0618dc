package cast

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"
)

var update = flag.Bool("update", false, "rewrite golden files")

// clock is a fake clock advancing by step at every reading.
func clock(step time.Duration) func() time.Time {
	t := time.Unix(1700000000, 0)
	var mu sync.Mutex
	return func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		t = t.Add(step)
		return t
	}
}

// outputs reads a cast back and joins its output events.
func outputs(t testing.TB, b []byte) (string, []Event) {
	t.Helper()
	r, err := NewReader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	var evs []Event
	for {
		e, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		evs = append(evs, e)
		if e.Code == Output {
			out.WriteString(e.Data)
		}
	}
	return out.String(), evs
}

const text = "héllo ✓ 日本語 🎉 \x1b[1mbold\x1b[0m\r\nend"

// TestUTF8Splits cuts a text of 1- to 4-byte sequences at every offset,
// and into single bytes: the recording holds the text, never U+FFFD.
func TestUTF8Splits(t *testing.T) {
	t.Parallel()
	for i := 0; i <= len(text); i++ {
		var buf bytes.Buffer
		w, err := NewWriter(&buf, Header{Width: 80, Height: 24})
		if err != nil {
			t.Fatal(err)
		}
		w.Output([]byte(text[:i]))
		w.Output([]byte(text[i:]))
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if got, _ := outputs(t, buf.Bytes()); got != text {
			t.Fatalf("split at %d: %q", i, got)
		}
	}
	var buf bytes.Buffer
	w, _ := NewWriter(&buf, Header{Width: 80, Height: 24})
	for i := 0; i < len(text); i++ {
		w.Output([]byte{text[i]})
	}
	w.Close()
	got, evs := outputs(t, buf.Bytes())
	if got != text {
		t.Fatalf("byte by byte: %q", got)
	}
	for _, e := range evs {
		if !utf8.ValidString(e.Data) || strings.ContainsRune(e.Data, utf8.RuneError) {
			t.Fatalf("event %q", e.Data)
		}
	}
}

func TestInvalidBytes(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	w, _ := NewWriter(&buf, Header{Width: 80, Height: 24})
	w.Output([]byte("a\xffb\xe6\x97")) // a bad byte, then a cut-off sequence
	w.Output([]byte("c"))              // ...that never completes
	w.Output([]byte("\xe6\x97"))       // cut off at the end
	w.Close()
	got, _ := outputs(t, buf.Bytes())
	if got != "a\ufffdb\ufffd\ufffdc\ufffd\ufffd" {
		t.Errorf("got %q", got)
	}
}

func TestGolden(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	w, err := NewWriter(&buf, Header{Width: 80, Height: 24, Command: "bash", Title: "web1",
		Env: map[string]string{"TERM": "xterm-256color", "SHELL": "/bin/bash"}}, WithClock(clock(250*time.Millisecond)))
	if err != nil {
		t.Fatal(err)
	}
	w.Output([]byte("$ "))
	w.Input([]byte("ls\r"))
	w.Output([]byte("ls\r\n\"quoted\" \\ \x07 tab\there\r\n日本"))
	w.Resize(120, 40)
	w.Mark("approved")
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	const golden = "testdata/session.cast"
	if *update {
		if err := os.WriteFile(golden, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), want) {
		t.Errorf("cast differs from %s (-update to rewrite):\n%s", golden, buf.Bytes())
	}
}

func TestMaxBytes(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	w, _ := NewWriter(&buf, Header{Width: 80, Height: 24}, WithMaxBytes(100))
	for range 10 {
		w.Output([]byte(strings.Repeat("x", 30)))
	}
	w.Close()
	got, evs := outputs(t, buf.Bytes())
	if len(got) >= 100 || evs[len(evs)-1].Code != Marker || !strings.Contains(evs[len(evs)-1].Data, "recording stopped") {
		t.Errorf("%d bytes recorded, last event %+v", len(got), evs[len(evs)-1])
	}
}

func TestConcurrentOutput(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	w, _ := NewWriter(&buf, Header{Width: 80, Height: 24})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 100 {
				w.Output([]byte("ab"))
			}
		})
	}
	wg.Wait()
	w.Close()
	if got, _ := outputs(t, buf.Bytes()); len(got) != 800 {
		t.Errorf("%d bytes", len(got))
	}
}

func TestWriteError(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	fw := &failWriter{w: &buf, left: 1}
	w, err := NewWriter(fw, Header{Width: 80, Height: 24})
	if err != nil {
		t.Fatal(err)
	}
	w.Output([]byte("x"))
	if err := w.Close(); err == nil {
		t.Error("write error lost")
	}
}

type failWriter struct {
	w    io.Writer
	left int
}

func (f *failWriter) Write(p []byte) (int, error) {
	if f.left == 0 {
		return 0, errors.New("disk full")
	}
	f.left--
	return f.w.Write(p)
}

func TestReaderErrors(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ name, cast, want string }{
		{"empty", "", "empty recording"},
		{"version", `{"version": 1, "width": 80, "height": 24}`, "version 1"},
		{"not json", "hello", "cast header"},
		{"bad event", "{\"version\": 2, \"width\": 80, \"height\": 24}\n[1, \"o\"]\n", "cast line 2"},
		{"backwards", "{\"version\": 2, \"width\": 80, \"height\": 24}\n[2, \"o\", \"a\"]\n[1, \"o\", \"b\"]\n", "out of order"},
		{"too long", "{\"version\": 2, \"width\": 80, \"height\": 24}\n[1, \"o\", \"" + strings.Repeat("a", MaxLine) + "\"]\n", "too long"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r, err := NewReader(strings.NewReader(tt.cast))
			for err == nil {
				_, err = r.Next()
			}
			if err == io.EOF || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

// TestPlay replays a cast with a fake sleep: output as recorded, gaps
// capped by MaxIdle and divided by Speed.
func TestPlay(t *testing.T) {
	t.Parallel()
	cast := "{\"version\": 2, \"width\": 80, \"height\": 24}\n" +
		"[0.5, \"o\", \"a\"]\n[1.5, \"i\", \"x\"]\n[11.5, \"o\", \"b\"]\n[11.5, \"r\", \"100x30\"]\n[12, \"o\", \"c\"]\n"
	var slept []time.Duration
	r, err := NewReader(strings.NewReader(cast))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	err = Play(context.Background(), &out, r, PlayOptions{Speed: 2, MaxIdle: 2 * time.Second, Resize: true,
		Sleep: func(_ context.Context, d time.Duration) error { slept = append(slept, d); return nil }})
	if err != nil {
		t.Fatal(err)
	}
	if want := "\x1b[8;24;80ta" + "b\x1b[8;30;100tc"; out.String() != want {
		t.Errorf("output %q, want %q", out.String(), want)
	}
	want := []time.Duration{250 * time.Millisecond, 500 * time.Millisecond, time.Second, 0, 250 * time.Millisecond}
	if len(slept) != len(want) {
		t.Fatalf("slept %v, want %v", slept, want)
	}
	for i := range want {
		if slept[i] != want[i] {
			t.Errorf("sleep %d = %v, want %v", i, slept[i], want[i])
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r, _ = NewReader(strings.NewReader(cast))
	if err := Play(ctx, io.Discard, r, PlayOptions{}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled play: %v", err)
	}
}
