package sftpwire

import (
	"bytes"
	"testing"
)

// FuzzSFTPFrames feeds any byte stream, split into chunks of a fuzzed
// size, through a Decoder, parses every frame as a request and as a
// reply, and runs them through a Tracker: nothing panics, the frames are
// exactly the stream's prefix, and the Tracker stays bounded.
func FuzzSFTPFrames(f *testing.F) {
	c2s, s2c := capture(f)
	f.Add(c2s, uint8(7))
	for _, fr := range frames(f, c2s, len(c2s)) {
		f.Add(fr, uint8(1))
	}
	for i, fr := range frames(f, s2c, len(s2c)) {
		if len(fr) < 512 || i%8 == 0 {
			f.Add(fr, uint8(3))
		}
	}
	f.Add(Status(1, StatusPermissionDenied, "denied"), uint8(0))
	f.Fuzz(func(t *testing.T, stream []byte, chunk uint8) {
		d := NewDecoder(64 << 10)
		tr := NewTracker()
		var got []byte
		size := int(chunk)%64 + 1
		var err error
		for i := 0; i < len(stream) && err == nil; i += size {
			d.Feed(stream[i:min(i+size, len(stream))])
			for {
				var fr []byte
				fr, err = d.Next()
				if err != nil || fr == nil {
					break
				}
				got = append(got, fr...)
				if q, qerr := ParseRequest(fr); qerr == nil {
					_ = tr.Request(q)
					_ = q.Paths()
				}
				if p, perr := ParseReply(fr); perr == nil {
					_, _, _ = tr.Reply(p)
				}
			}
		}
		if !bytes.HasPrefix(stream, got) {
			t.Fatal("frames are not the stream's prefix")
		}
		if err == nil && len(got)+d.Buffered() != len(stream) {
			t.Fatalf("%d framed + %d buffered != %d", len(got), d.Buffered(), len(stream))
		}
		if len(tr.pending) > MaxPending || len(tr.handles) > MaxHandles {
			t.Fatalf("tracker grew to %d pending, %d handles", len(tr.pending), len(tr.handles))
		}
		tr.Close()
	})
}
