#!/usr/bin/env bash
# Install (or remove) the device parts of edge: Debian packages, the service users, the state directory,
# the config, udev rules, PAM, Raspberry Pi boot settings and the systemd units; then enable and start.
#
#   scripts/install-device.sh [--root DIR] [--platform pi|jetson|generic] [--coral] [--kiosk]
#   scripts/install-device.sh --uninstall [--root DIR]
#
# Usually run as `sudo ./setup.sh --device [--coral] [--kiosk]` on the device, which makes the venv first.
#   --coral     also install the Coral Edge TPU runtime (libedgetpu1-std, from Coral's apt repository)
#   --kiosk     also install cage + chromium and enable edge-kiosk.service (the full-screen browser)
#   --platform  pi | jetson | generic (default: detected from the device tree)
#   --root DIR  install into a folder laid out like the device's filesystem instead of / (tests, images):
#               no package manager runs, no user is created, nothing is started
#   --uninstall remove what was installed and put the backups back
#
# Every file replaced is first backed up as FILE.edge-backup (once: the backup is the file as it was before
# edge); /etc/edge/config.toml is never overwritten; re-running changes nothing that is already in place.
# What was installed is listed in /etc/edge/.install-manifest, which --uninstall reads. The checkout is
# expected at /opt/edge; anywhere else (except under /home or /root, hidden from the service by
# ProtectHome=), that path is replaced by the checkout's in the unit and the config as they are installed.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
root=/ platform="" coral=0 kiosk=0 uninstall=0
while [ $# -gt 0 ]; do
  case "$1" in
    --root) root="${2:?--root needs a folder}"; shift ;;
    --platform) platform="${2:?--platform needs pi, jetson or generic}"; shift ;;
    --coral) coral=1 ;;
    --kiosk) kiosk=1 ;;
    --uninstall) uninstall=1 ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "install-device: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
say() { printf 'device: %s\n' "$*"; }
die() { printf 'install-device: %s\n' "$*" >&2; exit 1; }

live=0 prefix=""
if [ "$root" = / ]; then live=1; else mkdir -p "$root"; prefix=$(cd "$root" && pwd); fi
if [ "$live" = 1 ] && [ "$(id -u)" != 0 ]; then die "run as root on the device (sudo ./setup.sh --device)"; fi

. "$here/scripts/platform.sh"
[ -n "$platform" ] || platform=$(detect_platform)
case "$platform" in pi|jetson|generic) ;; *) die "--platform must be pi, jetson or generic (got $platform)" ;; esac

manifest_path=/etc/edge/.install-manifest
manifest="$prefix$manifest_path"
manifest_has() { [ -e "$manifest" ] && grep -qxF "$1" "$manifest"; }
manifest_add() { manifest_has "$1" || echo "$1" >> "$manifest"; }
boot_marker="# edge: camera and display settings (added by setup.sh --device, removed by setup.sh --uninstall)"

# --- uninstall -------------------------------------------------------------------------------------------
remove_boot_block() {  # FILE: drop the three lines we appended, leave everything else as it is now
  local file=$1 tmp
  tmp=$(mktemp)
  awk -v marker="$boot_marker" '
    $0 == marker { skip = 2; next }
    skip > 0 && ($0 == "[all]" || $0 == "include edge.txt") { skip--; next }
    { skip = 0; print }' "$file" > "$tmp"
  cat "$tmp" > "$file"
  rm -f "$tmp"
}

