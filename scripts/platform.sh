# Sourced by setup.sh and scripts/install-device.sh: which kind of device this is.
detect_platform() {
  local model=""
  [ -r /proc/device-tree/model ] && model=$(tr -d '\0' < /proc/device-tree/model)
  case "$model" in
    *"Raspberry Pi"*) echo pi ;;
    *Jetson*|*NVIDIA*) echo jetson ;;
    *) if [ -e /etc/nv_tegra_release ]; then echo jetson; else echo generic; fi ;;
  esac
}
