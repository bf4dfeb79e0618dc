package http

import (
	"bytes"
	"strings"
	"testing"

	"github.com/loopgate/loopgate/l7/l7test"
	"github.com/loopgate/loopgate/policy/mask"
)

func sseMasker(t testing.TB) *mask.Masker {
	cfg := l7test.Config(t, "masks:\n  - {name: p, paths: ['$.email']}\n  - {name: d, detect: email}\n")
	m, err := mask.New(cfg, []string{"p", "d"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestMaskSSE(t *testing.T) {
	t.Parallel()
	in := "event: x\ndata: {\"email\": \"a@b.co\", \"n\": 1}\n\ndata: text ada@example.com\r\n\n: comment ada@example.com\ndata:\n\n"
	var out bytes.Buffer
	if err := maskSSE(&out, strings.NewReader(in), sseMasker(t)); err != nil {
		t.Fatal(err)
	}
	want := "event: x\ndata: {\"email\":\"[redacted]\",\"n\":1}\n\ndata: text [redacted]\r\n\n: comment ada@example.com\ndata:\n\n"
	if out.String() != want {
		t.Errorf("got  %q\nwant %q", out.String(), want)
	}
}

// FuzzSSE: the event-stream masker never panics, and every data line of
// its output is masked (no address the detector finds survives in one).
func FuzzSSE(f *testing.F) {
	for _, s := range []string{"data: {\"email\":\"a@b.co\"}\n\n", "data: x@y.io\r\n", "data:", "\n\n\n", "data: {\"a\":[\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		m := sseMasker(t)
		var out bytes.Buffer
		if err := maskSSE(&out, bytes.NewReader(in), m); err != nil {
			return
		}
		for line := range strings.SplitSeq(out.String(), "\n") {
			if strings.HasPrefix(line, "data:") && m.String(line) != line {
				t.Fatalf("unmasked data line %q", line)
			}
		}
	})
}
