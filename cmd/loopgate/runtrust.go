package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	lghttp "github.com/loopgate/loopgate/l7/http"
	"github.com/loopgate/loopgate/l7/postgres"
	"github.com/loopgate/loopgate/policy"
)

// caDir is where the daemon keeps loopgate's CA (ca.crt, ca.key): beside
// the store.
func caDir(cfg *policy.Config) string { return filepath.Join(filepath.Dir(cfg.Store), "ca") }

// httpHandler is the handler of http targets, terminating TLS with
// loopgate's CA, the one PostgreSQL targets use.
func httpHandler(ca *postgres.LocalCA, maskKey []byte) (*lghttp.Handler, error) {
	cert, key := ca.Signer()
	m, err := lghttp.NewMinter(cert, key, ca.CertFile)
	if err != nil {
		return nil, err
	}
	return &lghttp.Handler{Minter: m, MaskKey: maskKey}, nil
}

// systemBundles are where distributions keep their CA bundle (as Go's
// crypto/x509 looks for them).
var systemBundles = []string{
	"/etc/ssl/certs/ca-certificates.crt",
	"/etc/pki/tls/certs/ca-bundle.crt",
	"/etc/ssl/ca-bundle.pem",
	"/etc/pki/tls/cacert.pem",
	"/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
	"/etc/ssl/cert.pem",
}

// caEnv are the variables that make each runtime trust a bundle; each
// replaces the roots (so the bundle holds the system's too), except
// NODE_EXTRA_CA_CERTS, which adds.
var caEnv = []string{"SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "GIT_SSL_CAINFO", "AWS_CA_BUNDLE"}

// agentTrust gives the agent's process tree, and nothing else on the
// host, the trust path to loopgate's CA and the placeholders of http
// targets: a per-run directory with ca-bundle.pem (system roots plus
// loopgate's CA) and ca.pem (the CA alone), the variables each runtime
// reads, and NAME=loopgate-placeholder for each placeholder a target
// names. The returned cleanup removes the directory; call it when the run
// ends. Without http targets it changes nothing.
func agentTrust(cmd *exec.Cmd, cfg *policy.Config) (cleanup func(), err error) {
	var placeholders []string
	any := false
	for _, t := range cfg.Targets {
		if t.Protocol == policy.ProtocolHTTP {
			any = true
			placeholders = append(placeholders, t.Placeholders...)
		}
	}
	if !any {
		return func() {}, nil
	}
	ca, err := os.ReadFile(filepath.Join(caDir(cfg), "ca.crt"))
	if err != nil {
		return nil, fmt.Errorf("read loopgate CA (is the daemon started?): %w", err)
	}
	var system []byte
	for _, p := range systemBundles {
		if b, err := os.ReadFile(p); err == nil {
			system = b
			break
		}
	}
	dir, err := os.MkdirTemp("", "loopgate-run-")
	if err != nil {
		return nil, err
	}
	cleanup = func() { os.RemoveAll(dir) }
	if err := os.Chmod(dir, 0o755); err != nil {
		cleanup()
		return nil, err
	}
	bundle := append(append([]byte{}, system...), '\n')
	bundle = append(bundle, ca...)
	bundlePath, caPath := filepath.Join(dir, "ca-bundle.pem"), filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(bundlePath, bundle, 0o644); err != nil {
		cleanup()
		return nil, err
	}
	if err := os.WriteFile(caPath, ca, 0o644); err != nil {
		cleanup()
		return nil, err
	}
	set := map[string]string{"NODE_EXTRA_CA_CERTS": caPath}
	for _, k := range caEnv {
		set[k] = bundlePath
	}
	for _, p := range placeholders {
		set[p] = policy.Placeholder
	}
	env := cmd.Env
	if env == nil {
		env = os.Environ()
	}
	out := make([]string, 0, len(env)+len(set))
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		if _, ok := set[k]; !ok {
			out = append(out, kv)
		}
	}
	for k, v := range set {
		out = append(out, k+"="+v)
	}
	cmd.Env = out
	return cleanup, nil
}
