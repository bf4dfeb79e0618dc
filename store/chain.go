package store

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"strconv"

	"github.com/loopgate/loopgate/store/event"
)

// The event log is a hash chain: each event's hash is SHA-256 over the
// previous event's hash and the event's canonical form. The canonical form
// is the JSON encoding of canonicalEvent: fixed field order, times as the
// exact strings stored. The sequence number is not hashed, so moving a row
// (reordering) is told apart from editing one.

// genesis is the "previous hash" of the first event.
var genesis = make([]byte, sha256.Size)

type canonicalEvent struct {
	Session    string `json:"session"`
	Time       string `json:"time"`
	Kind       string `json:"kind"`
	Text       string `json:"text"`
	Params     string `json:"params"`
	Decision   string `json:"decision"`
	Rule       string `json:"rule"`
	Approval   string `json:"approval"`
	Tag        string `json:"tag,omitempty"` // added in schema 3; omitted when empty so older hashes hold
	DurationNS int64  `json:"duration_ns"`
	Rows       int64  `json:"rows"`
	Bytes      int64  `json:"bytes"`
	Error      string `json:"error"`
}

func canonical(e event.Event) canonicalEvent {
	return canonicalEvent{
		Session: e.SessionID, Time: fmtTime(e.Time), Kind: string(e.Kind), Text: e.Text,
		Params: e.Params, Decision: e.Decision, Rule: e.RuleID, Approval: e.ApprovalID, Tag: e.Tag,
		DurationNS: int64(e.Duration), Rows: e.Rows, Bytes: e.Bytes, Error: e.Error,
	}
}

func chainHash(prev []byte, c canonicalEvent) []byte {
	var buf [512]byte
	h := sha256.New()
	h.Write(prev)
	h.Write(c.appendJSON(buf[:0]))
	return h.Sum(nil)
}

// appendJSON appends exactly what json.Marshal(c) gives, without its
// reflection (this runs for every event written).
func (c *canonicalEvent) appendJSON(b []byte) []byte {
	field := func(b []byte, name, v string) []byte {
		b = append(b, name...)
		return appendJSONString(b, v)
	}
	b = field(b, `{"session":`, c.Session)
	b = field(b, `,"time":`, c.Time)
	b = field(b, `,"kind":`, c.Kind)
	b = field(b, `,"text":`, c.Text)
	b = field(b, `,"params":`, c.Params)
	b = field(b, `,"decision":`, c.Decision)
	b = field(b, `,"rule":`, c.Rule)
	b = field(b, `,"approval":`, c.Approval)
	if c.Tag != "" {
		b = field(b, `,"tag":`, c.Tag)
	}
	b = strconv.AppendInt(append(b, `,"duration_ns":`...), c.DurationNS, 10)
	b = strconv.AppendInt(append(b, `,"rows":`...), c.Rows, 10)
	b = strconv.AppendInt(append(b, `,"bytes":`...), c.Bytes, 10)
	b = field(b, `,"error":`, c.Error)
	return append(b, '}')
}

// appendJSONString appends s as encoding/json quotes it: printable ASCII
// that needs no escape is copied; anything else (escapes, HTML-safe
// escapes, UTF-8 checks) is left to encoding/json itself.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x80 || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, err := json.Marshal(s)
			if err != nil {
				panic(err) // a string always encodes
			}
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// chainState is the head of the chain.
type chainState struct {
	seq             int64
	hash            []byte
	hashHex         string // hash in hex, as stored ("" until computed)
	sinceCheckpoint int
	// touched lists the events appended since the commit began; copying
	// the state (a savepoint) and restoring it drops the later ones.
	touched []touch
}

// hex returns the head hash as stored.
func (c *chainState) hex() string {
	if c.hashHex == "" {
		c.hashHex = hexs(c.hash)
	}
	return c.hashHex
}

func hexs(b []byte) string { return hex.EncodeToString(b) }
