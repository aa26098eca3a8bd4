#!/usr/bin/env bash
# bench-convert: obdfs convert side by side with umoci unpack of the same
# regular OCI image (gzip layers made from this machine's /usr trees: at
# least 300 MB of files in 4 layers, the last one a whiteout), then a second
# image sharing the first three layers converted with the cache warm.
# Prints a markdown table of medians (min–max) over BENCH_RUNS runs.
#   BENCH_RUNS=3  BENCH_DIR=/var/tmp/obdfs-bench-convert (kept: the source
#   image is built once)  BENCH_TREES="usr/bin=/usr/bin ..." (layer trees)
set -euo pipefail
cd "$(dirname "$0")/../.."
[ "$(id -u)" = 0 ] || { echo "bench-convert: run as root (FUSE, loop devices, ext4 mounts)" >&2; exit 1; }
RUNS=${BENCH_RUNS:-3}
W=${BENCH_DIR:-/var/tmp/obdfs-bench-convert}
TREES=${BENCH_TREES:-"usr/bin=/usr/bin usr/include=/usr/include usr/libexec=/usr/libexec usr/include/linux=-"}
mkdir -p "$W" && chmod 700 "$W"
go build -o "$W/obdfs" ./cmd/obdfs
go build -o "$W/convertsrc" ./test/bench/convertsrc
if [ ! -f "$W/src/index.json" ]; then
  echo "bench-convert: building the source image from $TREES" >&2
  # shellcheck disable=SC2086
  "$W/convertsrc" "$W/src" v1 $TREES
  # v2 shares the first three layers and adds its own last one.
  set -- $TREES
  "$W/convertsrc" "$W/src" v2 "$1" "$2" "$3" usr/share/man=/usr/share/man
fi
tar_bytes=$(jq -r '.manifests[] | select(.annotations["org.opencontainers.image.ref.name"]=="v1") | .digest' "$W/src/index.json" |
  sed 's/sha256://' | xargs -I{} jq -r '.layers[].digest' "$W/src/blobs/sha256/{}" | sed 's/sha256://' |
  while read -r d; do gzip -dc "$W/src/blobs/sha256/$d" | wc -c; done | awk '{s+=$1} END {print s}')

now() { date +%s.%N; }
# conv ARGS...: obdfs convert, its messages kept for a failure report.
conv() { "$W/obdfs" convert "$@" 2>"$W/convert.err" || { cat "$W/convert.err" >&2; exit 1; }; }
calc() { awk "BEGIN {printf \"$1\", $2}"; }
stats() { sort -n | awk '{a[NR]=$1} END {m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.1f|%.1f|%.1f\n", m, a[1], a[NR]}'; }
: > "$W/umoci.times"; : > "$W/obdfs.times"; : > "$W/obdfs-zstd.times"
for i in $(seq "$RUNS"); do
  rm -rf "$W/bundle" "$W/out" "$W/cache"; sync
  t0=$(now); umoci unpack --image "$W/src:v1" "$W/bundle" >/dev/null 2>"$W/umoci.err" || { cat "$W/umoci.err" >&2; exit 1; }; t1=$(now)
  awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}' >> "$W/umoci.times"
  rm -rf "$W/bundle"; sync
  t0=$(now); conv -z --cache-dir "$W/cache" "oci:$W/src:v1" "oci:$W/out:v1"; t1=$(now)
  awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}' >> "$W/obdfs.times"
  rm -rf "$W/out" "$W/cache"; sync
  t0=$(now); conv -z --algorithm zstd --cache-dir "$W/cache" "oci:$W/src:v1" "oci:$W/out:v1"; t1=$(now)
  awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}' >> "$W/obdfs-zstd.times"
  echo "bench-convert: run $i: umoci $(tail -1 "$W/umoci.times") s, obdfs lz4 $(tail -1 "$W/obdfs.times") s, zstd $(tail -1 "$W/obdfs-zstd.times") s" >&2
done
# The cache: v1 converted (lz4) with the cache warm, then v2.
: > "$W/cached.times"
for i in $(seq "$RUNS"); do
  rm -rf "$W/cache" "$W/out"
  conv -z --cache-dir "$W/cache" "oci:$W/src:v1" "oci:$W/out:v1"
  t0=$(now); conv -z --cache-dir "$W/cache" "oci:$W/src:v2" "oci:$W/out:v2"; cp "$W/convert.err" "$W/v2.log"; t1=$(now)
  awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}' >> "$W/cached.times"
done
: > "$W/v2cold.times"
for i in $(seq "$RUNS"); do
  rm -rf "$W/cache" "$W/out"
  t0=$(now); conv -z --cache-dir "$W/cache" "oci:$W/src:v2" "oci:$W/out:v2"; t1=$(now)
  awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}' >> "$W/v2cold.times"
done
rm -rf "$W/out" "$W/cache"
IFS='|' read -r um umin umax < <(stats < "$W/umoci.times")
IFS='|' read -r om omin omax < <(stats < "$W/obdfs.times")
IFS='|' read -r zm zmin zmax < <(stats < "$W/obdfs-zstd.times")
IFS='|' read -r cm cmin cmax < <(stats < "$W/cached.times")
IFS='|' read -r vm vmin vmax < <(stats < "$W/v2cold.times")
mb=$(calc %d "$tar_bytes / 1000000")
cat <<MD
Source: $mb MB of uncompressed layer tars in 4 gzip layers ($TREES), $RUNS runs, $(nproc) cores, $(date -u +%F).

| what | seconds, median (min–max) | MB/s of source tar | vs umoci unpack |
|---|---|---|---|
| umoci unpack (Debian $(dpkg-query -W -f='${Version}' umoci)) | $um ($umin–$umax) | $(calc %d "$mb / $um") | 1.00× |
| obdfs convert -z (lz4) | $om ($omin–$omax) | $(calc %d "$mb / $om") | $(calc %.2f "$om / $um")× |
| obdfs convert -z --algorithm zstd | $zm ($zmin–$zmax) | $(calc %d "$mb / $zm") | $(calc %.2f "$zm / $um")× |
| second image sharing 3 base layers, cache cold | $vm ($vmin–$vmax) | | |
| second image sharing 3 base layers, cache warm | $cm ($cmin–$cmax) | | saves $(calc %d "100 - 100 * $cm / $vm") % |

Last warm-cache run: $(tail -1 "$W/v2.log")
MD
