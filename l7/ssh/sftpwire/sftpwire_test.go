package sftpwire

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"testing"
)

// frames splits a stream into packets, fed in chunks of the given sizes
// (cycled).
func frames(t testing.TB, stream []byte, sizes ...int) [][]byte {
	t.Helper()
	d := NewDecoder(0)
	var out [][]byte
	for i, k := 0, 0; i < len(stream); k++ {
		n := min(sizes[k%len(sizes)], len(stream)-i)
		d.Feed(stream[i : i+n])
		i += n
		for {
			f, err := d.Next()
			if err != nil {
				t.Fatal(err)
			}
			if f == nil {
				break
			}
			out = append(out, bytes.Clone(f))
		}
	}
	if d.Buffered() != 0 {
		t.Fatalf("%d bytes left over", d.Buffered())
	}
	return out
}

func capture(t testing.TB) (c2s, s2c []byte) {
	t.Helper()
	c2s, err := os.ReadFile("testdata/openssh-c2s.bin")
	if err != nil {
		t.Fatal(err)
	}
	s2c, err = os.ReadFile("testdata/openssh-s2c.bin")
	if err != nil {
		t.Fatal(err)
	}
	return c2s, s2c
}

// TestDecoderSplits reassembles a real OpenSSH session's packets from
// chunks of every size from 1 byte up, and from random sizes.
func TestDecoderSplits(t *testing.T) {
	t.Parallel()
	c2s, s2c := capture(t)
	for _, stream := range [][]byte{c2s, s2c} {
		want := frames(t, stream, len(stream))
		for size := 1; size <= 70; size++ {
			if got := frames(t, stream, size); !slices.EqualFunc(got, want, bytes.Equal) {
				t.Fatalf("chunks of %d: %d frames, want %d", size, len(got), len(want))
			}
		}
		rng := rand.New(rand.NewPCG(1, 2))
		sizes := make([]int, 50)
		for i := range sizes {
			sizes[i] = 1 + rng.IntN(9000)
		}
		if got := frames(t, stream, sizes...); !slices.EqualFunc(got, want, bytes.Equal) {
			t.Fatalf("random chunks: %d frames, want %d", len(got), len(want))
		}
		if !bytes.Equal(bytes.Join(want, nil), stream) {
			t.Fatal("frames do not add up to the stream")
		}
	}
}

