package ssh

import (
	"encoding/json"
	"strings"
)

// Command classes of ssh targets (policy.Classes["ssh"]).
const (
	ClassRead      = "read"
	ClassWrite     = "write"
	ClassPrivilege = "privilege"
	ClassShell     = "shell"
	ClassFileRead  = "file-read"
	ClassFileWrite = "file-write"
	ClassForward   = "forward"
	ClassUnknown   = "unknown"
)

// parsed is what policy sees of an exec command.
type parsed struct {
	Argv    [][]string `json:"argv"`
	Classes []string   `json:"classes"`
}

// JSON is the parse as recorded (and bound to an approval).
func (p parsed) JSON() string {
	b, _ := json.Marshal(p)
	return string(b)
}

// classify parses an exec command. Placeholder until policy/shellclass
// lands: it is strict (anything it does not fully understand is unknown).
func classify(cmd string) parsed {
	if strings.ContainsAny(cmd, "$`;&|<>(){}\\'\"*?[]~\n#=") {
		return parsed{Classes: []string{ClassUnknown}}
	}
	argv := strings.Fields(cmd)
	if len(argv) == 0 {
		return parsed{Classes: []string{ClassUnknown}}
	}
	p := parsed{Argv: [][]string{argv}}
	switch argv[0] {
	case "ls", "cat", "id", "whoami", "uname", "df", "ps", "grep", "head", "tail", "echo", "true", "hostname", "pwd", "date", "wc":
		p.Classes = []string{ClassRead}
	case "sudo", "su", "doas", "pkexec":
		p.Classes = []string{ClassPrivilege}
	case "scp":
		p.Classes = []string{ClassWrite}
		for _, a := range argv[1:] {
			switch a {
			case "-f":
				p.Classes = []string{ClassFileRead}
			case "-t":
				p.Classes = []string{ClassFileWrite}
			}
		}
	case "sh", "bash", "dash", "zsh", "eval", "xargs", "python", "python3", "perl":
		p.Classes = []string{ClassUnknown}
	default:
		p.Classes = []string{ClassWrite}
	}
	return p
}
