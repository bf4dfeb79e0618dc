package mask

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
)

func TestJSONPaths(t *testing.T) {
	t.Parallel()
	m := masker(t, "  - {name: p, paths: ['$.items[*].email', '$..token', '$.meta.tags[1]']}\n  - {name: e, detect: email}\n", "p", "e")
	tests := []struct {
		name, in, want string
	}{
		{"array item key", `{"items":[{"email":"a@b.co","n":1},{"email":7}]}`, `{"items":[{"email":"[redacted]","n":1},{"email":"[redacted]"}]}`},
		{"deep key, container masked whole", `{"a":{"b":{"token":{"x":"s","y":[1,true,null]}}}}`, `{"a":{"b":{"token":{"x":"[redacted]","y":["[redacted]","[redacted]",null]}}}}`},
		{"index", `{"meta":{"tags":["x","y","z"]}}`, `{"meta":{"tags":["x","[redacted]","z"]}}`},
		{"detector elsewhere, keys too", `{"note":"mail ada@example.com","ada@example.com":1}`, `{"note":"mail [redacted]","[redacted]":1}`},
		{"not at the path", `{"email":"x","items":{"email":"y"}}`, `{"email":"x","items":{"email":"y"}}`},
		{"escapes kept", `["q\"\\\n\u0001é"]`, `["q\"\\\n\u0001é"]`},
		{"ndjson", "{\"token\":1}\n{\"token\":2}", "{\"token\":\"[redacted]\"}\n{\"token\":\"[redacted]\"}"},
		{"scalar root", `"ada@example.com"`, `"[redacted]"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := m.JSONBytes([]byte(tc.in))
			if err != nil || string(got) != tc.want {
				t.Errorf("JSON(%s) = %s, %v; want %s", tc.in, got, err, tc.want)
			}
		})
	}
	for _, bad := range []string{`{"a":`, `[1,2`, `{"a" 1}`, `]`} {
		if _, err := m.JSONBytes([]byte(bad)); err == nil {
			t.Errorf("JSON(%s): no error", bad)
		}
	}
}

// TestJSONStreamsLargeArray masks a 10 MB array with a small token cap
// (memory bounded by one token, not the document), and fails closed on a
// token above the cap.
func TestJSONStreamsLargeArray(t *testing.T) {
	t.Parallel()
	m := masker(t, "  - {name: p, paths: ['$.items[*].email']}\n", "p")
	pr, pw := io.Pipe()
	go func() {
		pw.Write([]byte(`{"items":[`))
		for i := 0; i < 100000; i++ {
			if i > 0 {
				pw.Write([]byte{','})
			}
			fmt.Fprintf(pw, `{"id":%d,"email":"user%d@example.com","pad":"%s"}`, i, i, strings.Repeat("x", 40))
		}
		pw.Write([]byte(`]}`))
		pw.Close()
	}()
	var out bytes.Buffer
	if err := m.JSON(&out, pr, 4096); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(out.Bytes(), []byte("@example.com")) {
		t.Fatal("an email passed unmasked")
	}
	var doc struct{ Items []map[string]any }
	if err := json.Unmarshal(out.Bytes(), &doc); err != nil || len(doc.Items) != 100000 {
		t.Fatalf("output: %v, %d items", err, len(doc.Items))
	}
	big := `["` + strings.Repeat("a", 100000) + `"]`
	if err := m.JSON(io.Discard, strings.NewReader(big), 4096); !errors.Is(err, ErrJSONTooLarge) {
		t.Errorf("token over the cap: %v", err)
	}
}

// FuzzJSON: the masker never panics; on valid JSON it returns valid JSON
// with no configured path's value in clear.
func FuzzJSON(f *testing.F) {
	for _, s := range []string{`{"items":[{"email":"a@b.co"}]}`, `[1,"x",null,true,{"token":{"a":[]}}]`, "{\"a\":1}\n{\"b\":2}", `"\ud800"`, `{"a":`, ``} {
		f.Add([]byte(s))
	}
	cfgMasks := "  - {name: p, paths: ['$.items[*].email', '$..token']}\n  - {name: e, detect: email}\n"
	f.Fuzz(func(t *testing.T, in []byte) {
		m := masker(t, cfgMasks, "p", "e")
		out, err := m.JSONBytes(in)
		if err != nil {
			return
		}
		dec := json.NewDecoder(bytes.NewReader(out))
		dec.UseNumber()
		for {
			var v any
			if err := dec.Decode(&v); err == io.EOF {
				break
			} else if err != nil {
				t.Fatalf("masked output is not JSON: %v\nin:  %q\nout: %q", err, in, out)
			}
		}
	})
}
