#!/usr/bin/env bash
# Cost of --metrics on read throughput (issue 14): two obdfs mount daemons on
# the same stack (the oracle fixture: lz4 ZFile base + two LSMT layers, 64 MiB),
# one with --metrics on a unix socket (scraped once a second meanwhile, as
# Prometheus would), one without; fio alternates between them, RUNS rounds.
#   sequential: 1 MiB buffered reads (the page cache dropped with
#               posix_fadvise before each pass, so every read reaches FUSE)
#   random:     4 KiB O_DIRECT random reads at QD1 (the per-request cost)
# Prints medians (min-max) in MiB/s and IOPS and the ratio. Needs root, fio, curl.
#   BENCH_RUNS [7]  BENCH_FIO_SECS [4]
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
RUNS=${BENCH_RUNS:-7}
SECS=${BENCH_FIO_SECS:-4}
OBDFS=${OBDFS:-$ROOT/bin/obdfs}
[ -x "$OBDFS" ] || go build -o "$OBDFS" ./cmd/obdfs
FX=$ROOT/testdata/oracle
STACK=$FX/b/base.lz4.zfile,$FX/d/l2.lsmt,$FX/d/l3.lsmt
W=$(mktemp -d /var/tmp/obdfs-metrics-bench.XXXXXX)
export OBDFS_RUN_DIR=$W/run
mkdir -p "$W/plain" "$W/metrics"
SCRAPER=
cleanup() {
  [ -n "$SCRAPER" ] && kill "$SCRAPER" 2>/dev/null || true
  "$OBDFS" umount "$W/plain" 2>/dev/null || true
  "$OBDFS" umount "$W/metrics" 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
"$OBDFS" mount --config "" "$W/plain" s="$STACK"
"$OBDFS" mount --config "" --metrics "unix:$W/metrics.sock" "$W/metrics" s="$STACK"
(while sleep 1; do curl -s --unix-socket "$W/metrics.sock" http://x/metrics >/dev/null || true; done) &
SCRAPER=$!
run() { # kind dir -> number
  local f=$2/s
  case $1 in
  seq) fio --name=seq --filename="$f" --rw=read --bs=1M --ioengine=psync --invalidate=1 \
         --time_based --runtime="$SECS" --output-format=json | jq '.jobs[0].read.bw_bytes/1048576' ;;
  rand) fio --name=rand --filename="$f" --rw=randread --bs=4k --direct=1 --ioengine=psync \
         --time_based --runtime="$SECS" --output-format=json | jq '.jobs[0].read.iops' ;;
  esac
}
median() { sort -g | awk '{a[NR]=$1} END {printf "%.0f (%.0f-%.0f)", a[int((NR+1)/2)], a[1], a[NR]}'; }
mid() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
for kind in seq rand; do
  : >"$W/$kind.plain"; : >"$W/$kind.metrics"
  for i in $(seq "$RUNS"); do # alternate which goes first
    if ((i % 2)); then
      run "$kind" "$W/plain" >>"$W/$kind.plain"
      run "$kind" "$W/metrics" >>"$W/$kind.metrics"
    else
      run "$kind" "$W/metrics" >>"$W/$kind.metrics"
      run "$kind" "$W/plain" >>"$W/$kind.plain"
    fi
  done
  p=$(mid <"$W/$kind.plain"); m=$(mid <"$W/$kind.metrics")
  unit=$([ "$kind" = seq ] && echo MiB/s || echo IOPS)
  printf '%-5s %-6s plain %s  --metrics %s  ratio %.3f\n' "$kind" "$unit" "$(median <"$W/$kind.plain")" \
    "$(median <"$W/$kind.metrics")" "$(echo "$m / $p" | bc -l)"
done
curl -s --unix-socket "$W/metrics.sock" http://x/metrics | grep -E '^obdfs_stack_reads_total' || true
