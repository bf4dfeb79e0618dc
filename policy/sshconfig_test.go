package policy

import (
	"strings"
	"testing"
	"time"
)

func sshTarget(body string) string {
	return "targets:\n  - name: box\n    protocol: ssh\n    address: 10.0.0.9:22\n" + body
}

func TestSSHTargetValid(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		body string
		want func(*Target) bool
	}{
		{"user CA with default ttl", "    credentials: {user: deploy, ssh_ca: true}\n    known_hosts: /etc/loopgate/kh\n",
			func(t *Target) bool {
				return t.Credentials.SSH.CA && t.Credentials.SSH.TTL == DefaultSSHCertTTL && t.SSH.KnownHosts == "/etc/loopgate/kh"
			}},
		{"user CA with ttl", "    credentials: {user: deploy, ssh_ca: true, ttl: 2m}\n    host_ca: /etc/loopgate/host_ca.pub\n",
			func(t *Target) bool {
				return t.Credentials.SSH.TTL == 2*time.Minute && t.SSH.HostCA == "/etc/loopgate/host_ca.pub"
			}},
		{"key file", "    credentials: {user: deploy, key_file: /etc/loopgate/id_ed25519}\n    known_hosts: /etc/loopgate/kh\n",
			func(t *Target) bool {
				return t.Credentials.SSH.KeyFile == "/etc/loopgate/id_ed25519" && t.Credentials.HTTP.KeyFile == ""
			}},
		{"password file", "    credentials: {user: deploy, password_file: /etc/loopgate/pw}\n    known_hosts: /etc/loopgate/kh\n",
			func(t *Target) bool { return t.Credentials.PasswordFile == "/etc/loopgate/pw" }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := Parse("c.yaml", []byte(sshTarget(tc.body)))
			if err != nil {
				t.Fatal(err)
			}
			if !tc.want(&cfg.Targets[0]) {
				t.Errorf("target %+v", cfg.Targets[0])
			}
		})
	}
}

func TestSSHTargetInvalid(t *testing.T) {
	t.Parallel()
	tests := []struct{ name, config, want string }{
		{"no host key check", sshTarget("    credentials: {user: deploy, ssh_ca: true}\n"), "no insecure mode"},
		{"no user", sshTarget("    credentials: {ssh_ca: true}\n    known_hosts: /kh\n"), "user is required"},
		{"no credentials", sshTarget("    known_hosts: /kh\n"), "exactly one of"},
		{"two credentials", sshTarget("    credentials: {user: d, ssh_ca: true, key_file: /k}\n    known_hosts: /kh\n"), "exactly one of"},
		{"ttl without ca", sshTarget("    credentials: {user: d, key_file: /k, ttl: 5m}\n    known_hosts: /kh\n"), "ttl applies"},
		{"relative path", sshTarget("    credentials: {user: d, ssh_ca: true}\n    known_hosts: kh\n"), "absolute path"},
		{"bad ttl", sshTarget("    credentials: {user: d, ssh_ca: true, ttl: 2s}\n    known_hosts: /kh\n"), "from 10s to 24h"},
		{"bad bool", sshTarget("    credentials: {user: d, ssh_ca: yes}\n    known_hosts: /kh\n"), "true or false"},
		{"ssh fields on postgres", "targets:\n  - {name: db, protocol: postgres, address: 10.0.0.9:5432, known_hosts: /kh}\n", "are for ssh targets"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := Parse("c.yaml", []byte(tc.config))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err %v, want %q", err, tc.want)
			}
		})
	}
}
