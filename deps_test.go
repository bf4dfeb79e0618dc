package loopgate_test

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/loopgate/loopgate"

// TestImportRules enforces the import direction of ARCHITECTURE.md: for each
// package, the loopgate packages it may depend on (directly or not).
func TestImportRules(t *testing.T) {
	t.Parallel()
	allowed := map[string][]string{
		"bpf":               {},
		"policy":            {},
		"policy/sqlclass":   {},
		"policy/shellclass": {"policy"},
		"l7/ssh/sftpwire":   {},
		"l7/ssh/cast":       {},
		"policy/mask":       {"policy"},
		"policy/sqlpolicy":  {"policy", "policy/mask", "policy/sqlclass"},
		"store/event":       {},
		"store":             {"store/event"},
		"intercept":         {"bpf"},
		"l7":                {"policy", "store/event"},
		"l7/tcp":            {"l7", "policy", "store/event"},
		"l7/l7test":         {"l7", "policy", "store/event"},
		"l7/postgres":       {"l7", "policy", "policy/mask", "policy/sqlclass", "policy/sqlpolicy", "store/event"},
		"l7/ssh": {"l7", "policy", "policy/mask", "policy/shellclass", "store/event",
			"l7/ssh/sftpwire", "l7/ssh/cast"},
		"l7/http": {"l7", "policy", "policy/mask", "store/event"},
		"api":     {"policy", "store", "store/event"},
		// cmd wires everything together; it is listed so a new package
		// must be placed on purpose.
		"cmd/loopgate": {"bpf", "intercept", "policy", "policy/mask", "policy/sqlclass", "policy/sqlpolicy", "store", "store/event",
			"l7", "l7/tcp", "l7/postgres", "l7/ssh", "l7/ssh/cast", "l7/ssh/sftpwire", "policy/shellclass", "l7/http", "api", "doctor"},
		"doctor":       {"bpf", "intercept", "policy"},
		"tests/lgtest": {},
	}
	// No cgo SQLite in protocol packages.
	forbiddenExternal := map[string][]string{
		"l7":          {"github.com/mattn/go-sqlite3"},
		"l7/tcp":      {"github.com/mattn/go-sqlite3"},
		"l7/postgres": {"github.com/mattn/go-sqlite3", "github.com/cilium/ebpf"},
		"l7/ssh":      {"github.com/mattn/go-sqlite3", "github.com/cilium/ebpf"},
		"l7/http":     {"github.com/mattn/go-sqlite3", "github.com/cilium/ebpf"},
		"store/event": {"github.com/mattn/go-sqlite3"},
		"policy":      {"github.com/mattn/go-sqlite3", "github.com/cilium/ebpf"},
	}
	for pkg, ok := range allowed {
		t.Run(pkg, func(t *testing.T) {
			t.Parallel()
			out, err := exec.Command("go", "list", "-deps", "./"+pkg).Output()
			if err != nil {
				t.Fatalf("go list %s: %v", pkg, err)
			}
			for _, dep := range strings.Fields(string(out)) {
				for _, bad := range forbiddenExternal[pkg] {
					if dep == bad {
						t.Errorf("%s depends on %s", pkg, bad)
					}
				}
				rel, ours := strings.CutPrefix(dep, module+"/")
				if !ours || rel == pkg {
					continue
				}
				permitted := false
				for _, a := range ok {
					if rel == a {
						permitted = true
					}
				}
				if !permitted {
					t.Errorf("%s must not depend on %s", pkg, rel)
				}
			}
		})
	}
}

// TestPackageDocs checks every package has a doc comment.
func TestPackageDocs(t *testing.T) {
	t.Parallel()
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}}\t{{.Doc}}", "./...").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		path, doc, _ := strings.Cut(line, "\t")
		if strings.TrimSpace(doc) == "" {
			t.Errorf("package %s has no doc comment", path)
		}
	}
}
