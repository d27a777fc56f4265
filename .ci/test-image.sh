#!/usr/bin/env bash
# Builds the image the tests' containers run, with no registry: Debian's busybox-static in an
# otherwise empty rootfs, imported as berth-test-busybox:latest. Idempotent.
set -euo pipefail
IMAGE=berth-test-busybox:latest
docker image inspect "$IMAGE" >/dev/null 2>&1 && exit 0
if [ ! -x /bin/busybox ]; then
  (apt-get install -y -qq busybox-static || { apt-get update -qq && apt-get install -y -qq busybox-static; }) >&2
fi
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/tmp"
cp /bin/busybox "$root/bin/busybox"
for cmd in sh sleep cat ls echo true; do ln -s busybox "$root/bin/$cmd"; done
tar -C "$root" -c . | docker import - "$IMAGE" >/dev/null
echo "built $IMAGE" >&2
