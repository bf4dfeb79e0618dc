package ssh

import (
	"bytes"
	"net"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"
)

// Ciphers offered to agents. chacha20-poly1305 is left out: x/crypto runs
// it in generic Go on amd64, where it took most of the daemon's CPU in a
// bulk transfer, while AES runs in hardware. OpenSSH clients put
// chacha20 first, then aes*-ctr, then aes*-gcm; they are offered only GCM
// (256 MiB piped at 0.80x direct, against 0.62x with AES-CTR and its
// HMAC), other clients CTR as well (paramiko has no GCM).
var (
	agentCiphers   = []string{ssh.CipherAES128GCM, ssh.CipherAES256GCM, ssh.CipherAES128CTR, ssh.CipherAES192CTR, ssh.CipherAES256CTR}
	openSSHCiphers = []string{ssh.CipherAES128GCM, ssh.CipherAES256GCM}
)

// versionWait bounds how long the agent's identification line is awaited
// before loopgate sends its own; a client that waits for the server's
// first gets the default ciphers.
const versionWait = 500 * time.Millisecond

// peekedConn replays the bytes read ahead of the handshake.
type peekedConn struct {
	net.Conn
	head []byte
}

func (c *peekedConn) Read(p []byte) (int, error) {
	if len(c.head) > 0 {
		n := copy(p, c.head)
		c.head = c.head[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// peekVersion reads what the agent sent first (its identification line,
// RFC 4253 §4.2, which clients send without waiting) for up to
// versionWait, and returns a conn that replays it and the ciphers to
// offer.
func peekVersion(conn net.Conn) (net.Conn, []string) {
	conn.SetReadDeadline(time.Now().Add(versionWait))
	defer conn.SetReadDeadline(time.Time{})
	var head []byte
	buf := make([]byte, 256)
	for len(head) < 255 && !bytes.Contains(head, []byte("\n")) {
		n, err := conn.Read(buf[:255-len(head)])
		head = append(head, buf[:n]...)
		if err != nil {
			break // timeout or EOF: the handshake reports what follows
		}
	}
	ciphers := agentCiphers
	if strings.HasPrefix(string(head), "SSH-2.0-OpenSSH_") {
		ciphers = openSSHCiphers
	}
	return &peekedConn{Conn: conn, head: head}, ciphers
}
