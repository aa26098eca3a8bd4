#!/usr/bin/env bash
# Real-kernel ublk tests: boots Debian's kernel with the ublk driver under qemu
# (TCG: this machine has no usable KVM) with an initramfs holding busybox, a
# static obdfs, the ublk package's test binary and test images, runs
# test/vm/guest-init.sh inside and fails unless the guest prints
# "OBDFS-VM: PASS" on the serial console.
#
# Usage: test/vm/run.sh [6.12|6.1 ...]      (default: 6.12)
# Env:   OBDFS_VM_CACHE   downloaded kernels (default /var/cache/obdfs-vm)
#        OBDFS_VM_TIMEOUT seconds per boot (default 600)
#        OBDFS_VM_KEEP=1  keep the work directory
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
flavours=("$@")
[ ${#flavours[@]} -gt 0 ] || flavours=(6.12)
timeout_s=${OBDFS_VM_TIMEOUT:-600}
export PATH=$PATH:/usr/local/go/bin
log() { echo "test-vm: $*" >&2; }

for tool in qemu-system-x86_64 busybox cpio gzip xz mkfs.ext4 modinfo; do
  command -v "$tool" >/dev/null || { log "missing $tool: run test/install-deps.sh"; exit 1; }
done
bb=$(command -v busybox)
if ! file -L "$bb" 2>/dev/null | grep -q 'statically linked' && [ -x /bin/busybox ]; then bb=/bin/busybox; fi

work=$(mktemp -d /tmp/obdfs-vm.XXXXXX)
[ -n "${OBDFS_VM_KEEP:-}" ] || trap 'rm -rf "$work"' EXIT
log "work dir $work"

# Static binaries for the guest.
CGO_ENABLED=0 go build -trimpath -o "$work/obdfs" ./cmd/obdfs
CGO_ENABLED=0 go test -c -o "$work/ublk.test" ./ublk

# Test data, built on the host. STACK specs and expected digests go in
# /data/env, which guest-init.sh sources.
data=$work/data
mkdir -p "$data"
bash test/vm/make-data.sh "$work/obdfs" "$data"

# modules: ADD name... copies name's .ko (and its dependencies first) into
# the initramfs and appends it to the load order.
add_module() {
  local moddir=$1 name=$2 f dep
  grep -qx "$name" "$rd/lib/modules.order" 2>/dev/null && return 0
  f=$(find "$moddir" -name "$name.ko*" -o -name "${name//_/-}.ko*" | head -1)
  [ -n "$f" ] || { log "module $name not in the kernel package"; return 1; }
  for dep in $(modinfo -F depends "$f" | tr ',' ' '); do add_module "$moddir" "$dep"; done
  case $f in
  *.xz) xz -dc "$f" >"$rd/lib/$name.ko" ;;
  *.zst) zstd -qdc "$f" >"$rd/lib/$name.ko" ;;
  *) cp "$f" "$rd/lib/$name.ko" ;;
  esac
  echo "$name" >>"$rd/lib/modules.order"
}

rc=0
for fl in "${flavours[@]}"; do
  kdir=$(bash test/vm/fetch-kernel.sh "$fl")
  ver=$(basename "$(ls -d "$kdir"/modules/*)")
  rd=$work/rd-$fl
  rm -rf "$rd"
  mkdir -p "$rd"/{bin,sbin,lib,proc,sys,dev,tmp,mnt,data,usr/bin,usr/sbin}
  cp "$bb" "$rd/bin/busybox"
  cp "$work/obdfs" "$work/ublk.test" "$rd/bin/"
  cp -a "$data/." "$rd/data/"
  cp test/vm/guest-init.sh "$rd/init"
  chmod +x "$rd/init"
  : >"$rd/lib/modules.order"
  for m in crc32c_generic ext4; do add_module "$kdir/modules/$ver" "$m"; done
  cp "$kdir/ublk_drv.ko" "$rd/lib/ublk_drv.ko"
  echo "ublk_drv" >>"$rd/lib/modules.order"
  echo "$fl $ver" >"$rd/kernel"
  (cd "$rd" && find . | cpio -o -H newc --quiet | gzip -1) >"$work/initrd-$fl.gz"

  log "booting $ver (timeout ${timeout_s}s)"
  out=$work/serial-$fl.log
  set +e
  timeout --foreground -k 10 "$timeout_s" qemu-system-x86_64 -accel tcg -cpu max -m 1536 -smp 2 \
    -kernel "$kdir/vmlinuz" -initrd "$work/initrd-$fl.gz" \
    -append "console=ttyS0 quiet loglevel=4 panic=-1 oops=panic hung_task_panic=0" \
    -nographic -no-reboot -serial "file:$out" -monitor none -display none </dev/null
  qrc=$?
  set -e
  cat "$out" | tr -d '\r' | sed "s/^/[$fl] /"
  if [ $qrc -eq 124 ] || [ $qrc -eq 137 ]; then
    log "$fl: VM timed out after ${timeout_s}s"
    rc=1
  elif grep -q '^OBDFS-VM: PASS' "$out"; then
    log "$fl: PASS"
  else
    log "$fl: FAIL (no PASS line; qemu exit $qrc)"
    rc=1
  fi
done
exit $rc
