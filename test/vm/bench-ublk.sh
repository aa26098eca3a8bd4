#!/usr/bin/env bash
# fio on the same STACK served three ways, on a host with ublk_drv:
#   ublk     obdfs ublk attach --read-only STACK            -> /dev/ublkbN
#   fuse+dio obdfs mount MP img=STACK; losetup --direct-io=on -> /dev/loopX
#   flat     obdfs cat -o flat.raw STACK; losetup --direct-io=on -> /dev/loopY
#
# Usage: bench-ublk.sh [STACK]   (default: the oracle fixture stack, 64 MiB)
# Env:   OBDFS=bin/obdfs  RUNTIME=10 (seconds per job)  WORK=/var/tmp/obdfs-bench
set -euo pipefail
cd "$(dirname "$0")/../.."
obdfs=$(realpath "${OBDFS:-bin/obdfs}")
fx=${OBDFS_FIXTURES:-$(cd "$(dirname "$0")/../../testdata/oracle" && pwd)}
stack=${1:-$fx/b/base.lz4.zfile,$fx/d/l2.lsmt,$fx/d/l3.lsmt}
runtime=${RUNTIME:-10}
work=${WORK:-/var/tmp/obdfs-bench}
log() { echo "bench-ublk: $*" >&2; }

[ "$(id -u)" = 0 ] || { log "needs root"; exit 1; }
command -v fio >/dev/null || { log "needs fio (test/install-deps.sh)"; exit 1; }
[ -e /dev/ublk-control ] || modprobe ublk_drv 2>/dev/null || true
[ -e /dev/ublk-control ] || { log "no ublk in this kernel ($(uname -r)): /dev/ublk-control missing"; exit 1; }

# Timing is only meaningful on real hardware or a hardware-accelerated VM.
virt=none
if grep -qw hypervisor /proc/cpuinfo; then
  virt=vm
  if ! dmesg 2>/dev/null | grep -qiE 'Hypervisor detected|kvm-clock'; then virt=emulated; fi
fi
case $virt in
emulated) log "WARNING: this looks like an emulated VM (qemu TCG): the timings below are meaningless." ;;
vm) log "note: running in a virtual machine; numbers include virtualisation overhead." ;;
esac

mkdir -p "$work/mnt"
apid="" loop_fuse="" loop_flat=""
cleanup() {
  [ -n "$loop_fuse" ] && losetup -d "$loop_fuse" 2>/dev/null || true
  [ -n "$loop_flat" ] && losetup -d "$loop_flat" 2>/dev/null || true
  if [ -n "$apid" ]; then kill -TERM "$apid" 2>/dev/null; wait "$apid" 2>/dev/null || true; fi
  "$obdfs" umount "$work/mnt" 2>/dev/null || true
  rm -f "$work/flat.raw"
}
trap cleanup EXIT

"$obdfs" ublk attach --read-only "$stack" >"$work/ublk.out" &
apid=$!
for _ in $(seq 600); do grep -q '^/dev/ublkb' "$work/ublk.out" 2>/dev/null && break; sleep 0.1; done
ublkdev=$(head -1 "$work/ublk.out")
[ -b "$ublkdev" ] || { log "ublk attach failed"; exit 1; }

"$obdfs" mount "$work/mnt" "img=$stack"
loop_fuse=$(losetup --direct-io=on -r -f --show "$work/mnt/img")

"$obdfs" cat -o "$work/flat.raw" "$stack"
loop_flat=$(losetup --direct-io=on -r -f --show "$work/flat.raw")

size=$(blockdev --getsize64 "$ublkdev")
log "stack: $stack ($size bytes); ublk $ublkdev, fuse+loop $loop_fuse, flat loop $loop_flat"

# job NAME FIO-ARGS...: prints "IOPS MiB/s" (terse v3: field 7 = read KiB/s, 8 = read IOPS).
job() {
  fio --name=b --filename="$1" --readonly --direct=1 --ioengine=libaio --time_based \
    --runtime="$runtime" --size="$size" --group_reporting --output-format=terse --terse-version=3 "${@:2}" |
    awk -F';' '{printf "%10d %9.1f", $8, $7/1024}'
}

printf '%-28s %-10s %10s %9s\n' workload path IOPS MiB/s
for w in "randread-4k-qd1:--rw=randread --bs=4k --iodepth=1 --numjobs=1" \
  "randread-4k-qd32:--rw=randread --bs=4k --iodepth=32 --numjobs=1" \
  "randread-4k-qd32x4:--rw=randread --bs=4k --iodepth=32 --numjobs=4" \
  "seqread-1m-qd8:--rw=read --bs=1m --iodepth=8 --numjobs=1"; do
  name=${w%%:*} args=${w#*:}
  for p in "ublk:$ublkdev" "fuse+loop:$loop_fuse" "flat-loop:$loop_flat"; do
    # shellcheck disable=SC2086
    printf '%-28s %-10s %s\n' "$name" "${p%%:*}" "$(job "${p#*:}" $args)"
  done
done
[ "$virt" = emulated ] && echo "(emulated VM: timings meaningless)"
exit 0
