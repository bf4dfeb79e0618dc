#!/bin/bash
# make demo: start loopgate on a sample config with a local echo target,
# run an unmodified client (bash's /dev/tcp) in the workload, show that the
# daemon being down fails closed, print the recorded sessions, clean up.
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
	[ -n "${DAEMON:-}" ] && kill -TERM "$DAEMON" 2>/dev/null && wait "$DAEMON" 2>/dev/null
	[ -n "${ECHO:-}" ] && kill "$ECHO" 2>/dev/null && wait "$ECHO" 2>/dev/null
	"$BIN" teardown --config "$CFG" >/dev/null 2>&1
	rm -rf "$WORK"
}
trap cleanup EXIT

cat >"$CFG" <<YAML
listen: 127.0.0.1:15001
store: $WORK/loopgate.db
bpffs: /sys/fs/bpf/loopgate-demo
daemon_cgroup: loopgate-demo.daemon
targets:
  - name: echo
    protocol: tcp
    address: $TARGET
workloads:
  - name: demo
    cgroup: loopgate-demo/agent
    default: allow
  - name: intruder
    cgroup: loopgate-demo/intruder
rules:
  - id: demo-echo
    workloads: [demo]
    targets: [echo]
    allow: [connect]
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
