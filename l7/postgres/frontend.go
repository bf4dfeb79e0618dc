package postgres

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"

	"github.com/jackc/pgx/v5/pgproto3"
)

// Limits on what the agent may send.
const (
	// maxStartupBody bounds messages before login (startup, password).
	maxStartupBody = 64 << 10
	// maxMessageBody bounds every later message: PostgreSQL's own limit on
	// one value is 1 GiB.
	maxMessageBody = 1 << 30
)

// startup is what the agent asked for before login.
type startup struct {
	params map[string]string
	cancel *pgproto3.CancelRequest // set for a cancel connection
	tls    *tls.Conn               // set when the agent asked for TLS and got it
	reader *agentReader            // the reader to go on with (over TLS if so)
}

// readStartup answers GSS encryption requests with 'N', SSL requests with
// 'S' and a TLS handshake when tlsFor gives a config (else 'N'), and returns
// the StartupMessage or CancelRequest. After a handshake, ar and conn are
// replaced by ones over TLS (returned in startup).
func readStartup(ar *agentReader, conn net.Conn, tlsFor func() *tls.Config) (*startup, error) {
	sawSSL, sawGSS := false, false
	var tlsConn *tls.Conn
	done := func(st *startup) (*startup, error) {
		st.tls = tlsConn
		st.reader = ar
		return st, nil
	}
	for {
		msg, err := ar.startup()
		if err != nil {
			return nil, fmt.Errorf("read startup: %w", err)
		}
		switch m := msg.(type) {
		case *pgproto3.SSLRequest:
			if sawSSL {
				return nil, errors.New("read startup: second SSLRequest")
			}
			sawSSL = true
			var cfg *tls.Config
			if tlsFor != nil {
				cfg = tlsFor()
			}
			if cfg == nil {
				if _, err := conn.Write([]byte{'N'}); err != nil {
					return nil, fmt.Errorf("answer SSLRequest: %w", err)
				}
				continue
			}
			if _, err := conn.Write([]byte{'S'}); err != nil {
				return nil, fmt.Errorf("answer SSLRequest: %w", err)
			}
			tlsConn = tls.Server(conn, cfg)
			if err := tlsConn.Handshake(); err != nil {
				return nil, fmt.Errorf("TLS handshake with the agent: %w", err)
			}
			ar = newAgentReader(tlsConn)
		case *pgproto3.GSSEncRequest:
			if sawGSS {
				return nil, errors.New("read startup: second GSSENCRequest")
			}
			sawGSS = true
			if _, err := conn.Write([]byte{'N'}); err != nil {
				return nil, fmt.Errorf("answer GSSENCRequest: %w", err)
			}
		case *pgproto3.StartupMessage:
			params := make(map[string]string, len(m.Parameters))
			var unknown []string
			for k, v := range m.Parameters {
				if strings.HasPrefix(k, "_pq_.") {
					unknown = append(unknown, k)
					continue
				}
				params[k] = v
			}
			var w net.Conn = conn
			if tlsConn != nil {
				w = tlsConn
			}
			if err := negotiate(w, m.ProtocolVersion, unknown); err != nil {
				return nil, err
			}
			return done(&startup{params: params})
		case *pgproto3.CancelRequest:
			return done(&startup{cancel: &pgproto3.CancelRequest{ProcessID: m.ProcessID, SecretKey: append([]byte(nil), m.SecretKey...)}})
		default:
			return nil, fmt.Errorf("read startup: unexpected %T", msg)
		}
	}
}

// negotiate answers a startup packet of a newer 3.x protocol, or with
// protocol options ("_pq_." parameters), as PostgreSQL 15 does
// (ProcessStartupPacket, SendNegotiateProtocolVersion): a
// NegotiateProtocolVersion naming 3.0, the newest it speaks, and every
// option it does not know (all of them), before authentication. The
// session goes on at 3.0, so BackendKeyData keeps a 4-byte secret.
func negotiate(conn net.Conn, version uint32, options []string) error {
	if version == protocolVersion3_0 && len(options) == 0 {
		return nil
	}
	slices.Sort(options)
	b, err := (&pgproto3.NegotiateProtocolVersion{NewestMinorProtocol: protocolVersion3_0, UnrecognizedOptions: options}).Encode(nil)
	if err != nil {
		return err
	}
	if _, err := conn.Write(b); err != nil {
		return fmt.Errorf("negotiate protocol version: %w", err)
	}
	return nil
}

// readPassword asks the agent for a cleartext password (its OIDC token).
func readPassword(be *pgproto3.Backend, ar *agentReader) (string, error) {
	be.Send(&pgproto3.AuthenticationCleartextPassword{})
	if err := be.Flush(); err != nil {
		return "", err
	}
	typ, raw, err := ar.next()
	if err != nil {
		return "", fmt.Errorf("read password: %w", err)
	}
	if typ != 'p' {
		return "", fmt.Errorf("read password: got message %q", typ)
	}
	var pm pgproto3.PasswordMessage
	if err := pm.Decode(raw[5:]); err != nil {
		return "", fmt.Errorf("read password: %w", err)
	}
	return pm.Password, nil
}
