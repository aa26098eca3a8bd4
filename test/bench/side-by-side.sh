#!/usr/bin/env bash
# Side-by-side benchmark (issue 6): one dataset served four ways on the same
# machine in the same run, medians of several runs, ratios.
#
#   obdfs-lz4 / obdfs-zstd  3-layer overlaybd stack, ZFile lz4 / zstd (FUSE over /dev/fuse)
#   obdfs-lz4-uring / obdfs-zstd-uring  the same over FUSE over io_uring (the
#                           script turns the fuse module's enable_uring on for
#                           the run and restores it)
#   qsd                     the same three states as a qcow2 backing chain
#                           with zstd clusters, qemu-storage-daemon --export type=fuse
#   memfuse                 the top state as a flat raw image served from memory
#                           by a go-fuse program with obdfs' mount options (FUSE ceiling)
#   raw                     the flat raw image read from the page cache (the limit)
#
# Measures: sequential 1 MiB buffered reads of the whole file (fresh daemon,
# backing files in the page cache); fio 4 KiB random reads at QD1 and QD32,
# O_DIRECT, through a direct-I/O loop device; a tar scan of every file of the
# ext4 inside; four stacks sharing the two bottom layers read in turn (one
# obdfs daemon vs one qemu-storage-daemon per image); daemon CPU and peak RSS.
#
# Environment (defaults in brackets):
#   BENCH_DATA_MB [250]   bytes of files copied from /usr into the base layer
#   BENCH_RUNS [3]        runs per measurement (the table shows medians)
#   BENCH_FIO_SECS [5]    seconds per fio job
#   BENCH_CACHE_SIZE [1GiB]  obdfs --cache-size (holds the decoded shared layers)
#   BENCH_TARGETS         subset of "obdfs-lz4 obdfs-zstd obdfs-lz4-uring obdfs-zstd-uring qsd memfuse raw"
#   BENCH_TESTS           subset of "seq rand scan shared"
#   BENCH_DIR             work directory (default: a fresh one under /var/tmp);
#                         a dataset already built there for the same BENCH_DATA_MB is reused
#   BENCH_KEEP [0]        1: keep BENCH_DIR (the dataset) after the run
#   BENCH_DOC [docs/PERFORMANCE.md]  where the table goes (between the side-by-side
#                         table markers); empty: do not write it
#   BENCH_NOTE            a sentence added to the doc (machine state)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
OBDFS=${OBDFS:-$ROOT/bin/obdfs}
DATA_MB=${BENCH_DATA_MB:-250}
RUNS=${BENCH_RUNS:-3}
FIO_SECS=${BENCH_FIO_SECS:-5}
CACHE=${BENCH_CACHE_SIZE:-1GiB}
TARGETS=${BENCH_TARGETS:-obdfs-lz4 obdfs-zstd obdfs-lz4-uring obdfs-zstd-uring qsd memfuse raw}
TESTS=${BENCH_TESTS:-seq rand scan shared}
KEEP=${BENCH_KEEP:-0}
DOC=${BENCH_DOC-docs/PERFORMANCE.md}
NSHARED=4

[ "$(id -u)" = 0 ] || { echo "bench: run as root (FUSE mounts, loop devices, ext4 mounts)" >&2; exit 1; }
[ -x "$OBDFS" ] || { echo "bench: $OBDFS missing: run 'make build' first" >&2; exit 1; }
for t in qemu-storage-daemon qemu-img fio mkfs.ext4 losetup jq findmnt; do
  command -v "$t" >/dev/null || { echo "bench: $t missing: run 'make deps'" >&2; exit 1; }
done

if [ -n "${BENCH_DIR:-}" ]; then W=$BENCH_DIR; mkdir -p "$W"; else W=$(mktemp -d /var/tmp/obdfs-bench.XXXXXX); fi
W=$(cd "$W" && pwd)
MEMFUSE=$W/memfuse
go build -o "$MEMFUSE" ./test/bench/memfuse

