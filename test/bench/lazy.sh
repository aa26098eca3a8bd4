#!/usr/bin/env bash
# Lazy registry reads side by side (issue 10): one real image served from
# docker-registry on loopback through the shaping proxy (test/netshape) at
# several RTTs and bandwidths, read five ways, medians of several runs.
#
# Image: a first layer built from the Go toolchain tree (GOROOT, real files)
# into a 640 MiB ext4 (obdfs build -z: one lz4 ZFile layer), pushed with
# obdfs push; the same disk as a zstd-compressed qcow2 uploaded as a blob of
# another repository (docker-registry serves blobs with Range support).
#
# Rows:
#   lazy             obdfs mount docker://… (readahead on, the default)
#   lazy+trace       the same with --trace of a start-up recorded beforehand
#                    (--record-trace, one untimed run per network)
#   lazy+background  the same with --background (no delay, no rate bound)
#   eager            obdfs pull, then obdfs mount from the warm cache
#   qsd-http         qemu-storage-daemon: http (curl) driver on the qcow2 blob
#                    URL, qcow2 driver, FUSE export (Debian qemu-block-extra)
# Workloads (each from a cold cache and a fresh daemon):
#   a  mount + start-up set: loop + ext4, read bin/go and tar src/net/http
#   b  mount + the whole virtual disk read from cold (1 MiB reads of the file)
# Each cell: median seconds (min–max), MB through the proxy (server to client).
# Also: cold mount of a 10-layer image at the highest RTT (obdfs mount until
# the file is served).
#
# Environment (defaults in brackets):
#   BENCH_NETS ["20:50 50:50 100:50 20:1000 50:1000 100:1000"]  RTT_MS:MBPS pairs
#   BENCH_RUNS [3]        runs per cell (medians)
#   BENCH_ROWS            subset of "lazy lazy+trace lazy+background eager qsd-http"
#   BENCH_WORKLOADS ["a b"]
#   BENCH_TIMEOUT [120]   seconds a workload may take before it is cut (cell "> N s")
#   BENCH_DIR             work directory [/var/tmp/obdfs-lazy-bench]; the image
#                         built there is reused
#   BENCH_DOC [docs/PERFORMANCE.md]  where the table goes (between the lazy table
#                         markers); empty: print only
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
OBDFS=${OBDFS:-$ROOT/bin/obdfs}
NETS=${BENCH_NETS:-20:50 50:50 100:50 20:1000 50:1000 100:1000}
RUNS=${BENCH_RUNS:-3}
ROWS=${BENCH_ROWS:-lazy lazy+trace lazy+background eager qsd-http}
WORKLOADS=${BENCH_WORKLOADS:-a b}
TIMEOUT=${BENCH_TIMEOUT:-120}
W=${BENCH_DIR:-/var/tmp/obdfs-lazy-bench}
DOC=${BENCH_DOC-docs/PERFORMANCE.md}
VSIZE=640MiB

[ "$(id -u)" = 0 ] || { echo "bench-lazy: run as root (FUSE, loop devices, ext4 mounts)" >&2; exit 1; }
[ -x "$OBDFS" ] || { echo "bench-lazy: $OBDFS missing: run 'make build' first" >&2; exit 1; }
for t in docker-registry qemu-storage-daemon qemu-img curl jq losetup findmnt sha256sum; do
  command -v "$t" >/dev/null || { echo "bench-lazy: $t missing: run 'make deps'" >&2; exit 1; }
