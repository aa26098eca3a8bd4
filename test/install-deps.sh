#!/usr/bin/env bash
# Installs every system package the tests, the demo and the benchmarks use.
# Idempotent: packages already present are skipped, so it is cheap on a
# machine that has them. Needs root (apt-get).
set -euo pipefail
pkgs=(
  fuse3            # fusermount3, /etc/fuse.conf (allow_other)
  e2fsprogs        # mkfs.ext4 -d for sample images
  util-linux       # losetup, mount
  qemu-utils       # qemu-img info/compare
  qemu-system-x86  # qemu for the ublk VM tests and qemu-storage-daemon peer
  qemu-system-common
  qemu-block-extra # qemu's http (curl) block driver: the lazy-read peer
  busybox-static   # initramfs for the ublk VM tests
  cpio xz-utils kmod zstd
  gcc make         # out-of-tree ublk_drv build for the 6.1 guest kernel
  docker-registry  # real registry on loopback
  apache2-utils    # htpasswd for the registry basic-auth test
  fio jq           # benchmarks (jq reads obdfs stats --json)
  prometheus       # scrapes obdfs --metrics in the metrics test
  tinyproxy        # forward proxy for the registry proxy test
  umoci            # the peer the image-conversion tests compare unpacked trees with
)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" != 0 ]; then
    echo "install-deps: need root to install: ${missing[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The registry package starts a system service on install; tests run their
# own instances on loopback ports, so keep the packaged one out of the way.
if command -v systemctl >/dev/null 2>&1; then systemctl stop docker-registry prometheus tinyproxy >/dev/null 2>&1 || true; fi
pkill -f '^/usr/bin/docker-registry serve /etc/docker/registry/config.yml' 2>/dev/null || true
exit 0
