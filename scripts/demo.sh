#!/bin/bash
# make demo: start loopgate on a sample config with four local targets it
# starts itself (an echo server, PostgreSQL, an OpenSSH sshd trusting
# loopgate's user CA, and nginx over TLS with its own CA), run unmodified
# clients (bash's /dev/tcp, psql, ssh, curl) as user nobody in a workload:
# a relayed session, a masked column, a denied DROP, a DELETE approved from
# the CLI, an ssh exec allowed and an ssh `rm` denied (exit 126), an HTTPS
# GET with a bearer injected in place of the agent's placeholder and a
# DELETE denied (403), a workload no rule admits, the daemon down failing
# closed; then print the records and verify them. Run as root on Debian 12
# (scripts/deps.sh installs what it needs); it removes what it creates.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=bin/loopgate
WORK=$(mktemp -d /tmp/loopgate-demo.XXXXXX)
chmod 755 "$WORK"
CFG=$WORK/loopgate.yaml
TARGET=127.0.0.2:7000
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

cleanup() {
	set +e
	[ -n "${PGDATA_DIR:-}" ] && runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDATA_DIR" -m fast stop >/dev/null 2>&1
	[ -n "${DAEMON:-}" ] && kill -TERM "$DAEMON" 2>/dev/null && wait "$DAEMON" 2>/dev/null
	[ -n "${ECHO:-}" ] && kill "$ECHO" 2>/dev/null && wait "$ECHO" 2>/dev/null
	[ -n "${SSHD:-}" ] && kill -TERM "$SSHD" 2>/dev/null && wait "$SSHD" 2>/dev/null
	[ -n "${NGINX:-}" ] && kill -QUIT "$NGINX" 2>/dev/null && wait "$NGINX" 2>/dev/null
	[ -n "${MADE_USER:-}" ] && userdel "$SSHUSER" 2>/dev/null
	"$BIN" teardown --config "$CFG" >/dev/null 2>&1
	rm -rf "$WORK"
}
trap cleanup EXIT

