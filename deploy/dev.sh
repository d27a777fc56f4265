#!/usr/bin/env bash
# Runs Berth on this host with the embedded defaults: a coordinator (SQLite in the dev
# directory, plaintext on loopback) and an agent (the local Docker engine), until Ctrl-C.
#
#   deploy/dev.sh                      # state in ./.berth-dev, coordinator on 127.0.0.1:7400
#   BERTH_DEV_DIR=/tmp/b BERTH_DEV_PORT=7500 deploy/dev.sh
#
# Then, in another shell:  eval "$(cat .berth-dev/env)"; target/debug/berth hosts list
# Archives go to .berth-dev/archives, made of app directories under .berth-dev/apps:
#   target/debug/berth archive create --host "$(hostname -s)" --app myapp --wait
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=$(realpath -m "${BERTH_DEV_DIR:-.berth-dev}")
PORT=${BERTH_DEV_PORT:-7400}
BIN=${BERTH_BIN_DIR:-target/debug}
[ -n "${BERTH_DEV_NO_BUILD:-}" ] || cargo build --quiet -p berth-coordinator -p berth-agent -p berth-cli --bins
mkdir -p "$DIR"
HOST_ID=${BERTH_DEV_HOST_ID:-$(hostname -s | tr -c 'A-Za-z0-9._\n-' '-' | sed 's/^[.-]*//')}
HOST_ID=${HOST_ID:-dev-host}

cat > "$DIR/coordinator.toml" <<TOML
# Development coordinator written by deploy/dev.sh: loopback only, no TLS.
listen = "127.0.0.1:$PORT"
data_dir = "$DIR/coordinator"
insecure_plaintext = true
heartbeat_interval_secs = 2
heartbeat_timeout_secs = 6

[sagas]
# The demo saga kind (`berth sagas start demo …`), for trying the engine out.
demo = true

[archive]
# The agent below writes here too: a local folder stands in for Spaces or S3.
store_url = "file://$DIR/archives"
keep_last = 10
TOML
cat > "$DIR/agent.toml" <<TOML
# Development agent written by deploy/dev.sh.
coordinator_url = "http://127.0.0.1:$PORT"
token_file = "$DIR/agent.token"
host_id = "$HOST_ID"
state_dir = "$DIR/agent"
warm_root = "$DIR/warm"
apps_root = "$DIR/apps"
reconnect_max_backoff_ms = 1000

[archive]
store_url = "file://$DIR/archives"
TOML

coordinator=("$BIN/berth-coordinator" --config "$DIR/coordinator.toml")
umask 077
[ -s "$DIR/admin.token" ] || "${coordinator[@]}" token create --role admin --description "dev admin" > "$DIR/admin.token"
[ -s "$DIR/agent.token" ] || "${coordinator[@]}" token create --role agent --host "$HOST_ID" --description "dev agent" > "$DIR/agent.token"
printf 'export BERTH_COORDINATOR=http://127.0.0.1:%s BERTH_TOKEN_FILE=%s\n' "$PORT" "$DIR/admin.token" > "$DIR/env"

pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait' INT TERM EXIT
"${coordinator[@]}" & pids+=($!); echo $! > "$DIR/coordinator.pid"
"$BIN/berth-agent" --config "$DIR/agent.toml" & pids+=($!); echo $! > "$DIR/agent.pid"
echo "berth: coordinator on 127.0.0.1:$PORT, agent for host $HOST_ID; state in $DIR" >&2
echo "berth: in another shell: eval \"\$(cat $DIR/env)\"; $BIN/berth hosts list" >&2
wait
