package shellclass

import (
	"slices"
	"testing"
)

// FuzzShellClassify checks Classify's invariants on any input: it never
// panics, every line gets classes in Order, each class has its reason, an
// error always means Unknown, and the result does not depend on the run.
func FuzzShellClassify(f *testing.F) {
	for _, s := range []string{"rm -rf /", "'r''m' -rf /", "$(echo rm) -rf /", "a=rm; $a -rf /",
		`bash -c "$x"`, "echo x | sh", "sh <<EOF\nrm x\nEOF", `find / -exec rm {} \;`, "xargs rm",
		"ls; rm x", "ls && sudo reboot", "cat f > /etc/passwd", "echo k >> ~/.ssh/authorized_keys",
		"sudo -u root ls", "env FOO=1 ls", "timeout 5 cat x", "systemctl restart nginx",
		`awk 'BEGIN{system("rm x")}'`, `sed -n 's/a/b/w x' f`, "scp -t /tmp", `sh -c "sh -c 'ls'"`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, cmd string) {
		r := Classify(cmd)
		if len(r.Classes) == 0 {
			t.Fatalf("no classes for %q", cmd)
		}
		last := -1
		for _, cl := range r.Classes {
			k := slices.Index(Order, cl)
			if k <= last {
				t.Fatalf("classes %v not in order", r.Classes)
			}
			last = k
		}
		if r.Err != nil && !r.Has(Unknown) {
			t.Fatalf("error %v without unknown", r.Err)
		}
		if len(r.Commands) > MaxCommands {
			t.Fatalf("%d commands", len(r.Commands))
		}
		for i, cm := range r.Commands {
			if len(cm.Classes) != len(cm.Reasons) {
				t.Fatalf("command %d: %d classes, %d reasons", i, len(cm.Classes), len(cm.Reasons))
			}
			if cm.Parent >= i {
				t.Fatalf("command %d has parent %d", i, cm.Parent)
			}
			for _, cl := range cm.Classes {
				if !r.Has(cl) {
					t.Fatalf("command class %s missing from line %v", cl, r.Classes)
				}
			}
		}
		again := Classify(cmd)
		if !slices.Equal(again.Classes, r.Classes) || len(again.Commands) != len(r.Commands) {
			t.Fatalf("not deterministic: %v then %v", r.Classes, again.Classes)
		}
		_ = r.Explain()
	})
}
