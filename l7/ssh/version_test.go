package ssh

import (
	"io"
	"net"
	"slices"
	"testing"
)

func TestPeekVersion(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, sent string
		want       []string
	}{
		{"openssh", "SSH-2.0-OpenSSH_9.2p1 Debian-2\r\nKEX", openSSHCiphers},
		{"paramiko", "SSH-2.0-paramiko_3.4.0\r\n", agentCiphers},
		{"silent until the server speaks", "", agentCiphers},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			a, b := net.Pipe()
			defer a.Close()
			defer b.Close()
			go func() {
				if tc.sent != "" {
					b.Write([]byte(tc.sent))
				}
				b.Write([]byte("rest"))
			}()
			c, ciphers := peekVersion(a)
			if !slices.Equal(ciphers, tc.want) {
				t.Errorf("ciphers %v, want %v", ciphers, tc.want)
			}
			got := make([]byte, len(tc.sent)+4)
			if _, err := io.ReadFull(c, got); err != nil || string(got) != tc.sent+"rest" {
				t.Errorf("replayed %q, %v", got, err)
			}
		})
	}
}
