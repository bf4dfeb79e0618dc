package mask

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/loopgate/loopgate/policy"
)

// streamMasker masks with every detector.
func streamMasker(t testing.TB) *Masker {
	t.Helper()
	cfg := &policy.Config{}
	var names []string
	for _, d := range policy.Detectors {
		cfg.Masks = append(cfg.Masks, policy.Mask{Name: d, Detect: d, Mode: "redact"})
		names = append(names, d)
	}
	m, err := New(cfg, names, []byte("k"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

const secretText = "user bob@example.com logged in\r\ncard 4111 1111 1111 1111; ssn 078-05-1120\n" +
	"key AKIAIOSFODNN7EXAMPLE, token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln\n" +
	"-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA/Bm9uZQ==\n-----END OPENSSH PRIVATE KEY-----\n" +
	"iban DE89 3704 0044 0532 0130 00 call +1 415-555-0100 bye"

// TestStreamSplits cuts a text full of secrets at every offset, and
// into single bytes: the stream's output equals masking it whole.
func TestStreamSplits(t *testing.T) {
	t.Parallel()
	m := streamMasker(t)
	want := m.Scan([]byte(secretText))
	for _, secret := range []string{"bob@example.com", "4111 1111", "078-05-1120", "AKIAIOSFODNN7EXAMPLE", "eyJhbGci", "b3BlbnNz", "3704 0044", "555-0100"} {
		if bytes.Contains(want, []byte(secret)) {
			t.Fatalf("whole-text masking leaves %q: %s", secret, want)
		}
	}
	for i := 0; i <= len(secretText); i++ {
		var out bytes.Buffer
		s := NewStream(m, &out)
		s.Write([]byte(secretText[:i]))
		s.Write([]byte(secretText[i:]))
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(out.Bytes(), want) {
			t.Fatalf("split at %d:\n%s\nwant\n%s", i, out.Bytes(), want)
		}
	}
	for _, step := range []int{1, 2, 3, 7, 13} {
		var out bytes.Buffer
		s := NewStream(m, &out)
		for i := 0; i < len(secretText); i += step {
			s.Write([]byte(secretText[i:min(i+step, len(secretText))]))
		}
		s.Flush()
		if !bytes.Equal(out.Bytes(), want) {
			t.Fatalf("chunks of %d:\n%s\nwant\n%s", step, out.Bytes(), want)
		}
	}
}

// TestStreamHoldsOnlyTheTail: a finished line goes out at once; only the
// tail a value may grow from waits for more input or a Flush.
func TestStreamHoldsOnlyTheTail(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	s := NewStream(streamMasker(t), &out)
	s.Write([]byte("total 8\n$ "))
	if out.String() != "total 8\n$" || s.Held() != 1 {
		t.Errorf("wrote %q, held %d", out.String(), s.Held())
	}
	s.Write([]byte("mail bob@exam"))
	if strings.Contains(out.String(), "bob") {
		t.Errorf("a partial value went out: %q", out.String())
	}
	s.Write([]byte("ple.com\n"))
	if !strings.HasSuffix(out.String(), "[redacted]\n") || s.Held() != 0 {
		t.Errorf("wrote %q, held %d", out.String(), s.Held())
	}
	s.Write([]byte("-----BEGIN RSA PRIVATE KEY-----\nMIIE:/+=\n"))
	if strings.Contains(out.String(), "MIIE") || s.Held() == 0 {
		t.Errorf("an unfinished key went out: %q", out.String())
	}
	s.Flush()
	if s.Held() != 0 || !strings.Contains(out.String(), "MIIE") {
		t.Errorf("flush: %q, held %d", out.String(), s.Held())
	}
}

func TestStreamBounded(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	s := NewStream(streamMasker(t), &out)
	s.Write(bytes.Repeat([]byte("a"), 3*MaxRun))
	if s.Held() > MaxRun {
		t.Errorf("held %d of a long run", s.Held())
	}
	s.Write([]byte("-----BEGIN PRIVATE KEY-----\n"))
	s.Write(bytes.Repeat([]byte("x/\n"), MaxHold))
	if s.Held() > MaxHold+MaxRun {
		t.Errorf("held %d of an endless key", s.Held())
	}
}

func TestStreamPassThrough(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	s := NewStream(nil, &out)
	s.Write([]byte("bob@example.com"))
	if out.String() != "bob@example.com" || s.Held() != 0 {
		t.Errorf("%q held %d", out.String(), s.Held())
	}
}

func TestStreamWriteError(t *testing.T) {
	t.Parallel()
	s := NewStream(streamMasker(t), errWriter{})
	if _, err := s.Write([]byte("x\n")); err == nil {
		t.Error("no error")
	}
	if err := s.Flush(); err == nil {
		t.Error("error not kept")
	}
}

type errWriter struct{}

func (errWriter) Write([]byte) (int, error) { return 0, errors.New("closed") }

// FuzzStreamMask checks that any text, cut at a fuzzed size, masks as it
// would whole.
func FuzzStreamMask(f *testing.F) {
	f.Add([]byte(secretText), uint8(1))
	f.Add([]byte("bob@example.com"), uint8(4))
	f.Add([]byte("-----BEGIN EC PRIVATE KEY-----\nab\n-----END EC PRIVATE KEY-----"), uint8(9))
	m := streamMasker(f)
	f.Fuzz(func(t *testing.T, data []byte, chunk uint8) {
		if len(data) > MaxRun {
			return // past the hold-back bounds, equality is not promised
		}
		var out bytes.Buffer
		s := NewStream(m, &out)
		size := int(chunk)%32 + 1
		for i := 0; i < len(data); i += size {
			s.Write(data[i:min(i+size, len(data))])
		}
		s.Flush()
		if want := m.Scan(data); !bytes.Equal(out.Bytes(), want) {
			t.Fatalf("stream %q, whole %q", out.Bytes(), want)
		}
	})
}
