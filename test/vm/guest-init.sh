#!/bin/busybox sh
# /init of the ublk test VM (see run.sh). Prints "CHECK ok|FAIL: name" per
# check and a final "OBDFS-VM: PASS" or "OBDFS-VM: FAIL" line, then powers off.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
echo 0 >/proc/sys/kernel/printk_ratelimit 2>/dev/null
read -r FLAVOUR KVER </kernel
echo "guest: kernel $(uname -r) (flavour $FLAVOUR), $(nproc) CPUs"
for m in $(cat /lib/modules.order); do
  insmod /lib/$m.ko || echo "CHECK FAIL: insmod $m"
done
[ -e /dev/ublk-control ] || echo "CHECK FAIL: /dev/ublk-control missing"

fails=0
ok() { echo "CHECK ok: $*"; }
bad() { echo "CHECK FAIL: $*"; fails=$((fails + 1)); }
check() { name=$1; shift; if "$@"; then ok "$name"; else bad "$name"; fi; }
[ -f /data/env ] && . /data/env

# 1. The package tests (real devices: read/write in both data modes, read-only,
# detach from another process, recovery after the server is killed).
check "ublk package tests" /bin/ublk.test -test.v -test.timeout 300s

# 2. The CLI on overlaybd stacks (guest-cli.sh, skipped if the host could not
# build the stacks).
if [ -f /data/cli.sh ]; then
  . /data/cli.sh
fi

dmesg | grep -iE 'ublk|BUG|WARNING|hung' | tail -20
if [ $fails -eq 0 ]; then echo "OBDFS-VM: PASS"; else echo "OBDFS-VM: FAIL ($fails)"; fi
sync
poweroff -f
