package postgres

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/loopgate/loopgate/l7"
	"github.com/loopgate/loopgate/l7/l7test"
	"github.com/loopgate/loopgate/policy"
	"github.com/loopgate/loopgate/policy/sqlclass"
)

// The relay tests of this package play the server by hand; it has no
// catalog to ask, so lookups find nothing there (tests/ asks a real one).
func init() {
	procLookup = func(context.Context, *policy.Target, string, map[string]string, []sqlclass.Name, []sqlclass.Name, []sqlclass.Name) (f, o, r map[sqlclass.Name][]sqlclass.Proc, err error) {
		return nil, nil, nil, nil
	}
}

const readOnlyPolicy = `targets:
  - {name: db, protocol: postgres, address: 127.0.0.1:5432}
workloads:
  - {name: w, cgroup: lg/w}
  - {name: rw, cgroup: lg/rw}
  - {name: appr, cgroup: lg/appr}
  - {name: all, cgroup: lg/all}
rules:
  - {id: all, workloads: [all], targets: [db], allow: ["*"]}
  - {id: ro, workloads: [w], targets: [db], allow: [read, session, transaction]}
  - {id: rw, workloads: [rw], targets: [db], allow: [read, write, session, transaction]}
  - {id: appr, workloads: [appr], targets: [db], allow: [read], approve: [ddl], approvers: [a]}
approvers:
  - {name: a, uid: 0}
`

func TestForceReadOnly(t *testing.T) {
	t.Parallel()
	p := map[string]string{"Default_Transaction_Read_Only": "off", "TRANSACTION_READ_ONLY": "off", "application_name": "x"}
	forceReadOnly(p)
	if len(p) != 2 || p[readOnlyParam] != "on" || p["application_name"] != "x" {
		t.Errorf("forceReadOnly left %v", p)
	}
}

func TestReadOnlyRule(t *testing.T) {
	t.Parallel()
	cfg := l7test.Config(t, readOnlyPolicy)
	srv := l7test.Server(t, cfg, l7test.NewRecorder())
	for _, tt := range []struct {
		workload string
		want     bool
	}{{"w", true}, {"rw", false}, {"appr", false}} {
		s := l7test.Session(t, srv, tt.workload, "db", "127.0.0.1:5432")
		if got := readOnlyRule(cfg, s.Subject); got != tt.want {
			t.Errorf("%s: readOnlyRule = %v, want %v", tt.workload, got, tt.want)
		}
	}
}

// TestVetFailsClosed: a catalog that cannot be asked makes a statement
// that names a function unknown, and a read-only session denies what
// would make it read-write whatever the rule says.
func TestVetFailsClosed(t *testing.T) {
	srv := l7test.Server(t, l7test.Config(t, readOnlyPolicy), l7test.NewRecorder())
	s := l7test.Session(t, srv, "w", "db", "127.0.0.1:5432")
	r := newRelay(context.Background(), &Handler{}, s, pgproto3.NewBackend(nil, sinkConn{}), nil, &l7.CountingConn{Conn: sinkConn{}}, &l7.CountingConn{Conn: sinkConn{}})
	r.ro = readOnlyState{on: true, rule: "ro", cfg: s.Policy()}
	saved := procLookup
	defer func() { procLookup = saved }()
	procLookup = func(context.Context, *policy.Target, string, map[string]string, []sqlclass.Name, []sqlclass.Name, []sqlclass.Name) (f, o, r map[sqlclass.Name][]sqlclass.Proc, err error) {
		return nil, nil, nil, errors.New("no catalog")
	}
	var c sqlclass.Classifier
	d := r.decide(r.vet(c.Classify("SELECT f()", nil)))
	if d.Action != policy.Deny || !strings.Contains(d.Reason, "could not be asked") {
		t.Errorf("failed lookup: %v %q", d.Action, d.Reason)
	}
	// A rule that allows whatever the catalog could add does not ask.
	all := newRelay(context.Background(), &Handler{}, l7test.Session(t, srv, "all", "db", "127.0.0.1:5432"), pgproto3.NewBackend(nil, sinkConn{}), nil,
		&l7.CountingConn{Conn: sinkConn{}}, &l7.CountingConn{Conn: sinkConn{}})
	if d := all.decide(all.vet(c.Classify("SELECT f()", nil))); d.Action != policy.Allow {
		t.Errorf("allow *: %v %q", d.Action, d.Reason)
	}
	procLookup = func(_ context.Context, _ *policy.Target, _ string, _ map[string]string, funcs, _, _ []sqlclass.Name) (f, o, r map[sqlclass.Name][]sqlclass.Proc, err error) {
		f = map[sqlclass.Name][]sqlclass.Proc{}
		for _, n := range funcs {
			f[n] = []sqlclass.Proc{{Schema: "public", Name: n.Name, Volatile: 'v', Language: "plpgsql"}}
		}
		return f, nil, nil, nil
	}
	r.h.catalog = catalog{} // nothing cached
	d = r.decide(r.vet(c.Classify("SELECT g()", nil)))
	if d.Action != policy.Deny || !strings.Contains(d.Reason, "classified procedural: function public.g is VOLATILE plpgsql") {
		t.Errorf("volatile function: %v %q", d.Action, d.Reason)
	}
	d = r.decide(r.vet(c.Classify("BEGIN READ WRITE", nil)))
	if d.Action != policy.Deny || !strings.Contains(d.Reason, "read-only") {
		t.Errorf("BEGIN READ WRITE: %v %q", d.Action, d.Reason)
	}
	if d = r.decide(r.vet(c.Classify("SELECT 1", nil))); d.Action != policy.Allow {
		t.Errorf("SELECT 1: %v %q", d.Action, d.Reason)
	}
}

// TestVetReloadToReadOnly: a session opened writable whose rule a reload
// made read-only is denied everything from then on.
func TestVetReloadToReadOnly(t *testing.T) {
	t.Parallel()
	srv := l7test.Server(t, l7test.Config(t, readOnlyPolicy), l7test.NewRecorder())
	s := l7test.Session(t, srv, "w", "db", "127.0.0.1:5432")
	r := newRelay(context.Background(), &Handler{}, s, pgproto3.NewBackend(nil, sinkConn{}), nil, &l7.CountingConn{Conn: sinkConn{}}, &l7.CountingConn{Conn: sinkConn{}})
	// Opened writable under an earlier config (nil stands for it).
	r.ro = readOnlyState{on: false, rule: "ro"}
	var c sqlclass.Classifier
	d := r.decide(r.vet(c.Classify("SELECT 1", nil)))
	if d.Action != policy.Deny || !strings.Contains(d.Reason, "reconnect") {
		t.Errorf("after the reload: %v %q", d.Action, d.Reason)
	}
	// A statement parsed before the reload, executed after it.
	r = newRelay(context.Background(), &Handler{}, s, pgproto3.NewBackend(nil, sinkConn{}), nil, &l7.CountingConn{Conn: sinkConn{}}, &l7.CountingConn{Conn: sinkConn{}})
	if d := r.decide(vetted{classes: []string{sqlclass.Read}}); d.Action != policy.Deny || !strings.Contains(d.Reason, "reconnect") {
		t.Errorf("Execute after the reload: %v %q", d.Action, d.Reason)
	}
}