uninstall_all() {
  if [ ! -e "$manifest" ]; then say "nothing to uninstall: no $manifest_path"; return 0; fi
  if [ "$live" = 1 ]; then
    systemctl disable --now edge-kiosk.service 2>/dev/null || true
    systemctl disable --now edge.service 2>/dev/null || true
    # the kiosk took tty1 from its login prompt (Conflicts=getty@tty1): give it back now, not at the next boot
    systemctl start getty@tty1.service 2>/dev/null || true
  fi
  local kind path dest
  while read -r kind path; do
    dest="$prefix$path"
    case "$kind" in
      file)
        rm -f "$dest"
        if [ -e "$dest.edge-backup" ]; then mv "$dest.edge-backup" "$dest"; say "restored $path from its backup"
        else say "removed $path"; fi
        case "$path" in */edge.service.d/*) rmdir "$(dirname "$dest")" 2>/dev/null || true ;; esac ;;
      block)
        [ -e "$dest" ] || continue
        remove_boot_block "$dest"
        if [ -e "$dest.edge-backup" ] && cmp -s "$dest" "$dest.edge-backup"; then
          rm -f "$dest.edge-backup"; say "removed the edge lines from $path (now as before edge)"
        elif [ -e "$dest.edge-backup" ]; then
          say "removed the edge lines from $path; it changed since, so the original stays in $path.edge-backup"
        else say "removed the edge lines from $path"; fi ;;
      config) say "kept $path (your settings)" ;;
    esac
  done < "$manifest"
  rm -f "$manifest"
  if [ "$live" = 1 ]; then
    systemctl daemon-reload
    udevadm control --reload-rules 2>/dev/null || true
  fi
  say "kept /etc/edge/config.toml, the state in /var/lib/edge and the users edge/edge-kiosk; to remove them too:"
  say "  sudo rm -r /etc/edge /var/lib/edge; sudo userdel edge; sudo userdel edge-kiosk"
  say "uninstalled"
}

if [ "$uninstall" = 1 ]; then uninstall_all; exit 0; fi

# --- checks on a live device -----------------------------------------------------------------------------
if [ "$live" = 1 ]; then
  case "$here/" in
    /home/*|/root/*) die "the checkout $here is under /home or /root, which edge.service cannot see (ProtectHome=yes): move it to /opt/edge" ;;
  esac
  [ -x "$here/.venv/bin/edge" ] || die "$here/.venv/bin/edge is missing: run sudo ./setup.sh --device, which makes the venv first"
fi

# --- Debian packages (live only) -------------------------------------------------------------------------
apt_install() {  # PACKAGE...: install the ones that are missing
  local missing=() pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -gt 0 ] || return 0
  say "installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
has_candidate() { apt-cache policy "$1" 2>/dev/null | grep -q 'Candidate: [^(]'; }

if [ "$live" = 1 ]; then
  packages=()
  [ "$platform" = pi ] && packages+=(python3-picamera2)
  if [ "$kiosk" = 1 ]; then
    packages+=(cage)
    # Raspberry Pi OS builds chromium with its hardware video support; its package name changed over time.
    if has_candidate chromium; then packages+=(chromium); else packages+=(chromium-browser); fi
  fi
  if [ "$coral" = 1 ]; then
    if ! has_candidate libedgetpu1-std; then
      # Coral's documented apt repository (https://coral.ai/docs/accelerator/get-started/).
      say "adding Coral's apt repository for libedgetpu1-std"
      apt_install curl gnupg ca-certificates
      curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg | gpg --dearmor --yes -o /usr/share/keyrings/coral-edgetpu.gpg
      echo "deb [signed-by=/usr/share/keyrings/coral-edgetpu.gpg] https://packages.cloud.google.com/apt coral-edgetpu-stable main" \
        > /etc/apt/sources.list.d/coral-edgetpu.list
      apt-get update -qq
    fi
    packages+=(libedgetpu1-std)  # the M.2/PCIe Coral also needs the gasket-dkms driver: see docs/operator-guide.md
  fi
  if [ ${#packages[@]} -gt 0 ]; then apt_install "${packages[@]}"; fi
fi

# --- users and state directory ---------------------------------------------------------------------------
existing_groups() { local g out=(); for g in "$@"; do getent group "$g" >/dev/null && out+=("$g"); done; (IFS=,; echo "${out[*]}"); }
if [ "$live" = 1 ]; then
  getent group edge >/dev/null || groupadd --system edge
  if ! id edge >/dev/null 2>&1; then
    useradd --system --gid edge --home-dir /var/lib/edge --no-create-home \
      --shell /usr/sbin/nologin --comment "edge skin-screening daemon" edge
    say "created user edge"
  fi
  if [ -n "$(existing_groups video)" ]; then usermod -a -G video edge; fi
  if [ "$kiosk" = 1 ] && ! id edge-kiosk >/dev/null 2>&1; then
    useradd --system --user-group --home-dir /var/lib/edge-kiosk \
      --no-create-home --shell /usr/sbin/nologin --comment "edge kiosk browser" edge-kiosk
    say "created user edge-kiosk"
  fi
  kiosk_groups=$(existing_groups video render input)
  if [ "$kiosk" = 1 ] && [ -n "$kiosk_groups" ]; then usermod -a -G "$kiosk_groups" edge-kiosk; fi
  install -d -m 0750 -o edge -g edge /var/lib/edge
else
  install -d -m 0750 "$prefix/var/lib/edge"
fi
install -d -m 0755 "$prefix/etc/edge"

# --- files -----------------------------------------------------------------------------------------------
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
changed=0

render() {  # SRC: a copy with /opt/edge replaced by this checkout's path; prints the copy's path
  local out
  out="$tmp/$(echo "$1" | tr / _)"
  if [ "$here" = /opt/edge ]; then cp "$1" "$out"; else sed "s#/opt/edge#$here#g" "$1" > "$out"; fi
  echo "$out"
}

install_file() {  # SRC PATH MODE [GROUP]: SRC to PATH on the target; a file there that is not ours is backed up.
  # MODE "-": leave modes alone (the Pi's FAT boot partition has none and refuses chmod).
  local src=$1 path=$2 mode=$3 group=${4:-root} dest="$prefix$2"
  mkdir -p "$(dirname "$dest")"
  if [ -e "$dest" ] && ! manifest_has "file $path" && [ ! -e "$dest.edge-backup" ]; then
    cp "$dest" "$dest.edge-backup"
    say "backed up $path as $path.edge-backup"
  fi
  if [ -e "$dest" ] && cmp -s "$src" "$dest" && { [ "$mode" = - ] || [ "$(stat -c %a "$dest")" = "${mode#0}" ]; }; then
    say "unchanged $path"
  else
    if [ "$mode" = - ]; then
      cp "$src" "$dest"
    else
      install -m "$mode" "$src" "$dest"
      if [ "$live" = 1 ]; then chgrp "$group" "$dest"; fi
    fi
    say "installed $path"
    changed=1
  fi
  manifest_add "file $path"
}

# The settings: installed once, then they belong to the operator (mode 0640: they may hold a broker password).
config_src="$here/firmware_config/etc/edge/config.toml"
[ "$platform" = jetson ] && config_src="$here/firmware_config/jetson/config.toml"
if [ -e "$prefix/etc/edge/config.toml" ]; then
  say "kept existing /etc/edge/config.toml"
else
  install -m 0640 "$(render "$config_src")" "$prefix/etc/edge/config.toml"
  [ "$live" = 1 ] && chgrp edge "$prefix/etc/edge/config.toml"
  manifest_add "config /etc/edge/config.toml"
  say "installed /etc/edge/config.toml (edit it, then: sudo systemctl restart edge)"
  changed=1
fi

# Everything else under firmware_config/etc mirrors /etc (udev rules, PAM for the kiosk).
while IFS= read -r -d '' src; do
  rel=${src#"$here/firmware_config/"}
  [ "$rel" = etc/edge/config.toml ] && continue
  install_file "$src" "/$rel" 0644
done < <(find "$here/firmware_config/etc" -type f -print0 | sort -z)

# The kiosk unit runs the browser by its path. Debian and Raspberry Pi OS install /usr/bin/chromium (some
# older images only chromium-browser); on Ubuntu both names are snap launchers that cage cannot run as a service.
# Detected on every live install, not only with --kiosk: a later `setup.sh --device` (an update) rewrites the
# kiosk unit too, and must not point it back at /usr/bin/chromium on an image that only has chromium-browser.
browser=/usr/bin/chromium
if [ "$live" = 1 ]; then
  found=$(command -v chromium || command -v chromium-browser || true)
  snap=0
  if [ -n "$found" ]; then
    case "$(readlink -f "$found")" in /snap/*|*/snap) snap=1 ;; esac
    grep -qs "snap" "$found" && [ "$(head -c 2 "$found")" = "#!" ] && snap=1
  fi
  if [ "$kiosk" = 1 ]; then
    [ -n "$found" ] || die "--kiosk: no chromium or chromium-browser binary after installing the package"
    [ "$snap" = 0 ] || die "--kiosk: $found only starts the chromium snap, which cannot run under cage as a system service; install a deb build of chromium"
  fi
  [ -n "$found" ] && [ "$snap" = 0 ] && browser=$found