# FUSE over io_uring targets need the fuse module's enable_uring on; the old
# value is put back on exit.
URING_PARAM=/sys/module/fuse/parameters/enable_uring URING_OLD=
case " $TARGETS " in
  *-uring\ *)
    if [ -w "$URING_PARAM" ]; then
      URING_OLD=$(cat "$URING_PARAM"); echo Y > "$URING_PARAM"
    else
      echo "bench: $URING_PARAM missing (kernel without FUSE over io_uring): skipping the io_uring targets" >&2
      TARGETS=$(for t in $TARGETS; do case $t in *-uring) ;; *) echo "$t" ;; esac; done | paste -sd' ')
    fi ;;
esac

# Everything started is recorded here so that the trap can undo it.
. test/bench/harness.sh
cleanup() {
  set +e
  [ -n "$URING_OLD" ] && echo "$URING_OLD" > "$URING_PARAM"
  undo_all
  if [ "$KEEP" != 1 ]; then rm -rf "$W"; else rm -rf "$W/run"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------- dataset ---
# Files: a deterministic spread over /usr (every k-th file in path order, so
# ELF binaries, shared libraries, text, compressed docs, locales); the files
# at odd offsets form a reserve pool that later layers add.
D=$W/data
VERSION=1
mkdir -p "$D" "$W/run"
FS=$W/run/fs
mkdir -p "$FS"

# fs_modify DIR SEED: the changes a layer makes to the ext4 mounted at DIR:
# rewrites ~10% of the files (case of hex letters swapped, new inode, so new
# blocks), deletes ~3%, and adds ~8% of the dataset from the reserve pool.
fs_modify() {
  local dir=$1 seed=$2 f i=0
  (cd "$dir" && find . -type f ! -path './lost+found/*' | LC_ALL=C sort) > "$D/files.$seed"
  while IFS= read -r f; do
    i=$((i + 1))
    if (( i % 10 == seed % 10 )); then
      tr 'a-fA-F' 'A-Fa-f' < "$dir/$f" > "$dir/$f.new" && mv -f "$dir/$f.new" "$dir/$f"
    elif (( i % 30 == (seed + 5) % 30 )); then
      rm -f "$dir/$f"
    fi
  done < "$D/files.$seed"
  mkdir -p "$dir/added-$seed"
  awk -v s="$seed" 'NR % 8 == s % 8' "$D/reserve" | tar -C / -cf - --no-recursion -T - | tar -C "$dir/added-$seed" -xf -
}

# layer NAME PARENT_LOWERS SEED PARENT: a writable layer on top of the committed lz4
# layers PARENT_LOWERS (comma list), changed by fs_modify through FUSE, a
# loop device and ext4, then committed as lz4 and zstd; the merged state is
# written to NAME.raw for the qcow2 chain.
layer() {
  local name=$1 lowers=$2 seed=$3 m=$W/run/build loop
  mkdir -p "$m"
  "$OBDFS" create -u "$(uuid_of "$4")" --uuid "$(uuid_of "$name")" "$D/$name.data" "$D/$name.index" >/dev/null
  layer_json "$name" "$lowers"
  MNTS+=("$m")
  "$OBDFS" mount --log-file "$W/run/build.log" "$m" "s=$D/$name.json"
  loop=$("$OBDFS" loop attach --rw "$m/s"); LOOPS+=("$loop")
  mount "$loop" "$FS"; FSMNTS+=("$FS")
  fs_modify "$FS" "$seed"
  umount "$FS"; drop FSMNTS "$FS"
  "$OBDFS" loop detach "$loop"; drop LOOPS "$loop"
  dd if="$m/s" of="$D/$name.raw" bs=1M conv=sparse status=none
  "$OBDFS" umount "$m"; drop MNTS "$m"
  commit_both "$name" "$4"
}

layer_json() { # a config with lowers (files) and the writable upper
  local name=$1 lowers=$2 j l
  j='{"lowers":['
  local IFS=,
  for l in $lowers; do j+="{\"file\":\"$l\"},"; done
  j="${j%,}],\"upper\":{\"data\":\"$D/$name.data\",\"index\":\"$D/$name.index\"}}"
  echo "$j" > "$D/$name.json"
}
uuid_of() { # fixed layer UUIDs: l1, l2, l3v1..
  case $1 in
    l1) echo 0bd0be00-0000-4000-8000-000000000001 ;;
    l2) echo 0bd0be00-0000-4000-8000-000000000002 ;;
    l3v*) printf '0bd0be00-0000-4000-8000-0000000003%02d\n' "${1#l3v}" ;;
  esac
}

