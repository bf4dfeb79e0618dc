package ssh

import (
	"encoding/json"

	"github.com/loopgate/loopgate/policy/shellclass"
)

// Command classes of ssh targets (policy.Classes["ssh"]).
const (
	ClassRead      = shellclass.Read
	ClassWrite     = shellclass.Write
	ClassPrivilege = shellclass.Privilege
	ClassShell     = shellclass.Shell
	ClassFileRead  = shellclass.FileRead
	ClassFileWrite = shellclass.FileWrite
	ClassForward   = shellclass.Forward
	ClassUnknown   = shellclass.Unknown
)

// parsedCommand is one simple command of an exec as recorded.
type parsedCommand struct {
	Argv     []string `json:"argv"`
	Exec     []string `json:"exec,omitempty"`
	Wrappers []string `json:"wrappers,omitempty"`
	Redirs   []string `json:"redirs,omitempty"`
	Classes  []string `json:"classes,omitempty"`
}

// parsed is what policy sees of an exec command.
type parsed struct {
	Commands []parsedCommand `json:"commands"`
	Classes  []string        `json:"classes"`
	Error    string          `json:"error,omitempty"`

	res shellclass.Result
}

// JSON is the parse as recorded (and bound to an approval).
func (p parsed) JSON() string {
	b, _ := json.Marshal(p)
	return string(b)
}

// classify parses an exec command with a real shell parser: the strictest
// class of every simple command in it, unknown where it cannot see.
func classify(cmd string) parsed {
	r := shellclass.Classify(cmd)
	p := parsed{Classes: r.Classes, res: r}
	if r.Err != nil {
		p.Error = r.Err.Error()
	}
	for _, c := range r.Commands {
		if c.Script {
			continue
		}
		pc := parsedCommand{Argv: c.Argv, Wrappers: c.Wrappers, Redirs: c.Redirs, Classes: c.Classes}
		if len(c.Wrappers) > 0 {
			pc.Exec = c.Exec
		}
		p.Commands = append(p.Commands, pc)
	}
	return p
}
