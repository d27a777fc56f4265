#!/usr/bin/env bash
# Installs one Berth program on a Debian/Ubuntu host: its binary, its systemd unit and its
# example config, and the `berth` CLI beside it, idempotently, under DESTDIR (default /). Run
# it again to upgrade.
#
#   deploy/install.sh --role agent                      # from target/release
#   deploy/install.sh --role coordinator --bin-dir DIR  # binaries built or downloaded elsewhere
#   deploy/install.sh --role cli                        # only the berth CLI (a laptop, a CI runner)
#   DESTDIR=/tmp/stage deploy/install.sh --role agent   # stage a tree; touches no service
#
# Layout: /usr/local/bin/berth, /usr/local/bin/berth-<role>,
# /usr/local/lib/systemd/system/berth-<role>.service
# (customise with drop-ins in /etc/systemd/system/berth-<role>.service.d/), /etc/berth/<role>.toml,
# /etc/berth/secrets/ (0700: the units' LoadCredential= sources), /etc/berth/tls/.
#
# The config is never overwritten once edited. The shipped example is recorded in
# /usr/local/share/berth/<role>.toml.example; when a new example differs from the recorded
# one, an unedited config is updated and an edited one is kept, with the new example written
# beside it as <role>.toml.new.
#
# Without DESTDIR it reloads systemd and restarts the service if it was running (an upgrade);
# it never enables or starts a service that was not running.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
role=""
bin_dir="$here/../target/release"

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
}

while [ $# -gt 0 ]; do
  case "$1" in
    --role) role=${2:-}; shift 2 ;;
    --role=*) role=${1#--role=}; shift ;;
    --bin-dir) bin_dir=${2:-}; shift 2 ;;
    --bin-dir=*) bin_dir=${1#--bin-dir=}; shift ;;
    -h|--help) usage ;;
    *) echo "install.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$role" in
  coordinator|agent|cli) ;;
  *) echo "install.sh: --role coordinator|agent|cli is required" >&2; exit 2 ;;
esac

dest=${DESTDIR:-}
dest=${dest%/}
program="berth-$role"
binary="$bin_dir/$program"
cli="$bin_dir/berth"
unit="$here/systemd/$program.service"
example="$here/config/$role.toml"
for b in "$cli" $([ "$role" = cli ] || echo "$binary"); do
  if [ ! -x "$b" ]; then
    package=$(basename "$b"); [ "$package" = berth ] && package=berth-cli
    echo "install.sh: no executable $b: build it with \`cargo build --release -p $package\` or pass --bin-dir" >&2
    exit 1
  fi
done
if [ "$role" != cli ]; then
  for f in "$unit" "$example"; do
    [ -f "$f" ] || { echo "install.sh: $f is missing from this checkout" >&2; exit 1; }
  done
fi

say() { echo "install.sh: $*"; }

# dir PATH MODE: creates PATH with MODE if absent; an existing directory keeps its mode.
dir() {
  if [ ! -d "$dest$1" ]; then
    install -d -m "$2" "$dest$1"
    say "created $1"
  fi
}

# put SRC DST MODE: copies SRC to DST (through a temporary file and a rename, so a running
# binary is replaced, not rewritten) unless DST already has the same content; then sets MODE.
# Sets changed=1 when it copied.
changed=0
put() {
  local src=$1 dst=$dest$2 mode=$3
  if [ -f "$dst" ] && cmp -s "$src" "$dst"; then
    [ "$(stat -c %a "$dst")" = "${mode#0}" ] || chmod "$mode" "$dst"
    return 0
  fi
  install -m "$mode" "$src" "$dst.tmp-install"
  mv -f "$dst.tmp-install" "$dst"
  changed=1
  say "installed $2"
}

dir /usr/local/bin 0755
put "$cli" /usr/local/bin/berth 0755
if [ "$role" = cli ]; then
  say "berth is in /usr/local/bin; point it at a coordinator with --coordinator or BERTH_COORDINATOR"
  exit 0
fi
changed=0 # the service restarts for its own files, not for the CLI's
dir /usr/local/lib/systemd/system 0755
dir /usr/local/share/berth 0755
dir /etc/berth 0755
dir /etc/berth/secrets 0700
dir /etc/berth/tls 0755
if [ "$role" = agent ]; then
  # The unit's ReadWritePaths=: the default warm_root and apps_root (archives live beside).
  dir /var/lib/ci-warm 0755
  dir /var/lib/berth 0755
  dir /var/lib/berth/apps 0750
fi

put "$binary" "/usr/local/bin/$program" 0755
put "$unit" "/usr/local/lib/systemd/system/$program.service" 0644
restart=$changed

# The config: see the header.
conf=/etc/berth/$role.toml
record=/usr/local/share/berth/$role.toml.example
if [ ! -e "$dest$conf" ]; then
  put "$example" "$conf" 0644
elif ! cmp -s "$example" "$dest$record"; then
  if cmp -s "$dest$conf" "$example"; then
    :
  elif [ -f "$dest$record" ] && cmp -s "$dest$conf" "$dest$record"; then
    put "$example" "$conf" 0644
    say "updated $conf to the new example (it was not edited)"
  else
    put "$example" "$conf.new" 0644
    say "kept your edited $conf; the shipped example changed: compare it with $conf.new"
  fi
fi
put "$example" "$record" 0644

if [ -n "$dest" ]; then
  say "staged $program under $dest; no service was touched"
  exit 0
fi
if [ ! -d /run/systemd/system ]; then
  say "systemd is not running here; start $program by hand"
  exit 0
fi
systemctl daemon-reload
if [ "$restart" = 1 ] && systemctl is-active --quiet "$program"; then
  systemctl restart "$program"
  say "restarted $program"
elif ! systemctl is-enabled --quiet "$program" 2>/dev/null; then
  case "$role" in
    agent) say "next: edit $conf (coordinator_url, [tls] ca_file), then
  berth-agent enroll --token-file ENROLLMENT_TOKEN_FILE   # (or the token on stdin) from: berth-coordinator token create --role agent --host HOST --enrollment
  systemctl enable --now $program" ;;
    coordinator) say "next: edit $conf, put secrets in /etc/berth/secrets/ (see the unit), then
  systemctl enable --now $program
  berth-coordinator --config $conf token create --role admin" ;;
  esac
fi
