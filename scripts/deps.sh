#!/bin/sh
# Installs what loopgate's build, demo and tests need on Debian 12, as root.
# Idempotent: apt-get runs only when something is missing.
set -eu

need=""
have() { command -v "$1" >/dev/null 2>&1; }
pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

# systemd gives systemd-analyze (unit checks; systemd need not be PID 1),
# man-db the man(1) it uses to resolve Documentation=.
for p in clang llvm libbpf-dev iproute2 curl util-linux procps ca-certificates gcc libc6-dev chromium \
	postgresql-15 postgresql-client-15 pgbouncer pgpool2 python3-psycopg2 \
	systemd man-db openssh-server openssh-client rsync \
	nginx fcgiwrap git nodejs python3-requests python3-httpx wrk; do
	pkg "$p" || need="$need $p"
done

if [ -n "$need" ]; then
	if [ "$(id -u)" != 0 ]; then
		echo "deps: missing Debian packages:$need (run as root to install them)" >&2
		exit 1
	fi
	echo "deps: installing$need" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends $need >/dev/null
	# pgpool2 (for make bench only) starts a service; the benchmark runs its own.
	case "$need" in *pgpool2*) have systemctl && systemctl disable --now pgpool2 >/dev/null 2>&1 || true ;; esac
	# nginx (HTTP tests) likewise: the tests run their own.
	case "$need" in *nginx*) have systemctl && systemctl disable --now nginx >/dev/null 2>&1 || true ;; esac
fi

if ! have go; then
	if [ -x /usr/local/go/bin/go ]; then
		echo "deps: go is at /usr/local/go/bin; add it to PATH" >&2
	else
		echo "deps: Go $(sed -n 's/^go //p' "$(dirname "$0")/../go.mod") or newer is required (https://go.dev/doc/install)" >&2
	fi
	exit 1
fi
go mod download
