package sftpwire

import (
	"encoding/binary"
	"testing"
)

// BenchmarkUpload decodes, parses and tracks a stream of 32 KiB WRITEs
// fed in 32 KiB channel chunks, as an upload reaches the bridge.
func BenchmarkUpload(b *testing.B) {
	var frame []byte
	data := make([]byte, 32<<10)
	body := []byte{TypeWrite}
	body = binary.BigEndian.AppendUint32(body, 7)
	body = binary.BigEndian.AppendUint32(body, 4)
	body = append(body, "h001"...)
	body = binary.BigEndian.AppendUint64(body, 0)
	body = binary.BigEndian.AppendUint32(body, uint32(len(data)))
	body = append(body, data...)
	frame = binary.BigEndian.AppendUint32(frame, uint32(len(body)))
	frame = append(frame, body...)
	stream := make([]byte, 0, 64*len(frame))
	for range 64 {
		stream = append(stream, frame...)
	}
	d := NewDecoder(0)
	tr := NewTracker()
	b.SetBytes(int64(len(stream)))
	b.ReportAllocs()
	for b.Loop() {
		for i := 0; i < len(stream); i += 32 << 10 {
			d.Feed(stream[i:min(i+32<<10, len(stream))])
			for {
				f, err := d.Next()
				if err != nil {
					b.Fatal(err)
				}
				if f == nil {
					break
				}
				q, err := ParseRequest(f)
				if err != nil {
					b.Fatal(err)
				}
				if err := tr.Request(q); err != nil {
					b.Fatal(err)
				}
				if _, _, err := tr.Reply(Reply{Type: TypeStatus, ID: q.ID}); err != nil {
					b.Fatal(err)
				}
			}
		}
	}
}
