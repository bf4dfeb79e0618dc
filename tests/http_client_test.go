package tests

import (
	"bufio"
	"crypto/rand"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// httpResult is what the Go HTTP client modes print.
type httpResult struct {
	Status int    `json:"status"`
	Proto  string `json:"proto"`
	Body   string `json:"body"`
	Echo   string `json:"echo"`
	Err    string `json:"err"`
	NS     int64  `json:"ns"`
}

// httpClient runs the Go client modes of the HTTP tests, as an agent in a
// workload would: roots from SSL_CERT_FILE (what loopgate run sets), the
// real URL.
//
//	http-get URL      GET, over HTTP/2 when offered
//	http-ws URL MSG   a WebSocket text frame echoed back
//	http-first URL    time one request on a fresh connection
func httpClient(mode string, args []string) httpResult {
	switch mode {
	case "http-get":
		c := &http.Client{Timeout: 20 * time.Second}
		resp, err := c.Get(args[0])
		if err != nil {
			return httpResult{Err: err.Error()}
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return httpResult{Status: resp.StatusCode, Proto: resp.Proto, Body: string(b)}
	case "http-ws":
		return wsEcho(args[0], args[1])
	case "http-first":
		// One request on a fresh connection: TLS handshake (and, through
		// loopgate, the leaf mint for a name not seen yet) and a GET.
		c := &http.Client{Timeout: 20 * time.Second, Transport: &http.Transport{ForceAttemptHTTP2: true}}
		start := time.Now()
		resp, err := c.Get(args[0])
		if err != nil {
			return httpResult{Err: err.Error()}
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return httpResult{Status: resp.StatusCode, Body: string(b), NS: time.Since(start).Nanoseconds()}
	}
	return httpResult{Err: "unknown mode " + mode}
}

func wsEcho(raw, msg string) httpResult {
	u, err := url.Parse(raw)
	if err != nil {
		return httpResult{Err: err.Error()}
	}
	conn, err := tls.Dial("tcp", u.Host, &tls.Config{ServerName: u.Hostname(), NextProtos: []string{"http/1.1"}})
	if err != nil {
		return httpResult{Err: err.Error()}
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n", u.RequestURI(), u.Host)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return httpResult{Err: err.Error()}
	}
	res := httpResult{Status: resp.StatusCode}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		b, _ := io.ReadAll(resp.Body)
		res.Body = string(b)
		return res
	}
	conn.Write(wsFrame(1, []byte(msg), true))
	_, payload, err := readWSFrame(br)
	if err != nil {
		res.Err = err.Error()
		return res
	}
	res.Echo = string(payload)
	conn.Write(wsFrame(8, []byte{3, 232}, true))
	readWSFrame(br)
	return res
}

// wsFrame builds one final frame (RFC 6455 §5.2), masked as a client's.
func wsFrame(op byte, payload []byte, masked bool) []byte {
	b := []byte{0x80 | op}
	m := byte(0)
	if masked {
		m = 0x80
	}
	switch n := len(payload); {
	case n < 126:
		b = append(b, m|byte(n))
	case n < 1<<16:
		b = append(b, m|126, byte(n>>8), byte(n))
	default:
		b = append(b, m|127)
		b = binary.BigEndian.AppendUint64(b, uint64(n))
	}
	if !masked {
		return append(b, payload...)
	}
	var key [4]byte
	rand.Read(key[:])
	b = append(b, key[:]...)
	for i, c := range payload {
		b = append(b, c^key[i%4])
	}
	return b
}

func readWSFrame(r io.Reader) (byte, []byte, error) {
	var h [2]byte
	if _, err := io.ReadFull(r, h[:]); err != nil {
		return 0, nil, err
	}
	n := uint64(h[1] & 0x7f)
	switch n {
	case 126:
		var e [2]byte
		io.ReadFull(r, e[:])
		n = uint64(binary.BigEndian.Uint16(e[:]))
	case 127:
		var e [8]byte
		io.ReadFull(r, e[:])
		n = binary.BigEndian.Uint64(e[:])
	}
	var key [4]byte
	if h[1]&0x80 != 0 {
		io.ReadFull(r, key[:])
	}
	if n > 1<<20 {
		return 0, nil, fmt.Errorf("frame of %d bytes", n)
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(r, p); err != nil {
		return 0, nil, err
	}
	if h[1]&0x80 != 0 {
		for i := range p {
			p[i] ^= key[i%4]
		}
	}
	return h[0] & 0x0f, p, nil
}

// wsAccept answers a WebSocket handshake on a hijacked conn and echoes
// text frames until a close (the Go TLS target's /ws).
func wsServe(conn net.Conn, rw *bufio.ReadWriter, key string) {
	defer conn.Close()
	fmt.Fprintf(rw, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n\r\n", wsAcceptKey(key))
	rw.Flush()
	for {
		op, p, err := readWSFrame(rw)
		if err != nil {
			return
		}
		if op == 8 {
			conn.Write(wsFrame(8, p, false))
			return
		}
		conn.Write(wsFrame(op, []byte(strings.ToUpper(string(p))), false))
	}
}
