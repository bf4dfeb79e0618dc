package store

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"

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
	b, err := json.Marshal(c)
	if err != nil {
		panic(err) // strings and ints only: cannot fail
	}
	h := sha256.New()
	h.Write(prev)
	h.Write(b)
	return h.Sum(nil)
}

// chainState is the head of the chain.
type chainState struct {
	seq             int64
	hash            []byte
	sinceCheckpoint int
}

func hexs(b []byte) string { return hex.EncodeToString(b) }
