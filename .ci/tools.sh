#!/usr/bin/env bash
# Installs the command-line tools the tests run beside Berth from Debian's packages, when any
# is missing: GNU tar, zstd and age with age-keygen for the interop tests, mkfs.xfs
# (xfsprogs) for the reflinked-spare test on an XFS loop filesystem, promtool (Debian's
# prometheus package) for the alert rules in deploy/prometheus, and chromium with chromedriver
# for the web console's browser tests.
set -euo pipefail
missing=()
for tool in tar zstd age age-keygen mkfs.xfs; do
  command -v "$tool" >/dev/null || missing+=("$tool")
done
if ((${#missing[@]})); then
  echo "installing tar, zstd, age and xfsprogs from Debian's packages (missing: ${missing[*]})" >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tar zstd age xfsprogs) >&2
fi
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  echo "installing chromium and chromedriver from Debian's packages (the web console's browser tests)" >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) >&2
fi
if ! command -v promtool >/dev/null; then
  echo "installing promtool from Debian's prometheus package" >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus) >&2
fi
