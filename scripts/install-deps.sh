#!/usr/bin/env bash
# Installs the Debian packages the tests need, only those missing.
#   xvfb, imagemagick, libgl1-mesa-dri: a real window under Xvfb and screenshots
#   mesa-vulkan-drivers, libvulkan1: lavapipe, for egui_kittest image snapshots
#   libxkbcommon-x11-0: keyboard handling of winit under X11
#   prometheus: /usr/bin/prometheus, started by tests/prometheus_e2e.rs on a free loopback port
#   etcd-server: a real etcd (3.4, /usr/bin/etcd) that tests/etcd.rs starts on loopback
set -euo pipefail
pkgs=(xvfb imagemagick libgl1-mesa-dri mesa-vulkan-drivers libvulkan1 libxkbcommon-x11-0 prometheus etcd-server)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "install-deps: all packages present"
    exit 0
fi
echo "install-deps: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
