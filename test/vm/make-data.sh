#!/usr/bin/env bash
# Builds the VM's test images on the host with obdfs itself:
#   make-data.sh OBDFS DATADIR
# Writes DATADIR/env (STACK specs and expected digests, sourced in the guest)
# and DATADIR/cli.sh (the CLI checks, from guest-cli.sh).
set -euo pipefail
obdfs=$1 data=$2
here=$(cd "$(dirname "$0")" && pwd)
fx=${OBDFS_FIXTURES:-$(cd "$(dirname "$0")/../../testdata/oracle" && pwd)}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sha() { sha256sum "$1" | cut -d' ' -f1; }

# 1. The oracle's 3-layer stack with its base as an lz4 ZFile: read-only.
cp "$fx/b/base.lz4.zfile" "$fx/d/l2.lsmt" "$fx/d/l3.lsmt" "$data/"
ro="/data/base.lz4.zfile,/data/l2.lsmt,/data/l3.lsmt"
"$obdfs" cat -o "$tmp/ro.raw" "$data/base.lz4.zfile,$data/l2.lsmt,$data/l3.lsmt"
sha_ro=$(sha "$tmp/ro.raw")
# The oracle's own digest of this stack (testdata/README.md): obdfs cat must agree.
[ "$sha_ro" = b2315973658f86ec78a1431df439b451b12dd0bad74a39dfd3de10087d63b4e7 ] ||
  { echo "make-data: obdfs cat of the fixture stack gives $sha_ro" >&2; exit 1; }
sha_rec=$(dd if="$tmp/ro.raw" bs=1M skip=8 count=4 status=none | sha256sum | cut -d' ' -f1)

# 2. The same lowers with a writable upper (image config), and the pattern the
# guest writes into it with O_DIRECT at 1 MiB + 64 KiB.
"$obdfs" create --size 67108864 "$data/rw.data" "$data/rw.index"
cat >"$data/rw.json" <<JSON
{"lowers":[{"file":"base.lz4.zfile"},{"file":"l2.lsmt"},{"file":"l3.lsmt"}],
 "upper":{"data":"rw.data","index":"rw.index"}}
JSON
head -c 1048576 /dev/urandom >"$data/pattern.bin"
cp "$tmp/ro.raw" "$tmp/rw.raw"
dd if="$data/pattern.bin" of="$tmp/rw.raw" bs=64k seek=17 conv=notrunc status=none
sha_rw=$(sha "$tmp/rw.raw")

# 3. ext4: mkfs.ext4 -d on the host, turned into a zstd ZFile layer, with a
# writable upper.
mkdir -p "$tmp/tree/sub"
head -c 300000 /dev/urandom >"$tmp/tree/random.bin"
seq 1 20000 >"$tmp/tree/sub/numbers.txt"
echo "hello from obdfs" >"$tmp/tree/hello.txt"
(cd "$tmp/tree" && find . -type f | sort | xargs sha256sum) >"$data/ext4.sha256"
truncate -s 32M "$tmp/ext4.raw"
mkfs.ext4 -q -F -b 4096 -d "$tmp/tree" "$tmp/ext4.raw"
go run "$here/rawlayer" "$tmp/ext4.raw" "$tmp/e.data" "$tmp/e.index"
"$obdfs" commit -z --algorithm zstd "$tmp/e.data" "$tmp/e.index" "$data/ext4.zst.zfile"
"$obdfs" create --size 33554432 "$data/ext4rw.data" "$data/ext4rw.index"
cat >"$data/ext4.json" <<JSON
{"lowers":[{"file":"ext4.zst.zfile"}],"upper":{"data":"ext4rw.data","index":"ext4rw.index"}}
JSON
[ "$(sha "$tmp/ext4.raw")" = "$("$obdfs" cat "$data/ext4.zst.zfile" | sha256sum | cut -d' ' -f1)" ] ||
  { echo "make-data: ext4 layer does not read back as the image" >&2; exit 1; }

cat >"$data/env" <<ENV
STACK_RO=$ro
SHA_RO=$sha_ro
SHA_REC=$sha_rec
STACK_RW=/data/rw.json
SHA_RW=$sha_rw
STACK_EXT4=/data/ext4.json
ENV
cp "$here/guest-cli.sh" "$data/cli.sh"
