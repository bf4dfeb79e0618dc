package postgres

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestRuntimeParams: every startup parameter is forwarded (by its
// lower-case name) or refused with a reason; none is dropped.
func TestRuntimeParams(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		params map[string]string
		want   map[string]string
		refuse string // part of the refusal
	}{
		{"settings forwarded", map[string]string{"user": "a", "database": "d", "default_transaction_read_only": "on",
			"statement_timeout": "1234", "lock_timeout": "4321", "DOESNOTEXIST": "foo", "DateStyle": "ISO", "search_path": "s"},
			map[string]string{"default_transaction_read_only": "on", "statement_timeout": "1234", "lock_timeout": "4321",
				"doesnotexist": "foo", "datestyle": "ISO", "search_path": "s"}, ""},
		{"replication off", map[string]string{"replication": "false", "options": " "}, map[string]string{}, ""},
		{"replication", map[string]string{"replication": "database"}, nil, "replication connections"},
		{"options", map[string]string{"options": "-c role=postgres"}, nil, `"options" is not allowed`},
		{"role", map[string]string{"Role": "postgres"}, nil, `"Role" is not allowed (it would change the role`},
		{"session_authorization", map[string]string{"session_authorization": "postgres"}, nil, "change the role"},
		{"unsafe encoding", map[string]string{"client_encoding": "SJIS"}, nil, "client_encoding=SJIS is not supported"},
		{"non-standard strings", map[string]string{"Standard_Conforming_Strings": "off"}, nil, "Standard_Conforming_Strings=off is not supported"},
		{"two spellings", map[string]string{"DateStyle": "ISO", "datestyle": "SQL"}, nil, "given twice"},
		{"two spellings agree", map[string]string{"TimeZone": "UTC", "timezone": "UTC"}, map[string]string{"timezone": "UTC"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := runtimeParams(tt.params)
			var sr *startupRefused
			switch {
			case tt.refuse == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.refuse != "" && (!errors.As(err, &sr) || !strings.Contains(sr.msg, tt.refuse) || sr.code != codeFeatureNotSupported):
				t.Fatalf("got %v, %v; want a refusal saying %q", got, err, tt.refuse)
			case tt.refuse == "":
				if diff := cmp.Diff(tt.want, got); diff != "" {
					t.Errorf("settings (-want +got):\n%s", diff)
				}
			}
		})
	}
}

// TestStartupParamsReachServer: through Serve, what the agent asked for
// is what the server is asked for; a refusal reaches the agent as FATAL.
func TestStartupParamsReachServer(t *testing.T) {
	f := startFakePG(t)
	h := &Handler{}
	t.Cleanup(func() { h.Close() })
	fs, ferr := startFakeSession(t, h, f, "w", map[string]string{"user": "a", "database": "d",
		"Default_Transaction_Read_Only": "on", "statement_timeout": "1234", "lock_timeout": "4321"})
	if ferr != nil {
		t.Fatalf("login refused: %s", ferr.Message)
	}
	fs.end(t)
	f.mu.Lock()
	got := f.params[len(f.params)-1]
	f.mu.Unlock()
	for k, v := range map[string]string{"default_transaction_read_only": "on", "statement_timeout": "1234", "lock_timeout": "4321", "database": "d", "user": "app"} {
		if got[k] != v {
			t.Errorf("server got %s=%q, want %q (all: %v)", k, got[k], v, got)
		}
	}
	_, ferr = startFakeSession(t, h, f, "w", map[string]string{"user": "a", "role": "postgres"})
	if ferr == nil || ferr.Severity != "FATAL" || !strings.Contains(ferr.Message, "change the role") {
		t.Errorf("role=postgres: got %+v, want FATAL", ferr)
	}
}

// TestExpandOptions: the settings in "options" become parameters of their
// own, split as the server splits them; anything else refuses.
func TestExpandOptions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		options string
		want    map[string]string
		refuse  string
	}{
		{"-c statement_timeout=1234", map[string]string{"statement_timeout": "1234"}, ""},
		{"-cstatement_timeout=1234 --lock-timeout=2", map[string]string{"statement_timeout": "1234", "lock_timeout": "2"}, ""},
		{`-c search_path=a\ b  -c application_name=x\\y`, map[string]string{"search_path": "a b", "application_name": `x\y`}, ""},
		{"  ", map[string]string{}, ""},
		{"-c role=postgres", map[string]string{"role": "postgres"}, ""}, // refused later, as a parameter
		{"-c", nil, "-c without a setting"},
		{"-c statement_timeout", nil, "not a name=value setting"},
		{"-B 100", nil, `"-B" is not allowed`},
		{"-o x", nil, `"-o" is not allowed`},
		{"-c lock_timeout=1 -c a=1 -c a=3", map[string]string{"a": "3"}, ""}, // the parameter wins; the last -c wins
	}
	for _, tt := range tests {
		t.Run(tt.options, func(t *testing.T) {
			got, err := expandOptions(map[string]string{"user": "u", "options": tt.options, "lock_timeout": "2"})
			var sr *startupRefused
			switch {
			case tt.refuse == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tt.refuse != "":
				if !errors.As(err, &sr) || !strings.Contains(sr.msg, tt.refuse) {
					t.Fatalf("got %v, %v; want a refusal saying %q", got, err, tt.refuse)
				}
				return
			}
			want := map[string]string{"user": "u", "lock_timeout": "2"}
			for k, v := range tt.want {
				want[k] = v
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("parameters (-want +got):\n%s", diff)
			}
			// Expanded, they go through the same gate as any parameter.
			if _, err := runtimeParams(got); (err != nil) != (tt.want["role"] != "") {
				t.Errorf("runtimeParams: %v", err)
			}
		})
	}
}

// FuzzOptions: expanding any options string either refuses or yields
// settings with a name, never options again.
func FuzzOptions(f *testing.F) {
	for _, s := range []string{"-c a=b", `--x-y=z\ w`, "-c", "-cx=", `\`, "-B 1", "-c a=1 -c a=2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		out, err := expandOptions(map[string]string{"options": s})
		if err != nil {
			return
		}
		for k := range out {
			if k == "" || strings.EqualFold(k, "options") {
				t.Fatalf("expanded %q into %q", s, k)
			}
		}
	})
}
