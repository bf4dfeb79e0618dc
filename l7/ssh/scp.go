package ssh

import (
	"encoding/json"
	"path"
	"slices"

	"github.com/loopgate/loopgate/l7"
	"github.com/loopgate/loopgate/l7/ssh/sftpwire"
	"github.com/loopgate/loopgate/store/event"
)

// scpWatch follows one direction of a legacy scp exec (scp -t or -f on
// the target) for the record: the source's stream names each file, the
// sink's answers carry its errors. It only observes: Write never fails,
// and a stream it cannot follow stops being followed.
type scpWatch struct {
	s    *l7.Session
	root string // the scp -t directory or the scp -f path
	up   bool   // an upload (scp -t)
	src  *sftpwire.SCPSource
	acks *sftpwire.SCPAcks
	done bool
}

// scpDirection returns the root path of a legacy scp exec and whether it
// is an upload (scp -t), or ok false if the command is not one.
func scpDirection(p parsed) (root string, upload, ok bool) {
	if len(p.Commands) != 1 {
		return "", false, false
	}
	argv := p.Commands[0].Argv
	if p.Commands[0].Exec != nil {
		argv = p.Commands[0].Exec
	}
	if len(argv) < 2 || path.Base(argv[0]) != "scp" {
		return "", false, false
	}
	up, down := slices.Contains(argv, "-t"), slices.Contains(argv, "-f")
	if up == down {
		return "", false, false
	}
	return argv[len(argv)-1], up, true
}

func (w *scpWatch) Write(p []byte) (int, error) {
	if w.done {
		return len(p), nil
	}
	if w.src != nil {
		evs, err := w.src.Feed(p)
		for _, e := range evs {
			w.record(e.Kind, e.Path, e.Size, e.Message)
		}
		if err != nil {
			w.fail(err)
		}
	} else {
		msgs, err := w.acks.Feed(p)
		for _, m := range msgs {
			w.record("error", "", 0, m)
		}
		if err != nil {
			w.fail(err)
		}
	}
	return len(p), nil
}

func (w *scpWatch) fail(err error) {
	w.done = true
	w.s.RecordAsync(event.Event{Kind: event.KindNote, Text: "scp stream not followed", Error: err.Error()})
}

func (w *scpWatch) record(kind, rel string, size int64, msg string) {
	if kind == "dir" {
		return
	}
	op := "scp download"
	if w.up {
		op = "scp upload"
	}
	// A download names the file it reads; an upload lands in the scp -t
	// path, or in it as a directory: which, only the target knows, so
	// the record keeps both.
	text, p := op+" "+w.root, w.root
	if rel != "" {
		if w.up {
			text += " (" + rel + ")"
		} else {
			p = path.Join(path.Dir(w.root), rel)
			text = op + " " + p
		}
	}
	js, _ := json.Marshal(struct {
		Op   string `json:"op"`
		Path string `json:"path"`
		Name string `json:"name,omitempty"`
		Size int64  `json:"size,omitempty"`
	}{op, p, rel, size})
	ev := event.Event{Kind: event.KindResult, Text: text, Params: string(js), Bytes: size}
	if kind == "error" {
		ev.Error = msg
	}
	w.s.RecordAsync(ev)
}

// scpWatches returns the observers of a legacy scp exec's stdin and
// stdout (nil, nil for any other command).
func scpWatches(s *l7.Session, p parsed) (stdin, stdout *scpWatch) {
	root, up, ok := scpDirection(p)
	if !ok {
		return nil, nil
	}
	source := &scpWatch{s: s, root: root, up: up, src: &sftpwire.SCPSource{}}
	sink := &scpWatch{s: s, root: root, up: up, acks: &sftpwire.SCPAcks{}}
	if up {
		return source, sink
	}
	return sink, source
}
