#!/bin/bash
# make demo: start loopgate on a sample config with two local targets it
# starts itself (an echo server and PostgreSQL), run unmodified clients
# (bash's /dev/tcp, psql) in a workload: a relayed session, a masked column,
# a denied DROP, a DELETE approved from the CLI, a workload no rule admits,
# the daemon down failing closed; then print the records and verify them.
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
	"$BIN" teardown --config "$CFG" >/dev/null 2>&1
	rm -rf "$WORK"
}
trap cleanup EXIT

PGBIN=$(ls -d /usr/lib/postgresql/*/bin | tail -1)
# Below the kernel's ephemeral range (32768-60999 by default): a port in it
# can be taken for a moment by any outgoing connection, and the start fails.
PGPORT=25432
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
