package http

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net/netip"
	"sync"
	"time"
)

// Leaf certificates: exact SAN, a day's life (backdated an hour for clock
// skew), minted again once two thirds of it have passed.
const (
	leafLife    = 24 * time.Hour
	maxLeafs    = 1024
	leafBackdat = time.Hour
)

// Minter mints leaf certificates for the names agents dial, signed by
// loopgate's CA (ca.crt and ca.key in the daemon's state directory, the
// same CA PostgreSQL targets use: ECDSA P-256, key 0600). One P-256 key
// serves every leaf of a daemon run (keygen per leaf buys nothing: the
// key never leaves the daemon); each leaf has its own serial. Leaves are
// cached (up to 1024 names) and concurrent mints of one name collapse into
// one. It is safe for concurrent use; mu guards leafs and inflight.
type Minter struct {
	ca     *x509.Certificate
	caKey  *ecdsa.PrivateKey
	leafKy *ecdsa.PrivateKey
	// CertFile is the CA certificate agents are given to trust.
	CertFile string

	mu       sync.Mutex
	leafs    map[string]*tls.Certificate
	inflight map[string]*mint
}

type mint struct {
	done chan struct{}
	cert *tls.Certificate
	err  error
}

// NewMinter returns a Minter signing with ca and key.
func NewMinter(ca *x509.Certificate, key *ecdsa.PrivateKey, certFile string) (*Minter, error) {
	lk, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	return &Minter{ca: ca, caKey: key, leafKy: lk, CertFile: certFile,
		leafs: map[string]*tls.Certificate{}, inflight: map[string]*mint{}}, nil
}

// Leaf returns a certificate for name (a DNS name, or an IP address when
// the agent sent no SNI), from the cache or freshly minted.
func (m *Minter) Leaf(name string) (*tls.Certificate, error) {
	now := time.Now()
	m.mu.Lock()
	if c, ok := m.leafs[name]; ok && now.Before(renewAt(c.Leaf)) {
		m.mu.Unlock()
		return c, nil
	}
	if f, ok := m.inflight[name]; ok {
		m.mu.Unlock()
		<-f.done
		return f.cert, f.err
	}
	f := &mint{done: make(chan struct{})}
	m.inflight[name] = f
	m.mu.Unlock()

	f.cert, f.err = m.mint(name, now)
	m.mu.Lock()
	delete(m.inflight, name)
	if f.err == nil {
		if len(m.leafs) >= maxLeafs {
			for k := range m.leafs { // evict one (map order is random enough)
				delete(m.leafs, k)
				break
			}
		}
		m.leafs[name] = f.cert
	}
	m.mu.Unlock()
	close(f.done)
	return f.cert, f.err
}

func (m *Minter) mint(name string, now time.Time) (*tls.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: name},
		NotBefore: now.Add(-leafBackdat), NotAfter: now.Add(leafLife),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
	}
	if ip, err := netip.ParseAddr(name); err == nil {
		tmpl.IPAddresses = append(tmpl.IPAddresses, ip.AsSlice())
	} else {
		tmpl.DNSNames = []string{name}
	}
	if tmpl.NotAfter.After(m.ca.NotAfter) {
		tmpl.NotAfter = m.ca.NotAfter
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, m.ca, &m.leafKy.PublicKey, m.caKey)
	if err != nil {
		return nil, fmt.Errorf("mint leaf for %s: %w", name, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &tls.Certificate{Certificate: [][]byte{der, m.ca.Raw}, PrivateKey: m.leafKy, Leaf: leaf}, nil
}

// renewAt is when two thirds of a leaf's life have passed.
func renewAt(c *x509.Certificate) time.Time {
	return c.NotBefore.Add(c.NotAfter.Sub(c.NotBefore) * 2 / 3)
}
