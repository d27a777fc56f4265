#!/usr/bin/env bash
# Makes sure a Docker engine answers; starts one without networking if the machine has none
# running. Prints `export DOCKER_HOST=…` when it had to start its own.
set -euo pipefail
if docker info >/dev/null 2>&1; then exit 0; fi
if ! command -v dockerd >/dev/null; then
  echo "installing Docker from Debian's packages" >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io) >&2
fi
sock=/tmp/berth-docker.sock
if ! DOCKER_HOST=unix://$sock docker info >/dev/null 2>&1; then
  echo "starting a private Docker engine on $sock" >&2
  nohup dockerd --bridge=none --iptables=false --ip-forward=false --ip-masq=false \
    --data-root /tmp/berth-docker-root --exec-root /tmp/berth-docker-exec \
    -H unix://$sock --pidfile /tmp/berth-dockerd.pid >/tmp/berth-dockerd.log 2>&1 &
  for _ in $(seq 1 60); do
    DOCKER_HOST=unix://$sock docker info >/dev/null 2>&1 && break
    sleep 0.5
  done
  DOCKER_HOST=unix://$sock docker info >/dev/null || { echo "the Docker engine did not start; see /tmp/berth-dockerd.log" >&2; exit 1; }
fi
echo "export DOCKER_HOST=unix://$sock"
