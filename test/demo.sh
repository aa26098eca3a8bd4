#!/usr/bin/env bash
# The first thing to run on a fresh machine (as root): builds a small sample
# overlaybd image of three layers from a directory tree — an ext4 base, then
# a layer that changes, adds and deletes files, then another — commits them
# with lz4 and zstd, serves the image over FUSE, attaches a loop device,
# mounts the ext4 inside, shows a few files, and cleans everything up.
set -euo pipefail
cd "$(dirname "$0")/.."
OBDFS=${OBDFS:-$PWD/bin/obdfs}
[ "$(id -u)" = 0 ] || { echo "demo: run as root (FUSE mounts, loop devices, ext4 mounts)" >&2; exit 1; }
[ -x "$OBDFS" ] || { echo "demo: $OBDFS missing: run 'make build' first" >&2; exit 1; }

W=$(mktemp -d /tmp/obdfs-demo.XXXXXX)
MNT=$W/mnt FS=$W/fs
mkdir -p "$MNT" "$FS"
LOOP=""
cleanup() {
  set +e
  mountpoint -q "$FS" && umount "$FS"
  [ -n "$LOOP" ] && "$OBDFS" loop detach "$LOOP" 2>/dev/null
  mountpoint -q "$MNT" && { "$OBDFS" umount "$MNT" || umount -l "$MNT"; }
  rm -rf "$W"
}
trap cleanup EXIT
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

# attach_rw NAME: loop-attach MNT/NAME read-write and mount its ext4 on FS.
attach_and_mount() {
  LOOP=$("$OBDFS" loop attach "$@")
  mount "$LOOP" "$FS"
}
unmount_and_detach() {
  umount "$FS"
  "$OBDFS" loop detach "$LOOP"; LOOP=""
}

say "1. a directory tree becomes an ext4 image, written into a fresh writable layer"
mkdir -p "$W/src/etc" "$W/src/docs" "$W/src/data"
printf 'Hello from the obdfs base layer.\n' > "$W/src/docs/hello.txt"
printf 'version=1\n' > "$W/src/etc/app.conf"
printf 'this file is deleted by layer 2\n' > "$W/src/docs/obsolete.txt"
head -c 3M /dev/urandom > "$W/src/data/blob.bin"
seq 1 200000 > "$W/src/data/numbers.txt"
run mkfs.ext4 -q -F -d "$W/src" -L obdfs-demo "$W/base.img" 64M
run "$OBDFS" create --uuid 0bd0de00-0000-4000-8000-000000000001 "$W/l1.data" "$W/l1.index" --size $((64 << 20))
echo '{"upper":{"data":"l1.data","index":"l1.index"}}' > "$W/l1.json"
run "$OBDFS" mount "$MNT" "layer1=$W/l1.json"
# conv=sparse skips zero blocks: holes in the layer read as zeros anyway.
run dd if="$W/base.img" of="$MNT/layer1" bs=1M conv=sparse,notrunc,fsync status=none
run "$OBDFS" umount "$MNT"
run "$OBDFS" commit -z --algorithm lz4 --uuid 0bd0de00-0000-4000-8000-000000000001 -m "base: ext4 from a tree" \
  "$W/l1.data" "$W/l1.index" "$W/l1.commit"

say "2. layer 2 (zstd): edit a file, add one, delete one — through FUSE, a loop device and ext4"
run "$OBDFS" create -u 0bd0de00-0000-4000-8000-000000000001 --uuid 0bd0de00-0000-4000-8000-000000000002 "$W/l2.data" "$W/l2.index"
echo '{"lowers":[{"file":"l1.commit"}],"upper":{"data":"l2.data","index":"l2.index"}}' > "$W/l2.json"
run "$OBDFS" mount "$MNT" "layer2=$W/l2.json"
attach_and_mount --rw "$MNT/layer2"
printf 'version=2\n' > "$FS/etc/app.conf"
printf 'Added by layer 2.\n' > "$FS/docs/added.txt"
rm "$FS/docs/obsolete.txt"
unmount_and_detach
run "$OBDFS" umount "$MNT"
run "$OBDFS" commit -z --algorithm zstd -t --uuid 0bd0de00-0000-4000-8000-000000000002 \
  -p 0bd0de00-0000-4000-8000-000000000001 -m "layer 2" "$W/l2.data" "$W/l2.index" "$W/l2.commit"

say "3. layer 3 (lz4, tar-wrapped like a registry blob): more changes"
run "$OBDFS" create -u 0bd0de00-0000-4000-8000-000000000002 "$W/l3.data" "$W/l3.index"
echo '{"lowers":[{"file":"l1.commit"},{"file":"l2.commit"}],"upper":{"data":"l3.data","index":"l3.index"}}' > "$W/l3.json"
run "$OBDFS" mount "$MNT" "layer3=$W/l3.json"
attach_and_mount --rw "$MNT/layer3"
printf 'version=3\n' > "$FS/etc/app.conf"
mkdir "$FS/logs" && date -u > "$FS/logs/built-at.txt"
unmount_and_detach
run "$OBDFS" umount "$MNT"
run "$OBDFS" commit -z -t --uuid 0bd0de00-0000-4000-8000-000000000003 \
  -p 0bd0de00-0000-4000-8000-000000000002 -m "layer 3" "$W/l3.data" "$W/l3.index" "$W/l3.commit"
run "$OBDFS" info "$W/l3.commit"

say "4. serve the image read-only, and the base layer alone beside it (they share decoded blocks)"
run "$OBDFS" mount "$MNT" "image=$W/l1.commit,$W/l2.commit,$W/l3.commit" "base=$W/l1.commit"
run ls -l "$MNT"
attach_and_mount --ro "$MNT/image"
run ls -lR "$FS/docs" "$FS/etc" "$FS/logs"
run cat "$FS/etc/app.conf" "$FS/docs/hello.txt" "$FS/docs/added.txt"
test ! -e "$FS/docs/obsolete.txt" && echo "docs/obsolete.txt: deleted by layer 2, as expected"
cmp "$FS/data/blob.bin" "$W/src/data/blob.bin" && echo "data/blob.bin: identical to the source tree"
[ "$(cat "$FS/etc/app.conf")" = "version=3" ] || { echo "demo: wrong app.conf" >&2; exit 1; }
unmount_and_detach
# The base stack reuses the blocks the image stack already decoded: its
# backing bytes stay near zero (see the stats below).
run dd if="$MNT/base" of=/dev/null bs=1M status=none
run "$OBDFS" stack ls "$MNT"
run "$OBDFS" stats "$MNT"
run "$OBDFS" umount "$MNT"
say "done: everything unmounted and detached; files were in $W (removed)"
