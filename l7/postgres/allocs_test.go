package postgres

import (
	"bytes"
	"io"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/loopgate/loopgate/policy/sqlclass"
)

// loopReader serves the same bytes forever.
type loopReader struct {
	b   []byte
	off int
}

func (l *loopReader) Read(p []byte) (int, error) {
	n := copy(p, l.b[l.off:])
	l.off = (l.off + n) % len(l.b)
	return n, nil
}

// The per-message path allocates a bounded, small amount: framing nothing,
// a repeated statement's classification a few small values.
func TestPerMessageAllocs(t *testing.T) {
	q, _ := (&pgproto3.Query{String: "SELECT abalance FROM pgbench_accounts WHERE aid = 4242;"}).Encode(nil)
	ar := newAgentReader(&loopReader{b: bytes.Repeat(q, 64)})
	ar.max = maxMessageBody
	if n := testing.AllocsPerRun(1000, func() {
		if _, _, err := ar.next(); err != nil && err != io.EOF {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("framing a message: %.1f allocations, want 0", n)
	}

	var c sqlclass.Classifier
	c.Classify("SELECT abalance FROM pgbench_accounts WHERE aid = 1;", nil)
	if n := testing.AllocsPerRun(1000, func() {
		c.Classify("SELECT abalance FROM pgbench_accounts WHERE aid = 4242;", nil)
	}); n > 4 {
		t.Errorf("classifying a cached statement: %.1f allocations, want at most 4", n)
	}

	cm := newCopyMask(copyOutOf(t, "COPY users (id, ssn) TO STDOUT"), testMasker(t), false)
	row := []byte("1\t\\N\n")
	if n := testing.AllocsPerRun(1000, func() {
		if _, err := cm.row(row); err != nil {
			t.Fatal(err)
		}
	}); n > 1 {
		t.Errorf("a COPY row with nothing to mask: %.1f allocations, want at most 1", n)
	}
}
