package sftpwire

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
)

func scpEvents(t testing.TB, stream []byte, size int) ([]string, error) {
	t.Helper()
	var s SCPSource
	var out []string
	for i := 0; i < len(stream); i += size {
		evs, err := s.Feed(stream[i:min(i+size, len(stream))])
		for _, e := range evs {
			out = append(out, fmt.Sprintf("%s %s %o %d %s", e.Kind, e.Path, e.Mode, e.Size, e.Message))
		}
		if err != nil {
			return out, err
		}
	}
	return out, nil
}

// TestSCPSource follows a real scp -r -p -f source stream (OpenSSH 9.2)
// fed at every chunk size up to 64 bytes and whole.
func TestSCPSource(t *testing.T) {
	t.Parallel()
	stream, err := os.ReadFile("testdata/openssh-scp-source.bin")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"dir scpsrc 755 0 ",
		"file scpsrc/empty 644 0 ",
		"dir scpsrc/sub 755 0 ",
		"file scpsrc/sub/b.bin 644 5000 ",
		"file scpsrc/a.txt 644 6 ",
	}
	for _, size := range append(slices.Collect(func(yield func(int) bool) {
		for i := 1; i <= 64; i++ {
			yield(i)
		}
	}), len(stream)) {
		got, err := scpEvents(t, stream, size)
		if err != nil {
			t.Fatalf("chunks of %d: %v", size, err)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("chunks of %d:\n%s", size, strings.Join(got, "\n"))
		}
	}
}

func TestSCPSourceErrors(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct{ name, stream, want string }{
		{"slash in name", "C0644 3 ../x\nabc\x00", "malformed"},
		{"dotdot dir", "D0755 0 ..\n", "malformed"},
		{"bad mode", "C06z4 3 x\nabc\x00", "malformed"},
		{"E outside", "E\n", "E outside"},
		{"long line", "C0644 1 " + strings.Repeat("a", MaxSCPLine) + "\n", "over"},
		{"bad status", "C0644 1 x\na\x07", "after a file"},
		{"unknown", "Z\n", "starts with"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := scpEvents(t, []byte(tt.stream), 3)
			if !errors.Is(err, ErrSCP) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want %q", err, tt.want)
			}
		})
	}
	got, err := scpEvents(t, []byte("C0644 2 x\nab\x02read error\n\x01scp: y: No such file\n"), 1)
	if err != nil || !slices.Equal(got, []string{"error x 0 0 read error", "error  0 0 scp: y: No such file"}) {
		t.Errorf("source errors: %v %v", got, err)
	}
}

// TestSCPAcks reads a real sink's answers to a failed upload.
func TestSCPAcks(t *testing.T) {
	t.Parallel()
	stream, err := os.ReadFile("testdata/openssh-scp-sink-error.bin")
	if err != nil {
		t.Fatal(err)
	}
	for size := 1; size <= len(stream); size++ {
		var a SCPAcks
		var msgs []string
		for i := 0; i < len(stream); i += size {
			m, err := a.Feed(stream[i:min(i+size, len(stream))])
			if err != nil {
				t.Fatal(err)
			}
			msgs = append(msgs, m...)
		}
		if len(msgs) != 2 || !strings.Contains(msgs[0], "No such file or directory") {
			t.Fatalf("chunks of %d: %q", size, msgs)
		}
	}
	var a SCPAcks
	if _, err := a.Feed([]byte{0, 7}); !errors.Is(err, ErrSCP) {
		t.Errorf("bad answer: %v", err)
	}
}

// FuzzSCPStream follows any bytes as a source and as a sink's answers,
// cut at a fuzzed size: no panic, and the same events however it is cut.
func FuzzSCPStream(f *testing.F) {
	if b, err := os.ReadFile("testdata/openssh-scp-source.bin"); err == nil {
		f.Add(b, uint8(5))
	}
	if b, err := os.ReadFile("testdata/openssh-scp-sink-error.bin"); err == nil {
		f.Add(b, uint8(2))
	}
	f.Add([]byte("D0755 0 d\nC0644 2 x\nab\x00E\n"), uint8(1))
	f.Fuzz(func(t *testing.T, stream []byte, chunk uint8) {
		whole, werr := scpEvents(t, stream, len(stream)+1)
		cut, cerr := scpEvents(t, stream, int(chunk)%17+1)
		if (werr == nil) != (cerr == nil) || !slices.Equal(whole, cut) {
			t.Fatalf("whole %v %v, cut %v %v", whole, werr, cut, cerr)
		}
		var a SCPAcks
		for c := range slices.Chunk(stream, int(chunk)%7+1) {
			if _, err := a.Feed(c); err != nil {
				break
			}
		}
	})
}
