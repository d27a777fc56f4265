#!/usr/bin/env bash
# Installs the command-line tools the tests run beside Berth from Debian's packages, when any
# is missing: GNU tar, zstd and age with age-keygen for the interop tests, and mkfs.xfs
# (xfsprogs) for the reflinked-spare test on an XFS loop filesystem.
set -euo pipefail
missing=()
for tool in tar zstd age age-keygen mkfs.xfs; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if ((${#missing[@]})); then
  echo "installing tar, zstd, age and xfsprogs from Debian's packages (missing: ${missing[*]})" >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tar zstd age xfsprogs) >&2
fi
