#!/usr/bin/env bash
# Set up the edge daemon: Debian packages, a virtualenv in .venv, and the Python package with its extras.
# Idempotent: a second run checks what is there and installs nothing new (seconds, not minutes).
#
#   ./setup.sh                 run-time install for this machine (detects Raspberry Pi / Jetson)
#   ./setup.sh --dev           plus what the tests need (pytest, broker, browser ...)
#   ./setup.sh --train         plus TensorFlow for `edge train` (~1.5 GB)
#   ./setup.sh --device [--coral] [--kiosk]   (root, on the device) also install the service user, units,
#                              udev rules and config, then enable and start edge.service; --coral adds the
#                              Edge TPU runtime, --kiosk the full-screen browser (scripts/install-device.sh)
#   ./setup.sh --device --root DIR [--platform pi|jetson|generic]   only lay those files out under DIR
#   ./setup.sh --uninstall [--root DIR]   remove what --device installed and put the backups back
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cd "$here"

dev=0 train=0 device=0 uninstall=0 root="" platform="" device_flags=()
while [ $# -gt 0 ]; do
  case "$1" in
    --dev) dev=1 ;;
    --train) train=1 ;;
    --device) device=1 ;;
    --uninstall) uninstall=1 ;;
    --coral|--kiosk) device_flags+=("$1") ;;
    --platform) platform="${2:?--platform needs pi, jetson or generic}"; shift ;;
    --root) root="${2:?--root needs a folder}"; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

say() { printf 'setup: %s\n' "$*"; }

# Laying the device files out under a folder, or removing them, needs neither apt nor the venv.
if [ "$uninstall" = 1 ]; then
  exec "$here/scripts/install-device.sh" --uninstall --root "${root:-/}"
fi
if [ "$device" = 1 ] && [ -n "$root" ] && [ "$root" != / ]; then
  exec "$here/scripts/install-device.sh" --root "$root" ${platform:+--platform "$platform"} \
    "${device_flags[@]+"${device_flags[@]}"}"
fi

. "$here/scripts/platform.sh"
[ -n "$platform" ] || platform=$(detect_platform)
say "platform: $platform"

# --- Debian packages --------------------------------------------------------------------------------------
python=${PYTHON:-python3}
apt_packages=()
# Debian splits venv/ensurepip out of python3; a pyenv or distro Python that has it needs nothing.
"$python" -c "import ensurepip, venv" 2>/dev/null || apt_packages+=(python3-venv)
case "$platform" in
  pi) apt_packages+=(python3-picamera2) ;;  # libcamera bindings: only packaged by Raspberry Pi OS
esac
if [ "$dev" = 1 ]; then
  # The tests drive the real kiosk in a real headless browser, and MQTT against a real broker.
  apt_packages+=(chromium chromium-driver mosquitto)
fi
# Every install builds llama-cpp-python (the kiosk's assistant) from source: llama.cpp is C and C++, and
# Debian's gcc package has no C++ compiler.
command -v gcc >/dev/null || apt_packages+=(gcc)
command -v g++ >/dev/null || apt_packages+=(g++)
if [ "$dev" = 1 ] || [ "$platform" != generic ]; then
  # The `systemd` extra (dev, pi, jetson): systemd-python compiles against libsystemd; the tests run
  # systemd-analyze from Debian's systemd package.
  apt_packages+=(libsystemd-dev pkg-config)
  [ "$dev" = 1 ] && apt_packages+=(systemd)
  "$python" -c "import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h')))" \
    2>/dev/null || apt_packages+=(python3-dev)
fi

missing=()
for pkg in "${apt_packages[@]+"${apt_packages[@]}"}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then sudo=""; elif command -v sudo >/dev/null; then sudo="sudo"; else sudo="none"; fi
  if [ "$sudo" = none ]; then
    say "WARNING: missing Debian packages (${missing[*]}) and no root/sudo to install them; continuing"
  else
    say "installing Debian packages: ${missing[*]}"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
else
  say "Debian packages: nothing to install"
fi

# --- virtualenv ---------------------------------------------------------------------------------------------
venv_flags=()
# picamera2 (Pi) and JetPack's OpenCV/onnxruntime-gpu (Jetson) live in the system site-packages.
[ "$platform" != generic ] && venv_flags+=(--system-site-packages)
if [ ! -x .venv/bin/python ]; then
  say "creating .venv ${venv_flags[*]:-}"
  "$python" -m venv "${venv_flags[@]}" .venv
fi

# The kiosk's local LLM is part of the product: every install gets the assistant extra (llama-cpp-python
# compiles once, ~9 min on 2 cores; pip's wheel cache makes later installs fast).
extras=(assistant)
case "$platform" in pi) extras+=(pi) ;; jetson) extras+=(jetson) ;; esac
[ "$dev" = 1 ] && extras+=(dev)
[ "$train" = 1 ] && extras+=(train)
spec="."
[ ${#extras[@]} -gt 0 ] && spec=".[$(IFS=,; echo "${extras[*]}")]"

# Re-install only when the dependency list or the extras changed; pip's wheel cache keeps rebuilds cheap.
stamp=.venv/.edge-setup-stamp
want=$( (cat pyproject.toml; echo "$spec") | sha256sum | cut -d' ' -f1)
# llama-cpp-python compiles llama.cpp: build only the library (not its examples, tools or server).
export CMAKE_ARGS="${CMAKE_ARGS:--DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF}"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  say "installing python package $spec"
  .venv/bin/python -m pip install -q --upgrade pip wheel
  .venv/bin/python -m pip install -q -e "$spec"
  echo "$want" > "$stamp"
else
  say "python package $spec: up to date"
fi

# --- device install (units, firmware config) ----------------------------------------------------------------
if [ "$device" = 1 ]; then
  exec "$here/scripts/install-device.sh" --root / --platform "$platform" "${device_flags[@]+"${device_flags[@]}"}"
fi

say "done. Try: .venv/bin/edge doctor"