done
ls /usr/lib/x86_64-linux-gnu/qemu/block-curl.so /usr/lib/*/qemu/block-curl.so >/dev/null 2>&1 ||
  { echo "bench-lazy: qemu's http driver missing (Debian qemu-block-extra): run 'make deps'" >&2; exit 1; }

mkdir -p "$W/data" "$W/run"
chmod 700 "$W"
D=$W/data R=$W/run
NETSHAPE=$W/netshape
go build -o "$NETSHAPE" ./test/netshape/cmd/netshape

. test/bench/harness.sh
cleanup() {
  set +e
  undo_all
  rm -rf "$R"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------------ image ---
if [ ! -s "$D/go.layer" ]; then
  log "building the image: $(go env GOROOT) into a $VSIZE ext4, lz4 ZFile"
  "$OBDFS" build -z --vsize "$VSIZE" --work-dir "$W" "$(go env GOROOT)" "$D/go.layer.tmp"
  mv "$D/go.layer.tmp" "$D/go.layer"
fi
if [ ! -s "$D/go.qcow2" ]; then
  log "the same disk as a zstd qcow2"
  "$OBDFS" cat -o "$D/go.raw" "$D/go.layer"
  qemu-img convert -O qcow2 -c -o compression_type=zstd "$D/go.raw" "$D/go.qcow2.tmp"
  mv "$D/go.qcow2.tmp" "$D/go.qcow2"
  rm -f "$D/go.raw"
fi
if [ ! -s "$D/ten.list" ]; then
  log "ten small distinct layers for the cold-mount measurement"
  : > "$D/ten.list.tmp"
  for i in $(seq 1 10); do
    "$OBDFS" create "$D/t$i.data" "$D/t$i.index" --size 1073741824 >/dev/null
    printf 'layer %d\n' "$i" | dd of="$D/t$i.raw" bs=4096 count=1 conv=sync status=none
    echo "{\"upper\":{\"data\":\"t$i.data\",\"index\":\"t$i.index\"}}" > "$D/t$i.json"
    MNTS+=("$R/mk"); mkdir -p "$R/mk"
    "$OBDFS" mount "$R/mk" "t=$D/t$i.json"
    dd if="$D/t$i.raw" of="$R/mk/t" bs=4096 seek=$((i * 1000)) conv=notrunc,fsync status=none
    "$OBDFS" umount "$R/mk"; drop MNTS "$R/mk"
    "$OBDFS" commit "$D/t$i.data" "$D/t$i.index" "$D/t$i.commit" >/dev/null
    rm -f "$D/t$i.data" "$D/t$i.index" "$D/t$i.raw" "$D/t$i.json"
    echo "$D/t$i.commit" >> "$D/ten.list.tmp"
  done
  mv "$D/ten.list.tmp" "$D/ten.list"
fi
BLOB_MB=$(( $(stat -c %s "$D/go.layer") / 1000000 ))
QCOW_MB=$(( $(stat -c %s "$D/go.qcow2") / 1000000 ))

# --------------------------------------------------------------- registry ---
REG=127.0.0.1:$(port)
cat > "$R/registry.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $R/registry
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: $REG
  secret: obdfs-bench
EOF
docker-registry serve "$R/registry.yml" >"$R/registry.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 100); do curl -sf "http://$REG/v2/" >/dev/null && break; sleep 0.1; done
log "registry on $REG: pushing"
"$OBDFS" push --insecure --layer "$D/go.layer" "docker://$REG/bench/go:v1" >/dev/null
args=(); while read -r f; do args+=(--layer "$f"); done < "$D/ten.list"
"$OBDFS" push -z --insecure "${args[@]}" "docker://$REG/bench/ten:v1" >/dev/null
QDIG=sha256:$(sha256sum "$D/go.qcow2" | cut -d' ' -f1)
loc=$(curl -sf -X POST -D - -o /dev/null "http://$REG/v2/bench/qcow2/blobs/uploads/" | tr -d '\r' | awk 'tolower($1)=="location:"{print $2}')
case $loc in http*) ;; *) loc=http://$REG$loc ;; esac
case $loc in *\?*) sep='&' ;; *) sep='?' ;; esac
curl -sf -X PUT -H 'Content-Type: application/octet-stream' --data-binary "@$D/go.qcow2" "$loc${sep}digest=$QDIG" >/dev/null

# ------------------------------------------------------------------ runs ---
PROXY='' PROXY_PID=''
proxy_start() { # RTT_MS MBPS
  exec {pfd}< <(exec "$NETSHAPE" -target "$REG" -rtt "$1ms" -rate $(($2 * 1000000)) -shared -lifetime 30m 2>"$R/proxy.err")
  PROXY_PID=$!
  read -r PROXY <&$pfd
  PIDS+=("$PROXY_PID")
}
proxy_stop() { # prints MB down (the proxy prints its counters as it exits)
  local i
  kill -TERM "$PROXY_PID" 2>/dev/null || true
  for i in $(seq 1 100); do grep -q netshape: "$R/proxy.err" && break; sleep 0.05; done
  drop PIDS "$PROXY_PID"
  exec {pfd}<&-
  awk '/netshape:/{printf "%.1f", $7/1e6}' "$R/proxy.err"
}

M=$R/mnt FS=$R/fs Q=$R/qsd
mkdir -p "$M" "$FS" "$Q"
FILE=''
serve() { # ROW RTT MBPS: serve the image as $FILE from a cold cache
  local row=$1 cache=$R/cache
  rm -rf "$cache"
  local o=(--insecure --cache-dir "$cache" --log-file "$R/obdfs.log")
  case $row in
    lazy) ;;
    lazy+trace) o+=(--trace "$R/trace.json") ;;
    lazy+background) o+=(--background) ;;
    record) o+=(--record-trace "$R/trace.json") ;;
    eager) "$OBDFS" pull --insecure --cache-dir "$cache" "docker://$PROXY/bench/go:v1" 2>/dev/null ;;
  esac
  case $row in
    qsd-http)
      touch "$Q/q"; MNTS+=("$Q/q")
      qemu-storage-daemon \
        --blockdev "driver=http,node-name=h,url=http://$PROXY/v2/bench/qcow2/blobs/$QDIG,read-only=on" \
        --blockdev "driver=qcow2,node-name=q,file=h,read-only=on" \
        --export "type=fuse,id=e,node-name=q,mountpoint=$Q/q,writable=off" 2>>"$R/qsd.log" &
      QPID=$!; PIDS+=("$QPID"); FILE=$Q/q
      local i; for i in $(seq 1 1200); do
        case $(stat -f -c %T "$Q/q" 2>/dev/null) in fuse*) return 0 ;; esac
        kill -0 "$QPID" 2>/dev/null || { echo "bench-lazy: qemu-storage-daemon died: $(tail -3 "$R/qsd.log")" >&2; return 1; }
        sleep 0.05
      done ;;
    *)
      MNTS+=("$M")
      "$OBDFS" mount "${o[@]}" "$M" "img=docker://$PROXY/bench/go:v1"
      FILE=$M/img ;;
  esac
}
unserve() { # ROW
  case $1 in
    qsd-http)
      # It may not stop on SIGTERM with a request stuck on the network.
      kill -TERM "$QPID" 2>/dev/null || true
      for _ in $(seq 1 50); do kill -0 "$QPID" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$QPID" 2>/dev/null || true
      wait "$QPID" 2>/dev/null || true; drop PIDS "$QPID"
      umount "$Q/q" 2>/dev/null || true; drop MNTS "$Q/q"; rm -f "$Q/q" ;;
    *) "$OBDFS" umount "$M" >/dev/null; drop MNTS "$M" ;;
  esac
}
# The start-up reads through loop + ext4, cut after TIMEOUT seconds.
startset() {
  timeout "$TIMEOUT" bash -ec '
    loop=$("$0" loop attach "$1")
    mount -o ro -t ext4 "$loop" "$2"
    cat "$2/bin/go" > /dev/null
    tar -C "$2" -cf - src/net/http | cat > /dev/null
    umount "$2"
    "$0" loop detach "$loop"' "$OBDFS" "$FILE" "$FS"
}
GETS=- RESULT=''
run() { # ROW WORKLOAD RTT MBPS: sets RESULT to "SECONDS|timeout MB GETS"
  local row=$1 wl=$2 t0 t1 ok=1 mb l
  proxy_start "$3" "$4"
  t0=$(now)
  serve "$row" || ok=0
  if [ $ok = 1 ]; then
    case $wl in
      a) startset || ok=0 ;;
      b) timeout "$TIMEOUT" dd if="$FILE" of=/dev/null bs=1M status=none || ok=0 ;;
    esac
  fi
  t1=$(now)
  GETS=-
  if [ "$row" = eager ]; then
    GETS=pull
  elif [ "$row" != qsd-http ] && [ $ok = 1 ]; then
    GETS=$("$OBDFS" stats --json "$M" | jq '[.stacks[].layers[].Fetch.Fetches // 0] | add')
  fi
  if mountpoint -q "$FS"; then umount "$FS"; fi
  for l in $(timeout 10 losetup -j "$FILE" -O NAME -n 2>/dev/null); do losetup -d "$l"; done
  unserve "$row"
  mb=$(proxy_stop)
  if [ $ok = 1 ]; then RESULT="$(awk "BEGIN{print $t1 - $t0}") $mb $GETS"; else RESULT="timeout $mb $GETS"; fi
}
median() { sort -g | awk '{a[NR]=$1} END{ if (NR==0) {print "-"; exit} m=(NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2; printf "%.2f (%.2f–%.2f)", m, a[1], a[NR]}'; }

declare -A CELL
TEN_MOUNT=''
for net in $NETS; do
  rtt=${net%%:*} mbps=${net##*:}
  log "network: ${rtt} ms RTT, ${mbps} MB/s"
  if [[ " $ROWS " == *" lazy+trace "* ]]; then
    run record a "$rtt" "$mbps"
  fi
  for wl in $WORKLOADS; do
    for row in $ROWS; do
      times=() last=''
      for _ in $(seq 1 "$RUNS"); do
        run "$row" "$wl" "$rtt" "$mbps"
        log "  $row $wl: $RESULT (s, MB, GETs)"
        read -r sec mb gets <<< "$RESULT"
        [ "$sec" != timeout ] && times+=("$sec")
        last="$mb MB"
        case $gets in -|pull) ;; *) last+=" · $gets GETs" ;; esac
      done
      if ((${#times[@]})); then
        CELL[$net,$wl,$row]="$(printf '%s\n' "${times[@]}" | median) s · $last"
      else
        CELL[$net,$wl,$row]="> $TIMEOUT s"
      fi
    done
  done
done
# Cold mount of the 10-layer image at the last network's RTT.
rtt=${NETS##* }; rtt=${rtt%%:*}; mbps=${NETS##*:}
times=()
for _ in $(seq 1 "$RUNS"); do
  proxy_start "$rtt" "$mbps"
  rm -rf "$R/cache"; MNTS+=("$M")
  t0=$(now)
  "$OBDFS" mount --insecure --no-order-check --cache-dir "$R/cache" --log-file "$R/obdfs.log" "$M" "img=docker://$PROXY/bench/ten:v1"
  t1=$(now)
  "$OBDFS" umount "$M" >/dev/null; drop MNTS "$M"
  proxy_stop >/dev/null
  times+=("$(awk "BEGIN{print $t1 - $t0}")")
done
TEN_MOUNT="$(printf '%s\n' "${times[@]}" | median) s at ${rtt} ms RTT"

# ----------------------------------------------------------------- table ---
table() {
  echo "Image: Go toolchain tree (\`go env GOROOT\`, $(du -sm "$(go env GOROOT)" | cut -f1) MiB of files) in a $VSIZE ext4,"
  echo "one lz4 ZFile layer of $BLOB_MB MB (obdfs build -z); the qcow2 (zstd) of the same disk is $QCOW_MB MB."
  echo "Start-up set (a): mount, loop + ext4, read bin/go and tar src/net/http. Whole disk (b): mount, then"
  echo "1 MiB reads of the disk file from cold. Cells: median seconds (min–max) of $RUNS runs · MB through the"
  echo "proxy (server to client) · range GETs (obdfs stats), of the last run."
  echo
  for wl in $WORKLOADS; do
    case $wl in a) echo "**(a) mount + start-up set**" ;; b) echo "**(b) mount + whole disk from cold**" ;; esac
    echo
    printf '| RTT, bandwidth |'; for row in $ROWS; do printf ' %s |' "$row"; done; echo
    printf '|---|'; for _ in $ROWS; do printf -- '---|'; done; echo
    for net in $NETS; do
      printf '| %s ms, %s MB/s |' "${net%%:*}" "${net##*:}"
      for row in $ROWS; do printf ' %s |' "${CELL[$net,$wl,$row]:--}"; done; echo
    done
    echo
  done
  echo "Cold mount of a 10-layer image (obdfs mount until the disk file is served): $TEN_MOUNT."
}
TABLE=$(table)
echo "$TABLE"
if [ -n "$DOC" ]; then
  B='<!-- lazy table: written by test/bench/lazy.sh -->' E='<!-- end of lazy table -->'
  STAMP="Measured $(date -u +%Y-%m-%d) with \`make bench-lazy\` (BENCH_RUNS=$RUNS BENCH_NETS=\"$NETS\") on $(nproc) cores."
  if grep -qF "$B" "$DOC"; then
    awk -v b="$B" -v e="$E" -v t="$STAMP"$'\n\n'"$TABLE" '
      $0==b {print; print t; skip=1; next} $0==e {skip=0} !skip' "$DOC" > "$DOC.tmp" && mv "$DOC.tmp" "$DOC"
  else
    printf '\n## Lazy registry reads\n\n%s\n%s\n\n%s\n%s\n' "$B" "$STAMP" "$TABLE" "$E" >> "$DOC"
  fi
fi
