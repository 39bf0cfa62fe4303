#!/usr/bin/env bash
# Install the device parts: service user, state directory, config, udev rules and systemd units.
# Every file replaced is first backed up as FILE.edge-backup. `--root DIR` installs into a folder
# laid out like the device's filesystem instead of / (used by the tests; nothing is started then).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
root=/
while [ $# -gt 0 ]; do
  case "$1" in
    --root) root="${2:?--root needs a folder}"; shift ;;
    *) echo "install-device: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
live=0; [ "$root" = / ] && live=1
if [ "$live" = 1 ] && [ "$(id -u)" != 0 ]; then
  echo "install-device: run as root on the device (sudo ./setup.sh --device)" >&2; exit 1
fi
say() { printf 'device: %s\n' "$*"; }

install_file() {  # SRC DEST MODE: copy with a backup of anything different already there
  local src=$1 dest=$2 mode=$3
  mkdir -p "$(dirname "$dest")"
  if [ -e "$dest" ] && ! cmp -s "$src" "$dest"; then
    [ -e "$dest.edge-backup" ] || cp -p "$dest" "$dest.edge-backup"
    say "backed up $dest"
  fi
  install -m "$mode" "$src" "$dest"
  say "installed $dest"
}

if [ "$live" = 1 ] && ! id edge >/dev/null 2>&1; then
  useradd --system --home-dir /var/lib/edge --shell /usr/sbin/nologin --groups video edge
  say "created user edge"
fi
mkdir -p "$root/var/lib/edge"
[ "$live" = 1 ] && chown edge:edge /var/lib/edge

# firmware_config/ mirrors the device filesystem; config.toml is only installed when absent (operator edits it).
while IFS= read -r -d '' src; do
  rel=${src#"$here/firmware_config/"}
  case "$rel" in
    etc/edge/config.toml) [ -e "$root/$rel" ] && { say "kept existing /$rel"; continue; } ;;
  esac
  case "$rel" in boot/*|jetson/*) continue ;; esac  # applied by hand: see docs
  install_file "$src" "$root/$rel" 0644
done < <(find "$here/firmware_config" -type f -print0)

for unit in "$here"/systemd/*.service; do
  [ -e "$unit" ] || continue
  install_file "$unit" "$root/etc/systemd/system/$(basename "$unit")" 0644
done

if [ "$live" = 1 ]; then
  udevadm control --reload-rules 2>/dev/null || true
  if [ -e /etc/systemd/system/edge.service ]; then
    systemctl daemon-reload
    systemctl enable --now edge.service
    say "check it with: systemctl status edge; journalctl -u edge"
  fi
fi
say "done"