PGBIN=$(ls -d /usr/lib/postgresql/*/bin | tail -1)
# Below the kernel's ephemeral range (32768-60999 by default): a port in it
# can be taken for a moment by any outgoing connection, and the start fails.
PGPORT=25432
SSHPORT=25022
HTTPSPORT=25443
for port in $PGPORT $SSHPORT $HTTPSPORT; do
	if ss -Hltn "sport = :$port" | grep -q .; then
		echo "port $port is in use; the demo needs it" >&2
		exit 1
	fi
done
step "start a local PostgreSQL on 127.0.0.1:$PGPORT (the database the agent will use)"
PGHOME=$WORK/pg
PGDATA_DIR=$PGHOME/data
mkdir -p "$PGDATA_DIR" && chown -R postgres "$PGHOME"
echo "super-$$" >"$WORK/super.pass"; chown postgres "$WORK/super.pass"; chmod 600 "$WORK/super.pass"
runuser -u postgres -- "$PGBIN/initdb" -D "$PGDATA_DIR" -U postgres -A scram-sha-256 --pwfile "$WORK/super.pass" >/dev/null
if ! runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGDATA_DIR" -l "$PGHOME/server.log" -w \
	-o "-p $PGPORT -k $PGHOME -c listen_addresses=127.0.0.1" start >/dev/null; then
	cat "$PGHOME/server.log" >&2
	exit 1
fi
PGPASSWORD=super-$$ psql -X -q -h 127.0.0.1 -p $PGPORT -U postgres <<SQL
CREATE ROLE app LOGIN PASSWORD 'app-$$';
CREATE DATABASE app OWNER app;
\\c app
SET ROLE app;
CREATE TABLE customers (id int primary key, name text, email text);
INSERT INTO customers VALUES (1, 'Ada', 'ada@example.com'), (2, 'Bob', 'bob@example.com');
SQL
echo "app-$$" >"$WORK/app.pass"; chmod 600 "$WORK/app.pass"

# The ssh target's login user: a system account with no password and no
# keys (sshd lets in only certificates from loopgate's user CA). Removed at
# the end unless it was there before.
SSHUSER=loopgate-demo
if ! id -u "$SSHUSER" >/dev/null 2>&1; then
	useradd --system --no-create-home --home-dir / --shell /bin/sh "$SSHUSER"
	MADE_USER=1
	usermod -p '*' "$SSHUSER" # useradd's "!" is a lock sshd honours without PAM
fi
mkdir -p "$WORK/sshd" /run/sshd
ssh-keygen -q -t ed25519 -N '' -C demo-sshd -f "$WORK/sshd/host_ed25519"
echo "[127.0.0.1]:$SSHPORT $(cat "$WORK/sshd/host_ed25519.pub")" >"$WORK/sshd/target_known_hosts"

# The HTTPS target's own CA and certificate (for localhost), and the token
# loopgate injects: the agent holds only the placeholder.
NGX=$WORK/nginx
mkdir -p "$NGX/tmp"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
	-subj '/CN=loopgate demo target CA' -keyout "$NGX/ca.key" -out "$NGX/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
	-subj '/CN=localhost' -keyout "$NGX/server.key" -out "$NGX/server.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >"$NGX/ext.cnf"
openssl x509 -req -days 1 -in "$NGX/server.csr" -CA "$NGX/ca.pem" -CAkey "$NGX/ca.key" -CAcreateserial \
	-extfile "$NGX/ext.cnf" -out "$NGX/server.crt" 2>/dev/null
echo "demo-secret-$$" >"$WORK/api.token"; chmod 600 "$WORK/api.token"

cat >"$CFG" <<YAML
listen: 127.0.0.1:15001
store: $WORK/loopgate.db
bpffs: /sys/fs/bpf/loopgate-demo
daemon_cgroup: loopgate-demo.daemon
api: {socket: $WORK/api.sock}
approvals: {timeout: 60s}
targets:
  - name: echo
    protocol: tcp
    address: $TARGET
  - name: appdb
    protocol: postgres
    address: 127.0.0.1:$PGPORT
    credentials: {user: app, password_file: $WORK/app.pass}   # the agent never sees it
  - name: box
    protocol: ssh
    address: 127.0.0.1:$SSHPORT
    credentials: {user: $SSHUSER, ssh_ca: true, ttl: 5m}   # a certificate minted per session
    known_hosts: $WORK/sshd/target_known_hosts
  - name: api
    protocol: http
    address: 127.0.0.1:$HTTPSPORT
    tls: {ca_file: $NGX/ca.pem}
    credentials: {password_file: $WORK/api.token}   # injected as Authorization: Bearer <token>
    placeholders: [DEMO_TOKEN]                      # the agent's env holds loopgate-placeholder
workloads:
  - name: demo
    cgroup: loopgate-demo/agent
    default: allow
  - name: intruder
    cgroup: loopgate-demo/intruder
masks:
  - {name: email, detect: email, mode: partial}
approvers:
  - {name: admin, uid: 0}
rules:
  - id: demo-echo
    workloads: [demo]
    targets: [echo]
    allow: [connect]
  - id: demo-db
    workloads: [demo]
    targets: [appdb]
    allow: [read, write, session, transaction]
    approve: [unbounded-write]
    deny: [ddl, drop, privilege]
    mask: [email]
  - id: demo-ssh
    workloads: [demo]
    targets: [box]
    allow: [read]
    deny: [write]
  - id: demo-api
    workloads: [demo]
    targets: [api]
    allow: [read]
    deny: [delete]
YAML

step "config ($CFG)"
cat "$CFG"

step "start a local target: an echo server on $TARGET"
go build -o "$WORK/echotarget" ./tests/echotarget
"$WORK/echotarget" -listen "$TARGET" &
ECHO=$!
for _ in $(seq 50); do
	kill -0 "$ECHO" 2>/dev/null || { echo "echo target failed to start (is $TARGET in use?)" >&2; exit 1; }
	(exec 3<>/dev/tcp/127.0.0.2/7000) 2>/dev/null && break
	sleep 0.1
done

step "start a local target: OpenSSH's sshd on 127.0.0.1:$SSHPORT, trusting loopgate's user CA"
echo "\$ loopgate ssh user-ca > $WORK/sshd/user_ca.pub   # TrustedUserCAKeys"
"$BIN" ssh user-ca --config "$CFG" >"$WORK/sshd/user_ca.pub"
cat "$WORK/sshd/user_ca.pub"
cat >"$WORK/sshd/sshd_config" <<SSHD
ListenAddress 127.0.0.1:$SSHPORT
HostKey $WORK/sshd/host_ed25519
PidFile $WORK/sshd/sshd.pid
TrustedUserCAKeys $WORK/sshd/user_ca.pub
AuthorizedKeysFile none
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
UsePAM no
StrictModes no
LogLevel VERBOSE
SSHD
/usr/sbin/sshd -t -f "$WORK/sshd/sshd_config"
/usr/sbin/sshd -D -e -f "$WORK/sshd/sshd_config" 2>"$WORK/sshd/sshd.log" &
SSHD=$!
for _ in $(seq 100); do
	grep -q 'Server listening' "$WORK/sshd/sshd.log" && break
	kill -0 "$SSHD" 2>/dev/null || { cat "$WORK/sshd/sshd.log" >&2; exit 1; }
	sleep 0.1
done

step "start a local target: nginx over TLS on 127.0.0.1:$HTTPSPORT (its own CA), logging the Authorization it gets"
cat >"$NGX/nginx.conf" <<NGINX
daemon off;
worker_processes 1;
user root;
pid $NGX/nginx.pid;
error_log $NGX/error.log warn;
events { worker_connections 64; }
http {
  log_format auth '\$request -> Authorization: "\$http_authorization"';
  access_log $NGX/access.log auth;
  client_body_temp_path $NGX/tmp/body; proxy_temp_path $NGX/tmp/proxy; fastcgi_temp_path $NGX/tmp/fcgi;
  uwsgi_temp_path $NGX/tmp/uwsgi; scgi_temp_path $NGX/tmp/scgi;
  server {
    listen 127.0.0.1:$HTTPSPORT ssl;
    server_name localhost;
    ssl_certificate $NGX/server.crt;
    ssl_certificate_key $NGX/server.key;
    location / { default_type text/plain; return 200 "hello from the target\n"; }
  }
}
NGINX
nginx -e "$NGX/error.log" -p "$NGX" -c "$NGX/nginx.conf" &
NGINX=$!
for _ in $(seq 100); do
	(exec 3<>/dev/tcp/127.0.0.1/$HTTPSPORT) 2>/dev/null && break
	kill -0 "$NGINX" 2>/dev/null || { cat "$NGX/error.log" >&2; exit 1; }
	sleep 0.1
done

step "start the daemon"
"$BIN" daemon --config "$CFG" >"$WORK/daemon.log" 2>&1 &
DAEMON=$!
for _ in $(seq 100); do
	grep -q 'daemon ready' "$WORK/daemon.log" && break
	kill -0 "$DAEMON" 2>/dev/null || { cat "$WORK/daemon.log"; exit 1; }
	sleep 0.1
done
cat "$WORK/daemon.log"

AGENT='exec 3<>/dev/tcp/127.0.0.2/7000 || exit 1; echo "hello from pid $$" >&3; read -r line <&3; echo "agent got back: $line"'
step "run an unmodified client as user nobody in workload 'demo' (it dials $TARGET itself)"
echo "\$ loopgate run --workload demo --user nobody -- bash -c '...'"
"$BIN" run --config "$CFG" --workload demo --user nobody -- bash -c "$AGENT"

PSQL="psql -X -w -h 127.0.0.1 -p $PGPORT -d app"
step "psql as the agent, with no password, against the real database address: emails come back masked"
echo "\$ loopgate run --workload demo --user nobody -- $PSQL -c 'SELECT * FROM customers'"
"$BIN" run --config "$CFG" --workload demo --user nobody -- $PSQL -c 'SELECT * FROM customers'

step "a DROP is denied by rule demo-db (SQLSTATE 42501); the table is still there"
"$BIN" run --config "$CFG" --workload demo --user nobody -- $PSQL -c 'DROP TABLE customers' || true
"$BIN" run --config "$CFG" --workload demo --user nobody -- $PSQL -Atc 'SELECT count(*) AS rows_still_there FROM customers'

step "a DELETE without WHERE waits for a human; an approver approves it from the CLI"
"$BIN" run --config "$CFG" --workload demo --user nobody -- $PSQL -c 'DELETE FROM customers' &
AGENT_PID=$!
for _ in $(seq 100); do
	ID=$("$BIN" approvals list --socket "$WORK/api.sock" --json | sed -n 's/.*"id":"\(apr_[0-9a-f]*\)".*/\1/p' | head -1)
	[ -n "$ID" ] && break
	sleep 0.1
done
"$BIN" approvals list --socket "$WORK/api.sock"
echo "\$ loopgate approvals approve --reason 'demo cleanup' $ID"
"$BIN" approvals approve --socket "$WORK/api.sock" --reason "demo cleanup" "$ID"
wait $AGENT_PID

SSH="ssh -F none -o StrictHostKeyChecking=yes -o UserKnownHostsFile=$WORK/known_hosts -o GlobalKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR -p $SSHPORT $SSHUSER@127.0.0.1"
step "ssh as the agent, with no key, checking the host strictly against loopgate's host CA"
echo "\$ loopgate ssh known-hosts > $WORK/known_hosts"
"$BIN" ssh known-hosts --config "$CFG" >"$WORK/known_hosts"
chmod 644 "$WORK/known_hosts"
cat "$WORK/known_hosts"
echo "\$ loopgate run --workload demo --user nobody -- $SSH 'uname -a'"
"$BIN" run --config "$CFG" --workload demo --user nobody -- $SSH 'uname -a'
echo "(sshd: $(grep -o 'Accepted certificate ID "[^"]*"' "$WORK/sshd/sshd.log" | tail -1))"

step "an ssh 'rm -rf' is a write, denied by rule demo-ssh before it reaches the host (exit 126)"
echo "\$ loopgate run --workload demo --user nobody -- $SSH 'rm -rf /tmp/x'"
rc=0
"$BIN" run --config "$CFG" --workload demo --user nobody -- $SSH 'rm -rf /tmp/x' || rc=$?
echo "(exit status $rc)"
[ "$rc" = 126 ] || { echo "expected exit status 126" >&2; exit 1; }

URL=https://localhost:$HTTPSPORT
step "curl as the agent over HTTPS: its env holds a placeholder, loopgate injects the real bearer"
echo "\$ loopgate run --workload demo --user nobody -- sh -c 'echo \"DEMO_TOKEN=\$DEMO_TOKEN\"; curl -sS -H \"Authorization: Bearer \$DEMO_TOKEN\" $URL/hello'"
"$BIN" run --config "$CFG" --workload demo --user nobody -- sh -c \
	"echo \"DEMO_TOKEN=\$DEMO_TOKEN\"; curl -sS --max-time 20 -H \"Authorization: Bearer \$DEMO_TOKEN\" $URL/hello"
echo "what nginx saw: $(tail -1 "$NGX/access.log")"

step "an HTTPS DELETE is denied by rule demo-api (403, never sent to the target)"
echo "\$ loopgate run --workload demo --user nobody -- curl -sS -X DELETE $URL/items/1"
OUT=$("$BIN" run --config "$CFG" --workload demo --user nobody -- curl -sS --max-time 20 -X DELETE -w '(HTTP %{http_code})' "$URL/items/1")
echo "$OUT"
case "$OUT" in *'(HTTP 403)') ;; *) echo "expected HTTP 403" >&2; exit 1 ;; esac
echo "nginx's access log (the DELETE never reached it):"
cat "$NGX/access.log"

step "the same client in workload 'intruder', which no rule lets in: denied, recorded"
"$BIN" run --config "$CFG" --workload intruder --user nobody -- bash -c "$AGENT" || echo "(denied by policy)"
"$BIN" policy explain --config "$CFG" --workload intruder --target echo || true

step "stop the daemon: the workload now fails closed, never direct"
kill -TERM "$DAEMON"; wait "$DAEMON" || true; DAEMON=
"$BIN" run --config "$CFG" --workload demo --user nobody -- bash -c "$AGENT" || echo "(refused, as it should be)"

step "recorded sessions"
"$BIN" sessions list --config "$CFG"
echo
"$BIN" sessions list --config "$CFG" --json

step "the hash-chained event log, and its verification"
"$BIN" sessions export --config "$CFG" --format text
"$BIN" audit verify --config "$CFG"