commit_both() { # commit_both NAME [PARENT]
  local name=$1 a p=()
  [ -n "${2:-}" ] && p=(-p "$(uuid_of "$2")")
  for a in lz4 zstd; do
    "$OBDFS" commit -z --algorithm $a --uuid "$(uuid_of "$name")" "${p[@]}" -m "bench $name" \
      "$D/$name.data" "$D/$name.index" "$D/$name.$a" >/dev/null
  done
  rm -f "$D/$name.data" "$D/$name.index"
}

# qcow2_overlay NAME BACKING: NAME.qcow2 holds exactly the clusters where
# NAME.raw differs from BACKING (qemu-img rebase in safe mode compares the two
# and copies the differences into an empty overlay), zstd-compressed.
qcow2_overlay() {
  local name=$1 backing=$2
  (cd "$D" &&
    qemu-img create -q -f qcow2 -o compression_type=zstd -b "$name.raw" -F raw "$name.tmp.qcow2" &&
    qemu-img rebase -b "$backing" -F qcow2 "$name.tmp.qcow2" &&
    qemu-img convert -c -O qcow2 -o compression_type=zstd -B "$backing" -F qcow2 "$name.tmp.qcow2" "$name.qcow2" &&
    rm -f "$name.tmp.qcow2")
}

build_dataset() {
  log "dataset: ~$DATA_MB MiB of files from /usr in $D"
  rm -rf "${D:?}"/*
  local want=$((DATA_MB << 20)) size
  find /usr/bin /usr/sbin /usr/lib /usr/libexec /usr/share /usr/include -xdev -type f -size -32M \
    -printf '%s\t%p\n' 2>/dev/null | LC_ALL=C sort -t"$(printf '\t')" -k2 > "$D/all"
  # 40% more than wanted, split between the base (even) and the reserve (odd).
  awk -F'\t' -v want="$want" '{ n++; s[n]=$1; p[n]=substr($2, 2); t+=$1 }
    END { k=int(t/(want*1.4)); if (k<1) k=1
      for (i=1;i<=n;i+=k) { if (++j%2) { if (b<want) { print p[i] > base; b+=s[i] } }
                            else if (r<want*0.4) { print p[i] > res; r+=s[i] } } }' \
    base="$D/base.list" res="$D/reserve" "$D/all"
  mkdir -p "$D/src"
  tar -C / -cf - --no-recursion -T "$D/base.list" | tar -C "$D/src" -xf -
  size=$(( (DATA_MB * 3 / 2 + 128) << 20 ))
  mkfs.ext4 -q -F -b 4096 -i 8192 -d "$D/src" -L bench "$D/l1.raw" $((size >> 20))M
  rm -rf "$D/src"
  log "base layer: written through FUSE into a writable layer, committed lz4 and zstd"
  local m=$W/run/build
  mkdir -p "$m"
  "$OBDFS" create --uuid "$(uuid_of l1)" "$D/l1.data" "$D/l1.index" --size "$size" >/dev/null
  echo "{\"upper\":{\"data\":\"$D/l1.data\",\"index\":\"$D/l1.index\"}}" > "$D/l1.json"
  MNTS+=("$m")
  "$OBDFS" mount --log-file "$W/run/build.log" "$m" "s=$D/l1.json"
  dd if="$D/l1.raw" of="$m/s" bs=1M conv=sparse,notrunc,fsync status=none
  "$OBDFS" umount "$m"; drop MNTS "$m"
  commit_both l1
  log "layers 2 and 3 (4 variants of layer 3 over the shared layers 1 and 2)"
  layer l2 "$D/l1.lz4" 2 l1
  local v
  for v in $(seq 1 $NSHARED); do layer "l3v$v" "$D/l1.lz4,$D/l2.lz4" $((v + 2)) l2; done
  log "qcow2 chain with zstd clusters (base, then overlays holding the differences)"
  (cd "$D" && qemu-img convert -c -O qcow2 -o compression_type=zstd l1.raw l1.qcow2)
  qcow2_overlay l2 l1.qcow2
  for v in $(seq 1 $NSHARED); do qcow2_overlay "l3v$v" l2.qcow2; done
  # Check every state of the chain against the raw states, and keep only the
  # top raw state (for memfuse and raw).
  for v in l1 l2 $(seq -f 'l3v%g' 1 $NSHARED); do
    qemu-img compare -q -f qcow2 -F raw "$D/$v.qcow2" "$D/$v.raw" ||
      { echo "bench: $v.qcow2 differs from $v.raw" >&2; exit 1; }
  done
  for v in l1 l2 $(seq -f 'l3v%g' 2 $NSHARED); do rm -f "$D/$v.raw"; done
  echo "$VERSION $DATA_MB" > "$D/done"
}

if [ "$(cat "$D/done" 2>/dev/null)" != "$VERSION $DATA_MB" ]; then build_dataset; else log "reusing the dataset in $D"; fi
IMG=$D/l3v1.raw
IMGSIZE=$(stat -c %s "$IMG")

# ------------------------------------------------------------- targets ---
# start TARGET [STACKS]: serve TARGET; sets FILES (the served files, one per
# stack) and TPIDS (its daemon processes). STACKS is how many stacks
# (1, or NSHARED for the shared test: layer-3 variants 1..N).
backing_files() { # the files a target reads from
  case $1 in
    obdfs-lz4*) echo "$D"/l1.lz4 "$D"/l2.lz4 "$D"/l3v*.lz4 ;;
    obdfs-zstd*) echo "$D"/l1.zstd "$D"/l2.zstd "$D"/l3v*.zstd ;;
    qsd) echo "$D"/*.qcow2 ;;
    memfuse | raw) echo "$IMG" ;;
  esac
}
warm() { cat $(backing_files "$1") > /dev/null; }

wait_file() { # wait_file FILE PID: until FILE is a FUSE mount's file (or PID died)
  local i
  for i in $(seq 1 300); do
    if [ -s "$1" ]; then # a size: the export answers (qsd's file reads as empty at first now and then)
      case $(stat -f -c %T "$1" 2>/dev/null) in fuse*) return 0 ;; esac
    fi
    kill -0 "$2" 2>/dev/null || { echo "bench: daemon $2 for $1 died (see $W/run/*.log)" >&2; return 1; }
    sleep 0.05
  done
  echo "bench: $1 did not appear" >&2; return 1
}

start() {
  local t=$1 n=${2:-1} v m ext p
  FILES=() TPIDS=()
  m=$W/run/mnt
  mkdir -p "$m"
  case $t in
    obdfs-*)
      ext=${t#obdfs-} ext=${ext%-uring}
      local args=() uring=off
      case $t in *-uring) uring=on ;; esac
      for v in $(seq 1 "$n"); do args+=("s$v=$D/l1.$ext,$D/l2.$ext,$D/l3v$v.$ext"); FILES+=("$m/s$v"); done
      MNTS+=("$m")
      "$OBDFS" mount --foreground --fuse-uring=$uring --cache-size "$CACHE" --log-file "$W/run/obdfs.log" "$m" "${args[@]}" 2>>"$W/run/obdfs.log" &
      p=$!; PIDS+=("$p"); TPIDS+=("$p")
      wait_file "$m/s$n" "$p"
      ;;
    qsd)
      for v in $(seq 1 "$n"); do
        touch "$m/q$v"
        MNTS+=("$m/q$v")
        qemu-storage-daemon \
          --blockdev "driver=file,node-name=f$v,filename=$D/l3v$v.qcow2,read-only=on" \
          --blockdev "driver=qcow2,node-name=q$v,file=f$v,read-only=on" \
          --export "type=fuse,id=e$v,node-name=q$v,mountpoint=$m/q$v,writable=off" 2>>"$W/run/qsd.log" &
        p=$!; PIDS+=("$p"); TPIDS+=("$p"); FILES+=("$m/q$v")
        wait_file "$m/q$v" "$p"
      done
      ;;
    memfuse)
      MNTS+=("$m")
      "$MEMFUSE" "$IMG" "$m" img 2>>"$W/run/memfuse.log" &
      p=$!; PIDS+=("$p"); TPIDS+=("$p"); FILES+=("$m/img")
      wait_file "$m/img" "$p"
      ;;
    raw) FILES+=("$IMG") ;;
  esac
}

stop() {
  local t=$1 p m=$W/run/mnt f
  case $t in
    obdfs-*) "$OBDFS" umount "$m" >/dev/null; drop MNTS "$m" ;;
    qsd | memfuse) for p in "${TPIDS[@]}"; do kill -TERM "$p"; done ;;
  esac
  for p in "${TPIDS[@]}"; do wait "$p" 2>/dev/null || true; drop PIDS "$p"; done
  if [ "${t%%-*}" != obdfs ]; then
    for f in "${FILES[@]}"; do
      [ "$f" = "$IMG" ] && continue
      findmnt -n "$f" >/dev/null 2>&1 && umount "$f"
      drop MNTS "$f"; rm -f "$f"
    done
    drop MNTS "$m"
  fi
}

# Daemon accounting: CPU seconds (utime+stime), peak RSS (VmHWM), bytes read
# by read syscalls (rchar: backing files; FUSE request headers are a few
# dozen bytes per request).
cpu_of() { local p s=0; for p in "${TPIDS[@]}"; do s=$(awk -v s="$s" -v hz="$(getconf CLK_TCK)" '{ print s + ($14 + $15) / hz }' "/proc/$p/stat"); done; echo "$s"; }
rss_of() { local p s=0; for p in "${TPIDS[@]}"; do s=$((s + $(awk '/VmHWM/ { print $2 }' "/proc/$p/status"))); done; echo $((s / 1024)); }
rchar_of() { local p s=0; for p in "${TPIDS[@]}"; do s=$((s + $(awk '/^rchar/ { print $2 }' "/proc/$p/io"))); done; echo "$s"; }

RES=$W/run/results
: > "$RES"
rec() { echo "$1 $2 $3" >> "$RES"; } # rec METRIC TARGET VALUE
CPU0=0
mark() { T0=$(now); [ ${#TPIDS[@]} -gt 0 ] && CPU0=$(cpu_of) || CPU0=0; }
done_with() { # done_with TEST TARGET: record elapsed-derived CPU and RSS
  if [ ${#TPIDS[@]} -gt 0 ]; then
    rec "$1.cpu" "$2" "$(awk -v a="$(cpu_of)" -v b="$CPU0" 'BEGIN { printf "%.2f", a - b }')"
    rec "$1.rss" "$2" "$(rss_of)"
  fi
}
secs() { awk -v a="$(now)" -v b="$T0" 'BEGIN { printf "%.3f", a - b }'; }

attach() { # attach FILE TARGET: read-only loop device, direct I/O to FUSE files
  local dio=on
  [ "$2" = raw ] && dio=off # the raw file itself in the page cache is the limit
  LOOP=$(losetup -f --show -r --direct-io=$dio "$1"); LOOPS+=("$LOOP")
  [ "$(cat "/sys/block/${LOOP#/dev/}/loop/dio")" = 1 ] || [ $dio = off ] ||
    echo "bench: $LOOP on $1 ($2): the kernel refused direct I/O" >&2
}
detach() { losetup -d "$LOOP"; drop LOOPS "$LOOP"; }

t_seq() {
  local t=$1 s
  warm "$t"; start "$t"; mark
  dd if="${FILES[0]}" of=/dev/null bs=1M status=none
  s=$(secs)
  rec seq.mbs "$t" "$(awk -v b="$IMGSIZE" -v s="$s" 'BEGIN { printf "%.0f", b / s / 1e6 }')"
  done_with seq "$t"; stop "$t"
}

t_rand() {
  local t=$1 qd iops
  for qd in 1 32; do
    warm "$t"; start "$t"; attach "${FILES[0]}" "$t"; mark
    iops=$(fio --name=r --filename="$LOOP" --readonly --ioengine=libaio --direct=1 --rw=randread \
      --bs=4k --iodepth=$qd --runtime="$FIO_SECS" --time_based --randrepeat=1 --norandommap \
      --output-format=terse --terse-version=3 | awk -F';' '{ printf "%.0f", $8 }')
    rec "rand$qd.iops" "$t" "$iops"
    done_with "rand$qd" "$t"
    detach; stop "$t"
  done
}

t_scan() {
  local t=$1 s bytes
  warm "$t"; start "$t"; attach "${FILES[0]}" "$t"
  mount -o ro,noload "$LOOP" "$FS"; FSMNTS+=("$FS")
  mark
  bytes=$(tar -C "$FS" -cf - . | wc -c)
  s=$(secs)
  rec scan.s "$t" "$s"
  rec scan.mbs "$t" "$(awk -v b="$bytes" -v s="$s" 'BEGIN { printf "%.0f", b / s / 1e6 }')"
  done_with scan "$t"
  umount "$FS"; drop FSMNTS "$FS"; detach; stop "$t"
}

# Four stacks (layer-3 variants over the same layers 1 and 2), each read
# whole in turn. Bytes read from backing files: rchar of the daemons, divided
# by the size of the distinct backing files (l1, l2 and the four layer-3
# variants): 1.0 when every backing byte is read once, whoever needs it.
# For obdfs also its per-layer counters: bytes of layers 1+2 read by all
# stacks divided by the size of those two files. (A stack may need blocks of
# layer 1 that the first stack never read, because its own layer 3 does not
# hide them; dividing by what the first stack read would count those.)
t_shared() {
  local t=$1 s r0 all distinct
  case $t in obdfs-* | qsd) ;; *) return 0 ;; esac
  warm "$t"; start "$t" $NSHARED; mark
  r0=$(rchar_of)
  for f in "${FILES[@]}"; do dd if="$f" of=/dev/null bs=1M status=none; done
  s=$(secs)
  all=$(( $(rchar_of) - r0 ))
  distinct=$(stat -c %s $(backing_files "$t") | paste -sd+ | bc)
  rec shared.s "$t" "$s"
  rec shared.mib "$t" "$(awk -v b="$all" 'BEGIN { printf "%.1f", b / 1048576 }')"
  rec shared.x "$t" "$(awk -v a="$all" -v b="$distinct" 'BEGIN { printf "%.2f", a / b }')"
  if [ "${t%%-*}" = obdfs ]; then
    local ext=${t#obdfs-}
    ext=${ext%-uring}
    rec shared.l12x "$t" "$(awk -v a="$(shared_bytes "$W/run/mnt")" -v b="$(stat -c %s "$D/l1.$ext" "$D/l2.$ext" | paste -sd+ | bc)" \
      'BEGIN { printf "%.2f", a / b }')"
  fi
  done_with shared "$t"; stop "$t"
}
# shared_bytes MNT: backing bytes of layers 1 and 2 read by all stacks (each
# stack opens its own instance of a layer file, with its own counters; the
# decoded-block cache is what they share).
shared_bytes() {
  "$OBDFS" stats --json "$1" | jq '[.stacks[].layers[] | select(.Name | test("/l[12]\\.")) | .BackingBytes] | add'
}

for run in $(seq 1 "$RUNS"); do
  for test in $TESTS; do
    for t in $TARGETS; do
      log "run $run/$RUNS: $test, $t"
      "t_$test" "$t"
    done
  done
done

# --------------------------------------------------------------- report ---
median() { # median METRIC TARGET
  awk -v m="$1" -v t="$2" '$1 == m && $2 == t { print $3 }' "$RES" | sort -g |
    awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "-" || b == "-" || b == 0) print "-"; else printf "%.2f", a / b }'; }
cell() { local v; v=$(median "$1" "$2"); echo "$v"; }

machine="$(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo), $(nproc) cores, $(free -g | awk '/Mem:/ { print $2 }') GiB, kernel $(uname -r)"
load=$(cut -d' ' -f1-3 /proc/loadavg)
COLS="obdfs-lz4 obdfs-zstd obdfs-lz4-uring obdfs-zstd-uring qsd memfuse raw"
table() {
  echo "| measurement | obdfs lz4 | obdfs zstd | obdfs lz4, io_uring | obdfs zstd, io_uring | qemu-storage-daemon (qcow2 zstd) | memfuse (FUSE ceiling) | raw (page cache) | lz4 / qsd | zstd / qsd | lz4 / memfuse | lz4 / raw | lz4 io_uring / qsd | lz4 io_uring / lz4 |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
  local m label c row l z q f r inv u
  while IFS='|' read -r m label inv; do
    row="| $label |"
    for c in $COLS; do row+=" $(cell "$m" "$c") |"; done
    l=$(median "$m" obdfs-lz4) z=$(median "$m" obdfs-zstd) q=$(median "$m" qsd) f=$(median "$m" memfuse) r=$(median "$m" raw)
    u=$(median "$m" obdfs-lz4-uring)
    if [ "$inv" = 1 ]; then # lower is better: ratio of speeds = inverse
      row+=" $(ratio "$q" "$l") | $(ratio "$q" "$z") | $(ratio "$f" "$l") | $(ratio "$r" "$l") | $(ratio "$q" "$u") | $(ratio "$l" "$u") |"
    else
      row+=" $(ratio "$l" "$q") | $(ratio "$z" "$q") | $(ratio "$l" "$f") | $(ratio "$l" "$r") | $(ratio "$u" "$q") | $(ratio "$u" "$l") |"
    fi
    echo "$row"
  done <<'EOF'
seq.mbs|sequential 1 MiB reads, whole file (MB/s)|0
rand1.iops|4 KiB random read QD1, O_DIRECT via dio loop (IOPS)|0
rand32.iops|4 KiB random read QD32, O_DIRECT via dio loop (IOPS)|0
scan.mbs|tar scan of every file in the ext4 (MB/s of tar output)|0
scan.s|tar scan (s)|1
shared.s|4 stacks sharing layers 1+2, each read whole in turn (s)|1
EOF
  echo
  echo "| daemon cost (CPU s / peak RSS MiB) | obdfs lz4 | obdfs zstd | obdfs lz4, io_uring | obdfs zstd, io_uring | qemu-storage-daemon | memfuse |"
  echo "|---|---|---|---|---|---|---|"
  for m in seq rand1 rand32 scan shared; do
    row="| $m |"
    for c in obdfs-lz4 obdfs-zstd obdfs-lz4-uring obdfs-zstd-uring qsd memfuse; do row+=" $(cell "$m.cpu" "$c") / $(cell "$m.rss" "$c") |"; done
    echo "$row"
  done
  echo
  echo "| 4 stacks sharing layers 1+2 | obdfs lz4 | obdfs zstd | qemu-storage-daemon (one per image) |"
  echo "|---|---|---|---|"
  echo "| MiB read from backing files (rchar) | $(cell shared.mib obdfs-lz4) | $(cell shared.mib obdfs-zstd) | $(cell shared.mib qsd) |"
  echo "| ÷ size of the distinct backing files (1.00 = each byte read once) | $(cell shared.x obdfs-lz4) | $(cell shared.x obdfs-zstd) | $(cell shared.x qsd) |"
  echo "| layers 1+2: bytes read by the 4 stacks ÷ their file size (obdfs stats) | $(cell shared.l12x obdfs-lz4) | $(cell shared.l12x obdfs-zstd) | - |"
}

sizes() {
  local f
  printf '%s' "image $((IMGSIZE >> 20)) MiB virtual;"
  for f in lz4 zstd qcow2; do
    printf ' %s layers 1/2/3: %s MiB;' "$f" "$(for l in l1 l2 l3v1; do du -m --apparent-size "$D/$l.$f" | cut -f1; done | paste -sd/)"
  done
}

OUT=$W/run/table.md
{
  echo "Measured $(date -u +%Y-%m-%d) on $machine; load average at the end $load."
  echo "\`make bench\` (test/bench/side-by-side.sh): BENCH_DATA_MB=$DATA_MB, $RUNS runs (medians), fio $FIO_SECS s per job, obdfs --cache-size $CACHE. $(sizes)"
  [ -n "${BENCH_NOTE:-}" ] && echo "$BENCH_NOTE"
  echo
  table
} > "$OUT"
echo
cat "$OUT"
echo; echo "raw results (metric target value):"; sort "$RES" | paste -sd' ' | fold -w 160

if [ -n "$DOC" ]; then
  # Replace what is between the markers (inside "## Side by side"); add the
  # section at the end of the file if it has no markers yet.
  B='<!-- side-by-side table: written by test/bench/side-by-side.sh -->' E='<!-- end of side-by-side table -->'
  if ! grep -qF "$B" "$DOC"; then printf '\n## Side by side\n\n%s\n%s\n' "$B" "$E" >> "$DOC"; fi
  awk -v out="$OUT" -v b="$B" -v e="$E" '
    $0 == b { print; print ""; while ((getline l < out) > 0) print l; print ""; skip = 1; next }
    $0 == e { skip = 0 }
    !skip { print }' "$DOC" > "$DOC.tmp" && mv "$DOC.tmp" "$DOC"
  log "table written into $DOC (## Side by side)"
fi
