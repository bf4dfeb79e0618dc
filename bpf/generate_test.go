package bpf

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestGeneratedUpToDate rebuilds redirect.c with the same bpf2go command as
// the go:generate line and checks the committed object and bindings match.
// It needs clang; without it, it skips (locally) or fails (CI=true), since
// `make test` installs clang.
func TestGeneratedUpToDate(t *testing.T) {
	if _, err := exec.LookPath("clang"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("clang not found under CI=true")
		}
		t.Skip("clang not installed")
	}
	src, err := os.ReadFile("doc.go")
	if err != nil {
		t.Fatal(err)
	}
	var lines [][]string
	for _, line := range strings.Split(string(src), "\n") {
		if rest, ok := strings.CutPrefix(line, "//go:generate go tool bpf2go "); ok {
			lines = append(lines, splitArgs(rest))
		}
	}
	if len(lines) == 0 {
		t.Fatal("no go:generate line in doc.go")
	}
	for _, args := range lines {
		// The identifier (Redirect, Unix) names the outputs: redirect_bpfel.*.
		stem := strings.ToLower(args[len(args)-2])
		t.Run(stem, func(t *testing.T) {
			dir := t.TempDir()
			cmd := exec.Command("go", append([]string{"tool", "bpf2go", "-go-package", "bpf", "-output-dir", dir}, args...)...)
			cmd.Env = append(os.Environ(), "GOPACKAGE=bpf")
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("bpf2go: %v\n%s", err, out)
			}
			for _, f := range []string{stem + "_bpfel.o", stem + "_bpfel.go"} {
				want, err := os.ReadFile(filepath.Join(dir, f))
				if err != nil {
					t.Fatal(err)
				}
				got, err := os.ReadFile(f)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, want) {
					t.Errorf("%s is stale: run `make generate` and commit the result", f)
				}
			}
		})
	}
}

// splitArgs splits a go:generate argument string, honouring double quotes.
func splitArgs(s string) []string {
	var out []string
	var cur strings.Builder
	inQuote, started := false, false
	for _, r := range s {
		switch {
		case r == '"':
			inQuote = !inQuote
			started = true
		case r == ' ' && !inQuote:
			if started {
				out = append(out, cur.String())
				cur.Reset()
				started = false
			}
		default:
			cur.WriteRune(r)
			started = true
		}
	}
	if started {
		out = append(out, cur.String())
	}
	return out
}