// TestSession replays a real sftp batch (put, get, rename, mkdir, rmdir,
// chmod, symlink, hardlink, df, rm, get of a missing file) through
// ParseRequest, ParseReply and a Tracker, and checks the records.
func TestSession(t *testing.T) {
	t.Parallel()
	c2s, s2c := capture(t)
	var reqs []Request
	for _, f := range frames(t, c2s, 7) {
		q, err := ParseRequest(f)
		if err != nil {
			t.Fatal(err)
		}
		reqs = append(reqs, q)
	}
	tr := NewTracker()
	var recs []Record
	next := 0
	for _, f := range frames(t, s2c, 4096) {
		p, err := ParseReply(f)
		if err != nil {
			t.Fatal(err)
		}
		// A client reuses a request id once it has its reply, so the
		// reply answers the earliest unanswered request with its id:
		// send requests until that one is out.
		for _, waiting := tr.pending[p.ID]; !waiting && next < len(reqs) && p.Type != TypeVersion; _, waiting = tr.pending[p.ID] {
			if err := tr.Request(reqs[next]); err != nil {
				t.Fatal(err)
			}
			next++
		}
		rec, ok, err := tr.Reply(p)
		if err != nil {
			t.Fatal(err)
		}
		if ok && !rec.Quiet {
			recs = append(recs, rec)
		}
	}
	if left := tr.Close(); len(left) != 0 {
		t.Errorf("handles left open: %+v", left)
	}
	var got []string
	for _, r := range recs {
		s := r.Op + " " + strings.TrimPrefix(r.Path, "/tmp/sftpcap/")
		if r.Target != "" {
			s += " -> " + strings.TrimPrefix(r.Target, "/tmp/sftpcap/")
		}
		s += " " + r.Class + " " + r.StatusText
		if r.Read > 0 || r.Written > 0 {
			s += fmt.Sprintf(" r%d w%d", r.Read, r.Written)
		}
		got = append(got, s)
	}
	want := []string{
		"opendir root file-read ok r4 w0",
		"open root/up.txt file-write ok r0 w5",
		"open root/a.txt file-read ok r11 w0",
		"open root/big.bin file-read ok r100000 w0",
		"posix-rename@openssh.com root/up.txt -> root/moved.txt file-write ok",
		"mkdir root/d file-write ok",
		"rmdir root/d file-write ok",
		"setstat root/moved.txt file-write ok",
		"symlink root/link.txt -> moved.txt file-write ok",
		"hardlink@openssh.com root/moved.txt -> root/hard.txt file-write ok",
		"remove root/moved.txt file-write ok",
		"remove root/link.txt file-write ok",
		"remove root/hard.txt file-write ok",
	}
	if !slices.Equal(got, want) {
		t.Errorf("records:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestDecoderLimits(t *testing.T) {
	t.Parallel()
	d := NewDecoder(0)
	d.Feed(binary.BigEndian.AppendUint32(nil, MaxPacket-3))
	if _, err := d.Next(); !errors.Is(err, ErrTooLarge) {
		t.Errorf("oversized packet: %v", err)
	}
	if _, err := d.Next(); err == nil {
		t.Error("error is not final")
	}
	d = NewDecoder(0)
	d.Feed([]byte{0, 0, 0, 0})
	if _, err := d.Next(); !errors.Is(err, ErrMalformed) {
		t.Errorf("empty packet: %v", err)
	}
	// The largest allowed packet passes.
	d = NewDecoder(0)
	big := make([]byte, MaxPacket)
	binary.BigEndian.PutUint32(big, MaxPacket-4)
	big[4] = TypeWrite
	d.Feed(big)
	if f, err := d.Next(); err != nil || len(f) != MaxPacket {
		t.Errorf("largest packet: %d bytes, %v", len(f), err)
	}
}

func TestStatusRoundTrip(t *testing.T) {
	t.Parallel()
	b := Status(42, StatusPermissionDenied, "loopgate: file-write denied by rule r1")
	d := NewDecoder(0)
	d.Feed(b)
	f, err := d.Next()
	if err != nil || !bytes.Equal(f, b) {
		t.Fatalf("frame %v %v", f, err)
	}
	p, err := ParseReply(f)
	if err != nil {
		t.Fatal(err)
	}
	if p.Type != TypeStatus || p.ID != 42 || p.Status != StatusPermissionDenied || p.Message != "loopgate: file-write denied by rule r1" {
		t.Errorf("reply = %+v", p)
	}
}

// TestDenyInStream answers one request of a pipelined stream and
// forwards the rest unchanged.
func TestDenyInStream(t *testing.T) {
	t.Parallel()
	c2s, _ := capture(t)
	var fwd, answered bytes.Buffer
	tr := NewTracker()
	var denied []Record
	for _, f := range frames(t, c2s, 13) {
		q, err := ParseRequest(f)
		if err != nil {
			t.Fatal(err)
		}
		if q.Class == ClassWrite && !q.OnHandle {
			answered.Write(Status(q.ID, StatusPermissionDenied, "denied"))
			denied = append(denied, tr.Denied(q, "file-write denied by rule r"))
			continue
		}
		fwd.Write(f)
	}
	if len(denied) == 0 || denied[0].Op != "open" || !denied[0].Denied {
		t.Fatalf("denied = %+v", denied)
	}
	for _, f := range frames(t, fwd.Bytes(), 1000) {
		if q, _ := ParseRequest(f); q.Class == ClassWrite && !q.OnHandle {
			t.Errorf("write %s forwarded", q.Op)
		}
	}
	for _, f := range frames(t, answered.Bytes(), 3) {
		if p, err := ParseReply(f); err != nil || p.Status != StatusPermissionDenied {
			t.Errorf("answer %+v %v", p, err)
		}
	}
}

func TestParseRequestForms(t *testing.T) {
	t.Parallel()
	pkt := func(typ byte, fields ...any) []byte {
		var b []byte
		for _, f := range fields {
			switch v := f.(type) {
			case uint32:
				b = binary.BigEndian.AppendUint32(b, v)
			case uint64:
				b = binary.BigEndian.AppendUint64(b, v)
			case string:
				b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
				b = append(b, v...)
			}
		}
		out := binary.BigEndian.AppendUint32(nil, uint32(len(b)+1))
		return append(append(out, typ), b...)
	}
	tests := []struct {
		name  string
		frame []byte
		op    string
		class string
		paths []string
	}{
		{"open read", pkt(TypeOpen, uint32(1), "/etc/hosts", uint32(FlagRead), uint32(0)), "open", ClassRead, []string{"/etc/hosts"}},
		{"open append", pkt(TypeOpen, uint32(2), "/var/log/x", uint32(FlagWrite|FlagAppend), uint32(0)), "open", ClassWrite, []string{"/var/log/x"}},
		{"open create perm", pkt(TypeOpen, uint32(3), "/x", uint32(FlagWrite|FlagCreate), uint32(4), uint32(0o600)), "open", ClassWrite, []string{"/x"}},
		{"posix-rename", pkt(TypeExtended, uint32(4), "posix-rename@openssh.com", "/a", "/b"), "posix-rename@openssh.com", ClassWrite, []string{"/a", "/b"}},
		{"statvfs", pkt(TypeExtended, uint32(5), "statvfs@openssh.com", "/"), "statvfs@openssh.com", ClassRead, []string{"/"}},
		{"lsetstat", pkt(TypeExtended, uint32(6), "lsetstat@openssh.com", "/l", uint32(4), uint32(0o777)), "lsetstat@openssh.com", ClassWrite, []string{"/l"}},
		{"unknown extension", pkt(TypeExtended, uint32(7), "evil@example.com", "/"), "evil@example.com", ClassUnknown, nil},
		{"unknown type", pkt(99, uint32(8)), "type 99", ClassUnknown, nil},
		{"remove", pkt(TypeRemove, uint32(9), "/etc/passwd"), "remove", ClassWrite, []string{"/etc/passwd"}},
		{"fsetstat", pkt(TypeFsetstat, uint32(10), "h", uint32(4), uint32(0o4755)), "fsetstat", ClassWrite, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			q, err := ParseRequest(tt.frame)
			if err != nil {
				t.Fatal(err)
			}
			if q.Op != tt.op || q.Class != tt.class || !slices.Equal(q.Paths(), tt.paths) {
				t.Errorf("request = %+v", q)
			}
		})
	}
	q, _ := ParseRequest(pkt(TypeOpen, uint32(3), "/x", uint32(FlagWrite|FlagCreate), uint32(4), uint32(0o600)))
	if !q.HasMode || q.Mode != 0o600 {
		t.Errorf("mode %o %v", q.Mode, q.HasMode)
	}
	if _, err := ParseRequest(pkt(TypeOpen, uint32(1), "/x")); !errors.Is(err, ErrMalformed) {
		t.Errorf("truncated open: %v", err)
	}
}
