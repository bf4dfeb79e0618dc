package postgres

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// LocalCA issues the certificates loopgate shows agents that ask for TLS
// (SSLRequest) on targets configured for it. Its key stays in the daemon's
// state directory (0600); agents that verify trust its certificate file.
// It is safe for concurrent use.
type LocalCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	// CertFile is where the CA certificate is, for agents to trust.
	CertFile string

	mu    sync.Mutex
	leafs map[string]*tls.Certificate // by target name
}

// LoadOrCreateCA loads the CA in dir (ca.crt, ca.key) or creates one valid
// for ten years.
func LoadOrCreateCA(dir string) (*LocalCA, error) {
	crtPath, keyPath := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key")
	crtPEM, err := os.ReadFile(crtPath)
	if errors.Is(err, fs.ErrNotExist) {
		if err := createCA(dir, crtPath, keyPath); err != nil {
			return nil, err
		}
		crtPEM, err = os.ReadFile(crtPath)
	}
	if err != nil {
		return nil, fmt.Errorf("read local CA: %w", err)
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("read local CA key: %w", err)
	}
	cb, _ := pem.Decode(crtPEM)
	kb, _ := pem.Decode(keyPEM)
	if cb == nil || kb == nil {
		return nil, errors.New("local CA files are not PEM")
	}
	cert, err := x509.ParseCertificate(cb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse local CA: %w", err)
	}
	key, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse local CA key: %w", err)
	}
	return &LocalCA{cert: cert, key: key, CertFile: crtPath, leafs: map[string]*tls.Certificate{}}, nil
}

func createCA(dir, crtPath, keyPath string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: "loopgate local CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().AddDate(10, 0, 0),
		IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	if err := os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		return err
	}
	return os.WriteFile(crtPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
}

// Signer returns the CA's certificate and key, for the other handlers
// that mint leaves with the same CA (l7/http).
func (ca *LocalCA) Signer() (*x509.Certificate, *ecdsa.PrivateKey) { return ca.cert, ca.key }

// ServerConfig returns the TLS config for a target: a certificate for its
// hosts (IPs and names), issued on first use and kept for a day.
func (ca *LocalCA) ServerConfig(target string, hosts []string) (*tls.Config, error) {
	ca.mu.Lock()
	defer ca.mu.Unlock()
	if c, ok := ca.leafs[target]; ok && time.Now().Before(c.Leaf.NotAfter.Add(-time.Hour)) {
		return &tls.Config{Certificates: []tls.Certificate{*c}, MinVersion: tls.VersionTLS12}, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: target},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, err
	}
	leaf, _ := x509.ParseCertificate(der)
	c := &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
	ca.leafs[target] = c
	return &tls.Config{Certificates: []tls.Certificate{*c}, MinVersion: tls.VersionTLS12}, nil
}
