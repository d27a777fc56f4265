#!/usr/bin/env bash
# Installs the command-line tools the interop tests run beside Berth (GNU tar, zstd, and
# age with age-keygen) from Debian's packages, when any is missing.
set -euo pipefail
missing=()
for tool in tar zstd age age-keygen; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if ((${#missing[@]})); then
  echo "installing tar, zstd and age from Debian's packages (missing: ${missing[*]})" >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tar zstd age) >&2
fi