fi
for unit in "$here"/systemd/*.service; do
  rendered=$(render "$unit")
  [ "$browser" = /usr/bin/chromium ] || sed -i "s# /usr/bin/chromium # $browser #" "$rendered"
  install_file "$rendered" "/etc/systemd/system/$(basename "$unit")" 0644
done
# The kiosk browser's Chromium policy, with --kiosk only (it applies to every Chromium on the machine): no
# downloads (the history's CSV or a saved page would land in the kiosk user's home, where no purge reaches
# them), no "Save as PDF" in the print dialog (a real printer still works), no developer tools, and no saving
# of what is typed into forms.
# Debian's chromium reads /etc/chromium/policies; Raspberry Pi OS's older chromium-browser builds are said to
# read /etc/chromium-browser/policies (not checked on a device): both get it.
if [ "$kiosk" = 1 ]; then
  for policies in /etc/chromium/policies/managed /etc/chromium-browser/policies/managed; do
    install_file "$here/firmware_config/kiosk/chromium-policy.json" "$policies/edge-kiosk.json" 0644
  done
fi
if [ "$platform" = jetson ]; then
  install_file "$here/firmware_config/jetson/edge.service.d/jetson.conf" /etc/systemd/system/edge.service.d/jetson.conf 0644
fi

# Raspberry Pi: camera and display settings in /boot/firmware/edge.txt, included from config.txt.
boot_pending=0
if [ "$platform" = pi ]; then
  boot=/boot/firmware
  [ "$live" = 1 ] && [ ! -e /boot/firmware/config.txt ] && [ -e /boot/config.txt ] && boot=/boot  # before Bookworm
  install_file "$here/firmware_config/boot/firmware/edge.txt" "$boot/edge.txt" -
  config_txt="$prefix$boot/config.txt"
  if [ ! -e "$config_txt" ]; then
    say "no $boot/config.txt: add the line 'include edge.txt' to it by hand"
  elif grep -qxF "include edge.txt" "$config_txt"; then
    say "unchanged $boot/config.txt (includes edge.txt)"
  else
    [ -e "$config_txt.edge-backup" ] || cp "$config_txt" "$config_txt.edge-backup"
    [ -n "$(tail -c1 "$config_txt")" ] && echo >> "$config_txt"
    printf '%s\n[all]\ninclude edge.txt\n' "$boot_marker" >> "$config_txt"
    manifest_add "block $boot/config.txt"
    say "added 'include edge.txt' to $boot/config.txt (backup: $boot/config.txt.edge-backup)"
    boot_pending=1 changed=1
  fi
fi

# --- start (live only) -----------------------------------------------------------------------------------
if [ "$live" = 0 ]; then
  [ "$changed" = 0 ] && say "nothing changed: every file was already in place"
  say "device files for $platform laid out under $prefix; nothing started"
  exit 0
fi
udevadm control --reload-rules 2>/dev/null || true
udevadm trigger --subsystem-match=video4linux --subsystem-match=media --subsystem-match=dma_heap \
  --subsystem-match=usb --subsystem-match=apex 2>/dev/null || true
runuser -u edge -- "$here/.venv/bin/edge" --version >/dev/null 2>&1 \
  || die "the user edge cannot run $here/.venv/bin/edge: make $here readable by others (chmod -R o+rX $here)"
systemctl daemon-reload
systemctl enable edge.service
say "starting edge.service (waits until the daemon reports ready) ..."
if ! systemctl restart edge.service; then
  say "edge.service did not start. Look at: journalctl -u edge -n 50 --no-pager"
  say "and run: sudo -u edge $here/.venv/bin/edge doctor --config /etc/edge/config.toml"
  exit 1
fi
if [ "$kiosk" = 1 ]; then
  systemctl enable edge-kiosk.service
  systemctl restart edge-kiosk.service || say "edge-kiosk.service did not start: journalctl -u edge-kiosk -n 50 --no-pager"
fi
say "edge is running. Check it with:"
say "  systemctl status edge            (the STATUS line says what it is doing)"
say "  journalctl -u edge -f            (its log)"
say "  sudo -u edge $here/.venv/bin/edge doctor --config /etc/edge/config.toml"
[ "$kiosk" = 1 ] && say "  systemctl status edge-kiosk      (the browser on the screen)"
[ "$boot_pending" = 1 ] && say "reboot once for the camera and display settings in /boot/firmware/edge.txt: sudo reboot"
[ "$changed" = 0 ] && say "(no file changed: every one was already in place)"
say "done"
