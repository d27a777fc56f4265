#!/usr/bin/env bash
# Runs Berth on this host with the embedded defaults: a coordinator (SQLite in the dev
# directory, plaintext on loopback) and an agent (the local Docker engine), until Ctrl-C.
#
#   deploy/dev.sh                      # state in ./.berth-dev, coordinator on 127.0.0.1:7400
#   BERTH_DEV_DIR=/tmp/b BERTH_DEV_PORT=7500 deploy/dev.sh
#   BERTH_DEV_DO_SIM=1 deploy/dev.sh   # also the DigitalOcean simulator (do-sim), for droplets
#
# Then, in another shell:  eval "$(cat .berth-dev/env)"; target/debug/berth hosts list
# Archives go to .berth-dev/archives, made of app directories under .berth-dev/apps:
#   target/debug/berth archive create --host "$(hostname -s)" --app myapp --wait
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=$(realpath -m "${BERTH_DEV_DIR:-.berth-dev}")
PORT=${BERTH_DEV_PORT:-7400}
WEB_PORT=${BERTH_DEV_WEB_PORT:-$((PORT + 1))}
BIN=${BERTH_BIN_DIR:-target/debug}
SIM_PORT=${BERTH_DEV_DO_SIM_PORT:-8800}
if [ -z "${BERTH_DEV_NO_BUILD:-}" ]; then
  cargo build --quiet -p berth-coordinator -p berth-agent -p berth-cli --bins
  [ -z "${BERTH_DEV_DO_SIM:-}" ] || cargo build --quiet -p berth-tests --bin do-sim
fi
mkdir -p "$DIR"
HOST_ID=${BERTH_DEV_HOST_ID:-$(hostname -s | tr -c 'A-Za-z0-9._\n-' '-' | sed 's/^[.-]*//')}
HOST_ID=${HOST_ID:-dev-host}

cat > "$DIR/coordinator.toml" <<TOML
# Development coordinator written by deploy/dev.sh: loopback only, no TLS.
listen = "127.0.0.1:$PORT"
data_dir = "$DIR/coordinator"
insecure_plaintext = true
# The web console: http://127.0.0.1:$WEB_PORT (sign in with the admin token in admin.token).
web_listen = "127.0.0.1:$WEB_PORT"
heartbeat_interval_secs = 2
heartbeat_timeout_secs = 6

[sagas]
# The demo saga kind ("berth sagas start demo ..."), for trying the engine out.
demo = true

[archive]
# The agent below writes here too: a local folder stands in for Spaces or S3.
store_url = "file://$DIR/archives"
keep_last = 10
TOML
if [ -n "${BERTH_DEV_DO_SIM:-}" ]; then
  (umask 077; [ -s "$DIR/do.token" ] || head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$DIR/do.token")
  cat >> "$DIR/coordinator.toml" <<TOML

# The DigitalOcean simulator started below (BERTH_DEV_DO_SIM=1), with droplets active in
# seconds: droplet sagas and drift work as against the real API.
[digitalocean]
api_url = "http://127.0.0.1:$SIM_PORT"
provisioning_token_file = "$DIR/do.token"

[droplets]
poll_interval_ms = 300
lookup_attempts = 3
lookup_interval_ms = 300
TOML
fi
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
if [ -n "${BERTH_DEV_DO_SIM:-}" ]; then
  "$BIN/do-sim" --listen "127.0.0.1:$SIM_PORT" --token-file "$DIR/do.token" --timings fast & pids+=($!)
fi
"${coordinator[@]}" & pids+=($!); echo $! > "$DIR/coordinator.pid"
"$BIN/berth-agent" --config "$DIR/agent.toml" & pids+=($!); echo $! > "$DIR/agent.pid"
echo "berth: coordinator on 127.0.0.1:$PORT, agent for host $HOST_ID; state in $DIR" >&2
echo "berth: web console on http://127.0.0.1:$WEB_PORT (sign in with the token in $DIR/admin.token)" >&2
echo "berth: in another shell: eval \"\$(cat $DIR/env)\"; $BIN/berth hosts list" >&2
wait
