#!/usr/bin/env bash
# Fleet start behind a pull-through mirror (issue 14): N obdfs mount daemons,
# each with its own blob cache, start the same image at once behind a cold
# docker-registry in proxy mode in front of the origin docker-registry, and
# read the whole virtual disk; then the same without the mirror, and with the
# mirror warm. The origin is reached through the shaping proxy test/netshape
# (the WAN: BENCH_RTT, BENCH_RATE shared by all connections), by the nodes
# without a mirror and by the mirror; the mirror is near the nodes.
# Figures, as multiples of the image's blob size: the bytes the proxy
# delivered from the origin (what crossed the WAN), and the bytes the
# origin's access log says it wrote for blob GETs (this also counts what sat
# in its socket buffers when a reader hung up). Goal: <= 1.05 with the mirror.
#
# Image: the Go toolchain tree (GOROOT) in a 640 MiB ext4, one lz4 ZFile layer
# (obdfs build -z), as in test/bench/lazy.sh (whose built layer is reused
# when present).
#
#   BENCH_NODES [4]  BENCH_DIR [/var/tmp/obdfs-fleet-bench]
#   BENCH_RTT [20ms]  BENCH_RATE [100000000] bytes/s
#   BENCH_SHOWLOG    set: print the origin's blob GETs (status, bytes, agent)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
OBDFS=${OBDFS:-$ROOT/bin/obdfs}
N=${BENCH_NODES:-4}
RTT=${BENCH_RTT:-20ms}
RATE=${BENCH_RATE:-100000000}
W=${BENCH_DIR:-/var/tmp/obdfs-fleet-bench}
[ "$(id -u)" = 0 ] || { echo "bench-fleet: run as root (FUSE)" >&2; exit 1; }
[ -x "$OBDFS" ] || { echo "bench-fleet: $OBDFS missing: run 'make build' first" >&2; exit 1; }
for t in docker-registry curl; do command -v $t >/dev/null || { echo "bench-fleet: $t missing: make deps" >&2; exit 1; }; done
mkdir -p "$W/data"
chmod 700 "$W"
R=$(mktemp -d "$W/run.XXXXXX")
NETSHAPE=$W/netshape
go build -o "$NETSHAPE" ./test/netshape/cmd/netshape
export OBDFS_RUN_DIR=$R/obdfs-run
. test/bench/harness.sh
cleanup() {
  set +e
  undo_all
  rm -rf "$R"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

LAYER=$W/data/go.layer
if [ ! -s "$LAYER" ] && [ -s /var/tmp/obdfs-lazy-bench/data/go.layer ]; then
  cp /var/tmp/obdfs-lazy-bench/data/go.layer "$LAYER"
fi
if [ ! -s "$LAYER" ]; then
  log "building the image: $(go env GOROOT) into a 640 MiB ext4, lz4 ZFile"
  "$OBDFS" build -z --vsize 640MiB --work-dir "$W" "$(go env GOROOT)" "$LAYER.tmp"
  mv "$LAYER.tmp" "$LAYER"
fi

registry() { # name addr [proxy-remoteurl]
  local proxy=""
  [ -n "${3:-}" ] && proxy=$(printf 'proxy:\n  remoteurl: http://%s\n' "$3")
  cat > "$R/$1.yml" <<EOF
version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: $R/$1
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: $2
  secret: obdfs-bench
$proxy
EOF
  docker-registry serve "$R/$1.yml" >"$R/$1.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1 100); do curl -sf "http://$2/v2/" >/dev/null && return; sleep 0.1; done
  echo "bench-fleet: $1 registry did not start" >&2; cat "$R/$1.log" >&2; exit 1
}
ORIGIN=127.0.0.1:$(port)
registry origin "$ORIGIN"
"$OBDFS" push --insecure --layer "$LAYER" "docker://$ORIGIN/bench/go:v1" >/dev/null
BLOB=$(find "$R/origin" -path '*/blobs/sha256/*/data' -size +1M -printf '%s\n' | sort -n | tail -1)

# Sum of the bytes the origin wrote for blob GETs (combined log format lines).
origin_bytes() { { grep -E '"GET /v2/[^ ]*/blobs/sha256:[0-9a-f]+ HTTP' "$R/origin.log" || true; } | awk '{for(i=1;i<NF;i++) if ($i ~ /^[0-9][0-9][0-9]$/ && $(i-1) ~ /HTTP\//) {s+=$(i+1); break}} END {print s+0}'; }

WAN='' WAN_PID=''
wan_start() {
  exec {wfd}< <(exec "$NETSHAPE" -target "$ORIGIN" -rtt "$RTT" -rate "$RATE" -shared -lifetime 30m 2>"$R/wan.err")
  WAN_PID=$!
  read -r WAN <&$wfd
  PIDS+=("$WAN_PID")
}
wan_stop() { # prints the bytes delivered from the origin (printed by netshape as it exits)
  kill -TERM "$WAN_PID" 2>/dev/null || true
  for _ in $(seq 1 100); do grep -q netshape: "$R/wan.err" && break; sleep 0.05; done
  exec {wfd}<&-
  awk '/netshape:/{print $7}' "$R/wan.err"
}

start() { # label hostsdir: N nodes at once on docker://$WAN/bench/go:v1
  local i pids=() t0 t1 before after
  before=$(origin_bytes)
  t0=$(date +%s.%N)
  for i in $(seq 1 "$N"); do
    mkdir -p "$R/$1/m$i"
    (
      "$OBDFS" mount --config "" --hosts-dir "$2" --cache-dir "$R/$1/c$i" "$R/$1/m$i" "img=docker://$WAN/bench/go:v1" &&
        dd if="$R/$1/m$i/img" of=/dev/null bs=1M status=none
    ) &
    pids+=($!)
    MNTS+=("$R/$1/m$i")
  done
  for p in "${pids[@]}"; do wait "$p"; done
  t1=$(date +%s.%N)
  for i in $(seq 1 "$N"); do "$OBDFS" umount "$R/$1/m$i"; done
  sleep 1 # the access log is written after each request
  after=$(origin_bytes)
  LAST="$(printf '%.1f' "$(echo "$t1 - $t0" | bc -l)") $((after - before))"
}
report() { # label seconds logbytes wanbytes
  printf '%-12s %d nodes, %d-byte blob, WAN %s %s B/s: delivered from the origin %.3fx (%d B), origin log %.3fx; %s s\n' \
    "$1" "$N" "$BLOB" "$RTT" "$RATE" "$(echo "$4 / $BLOB" | bc -l)" "$4" "$(echo "$3 / $BLOB" | bc -l)" "$2"
}
wan_start
start direct ""
set -- $LAST; report direct "$1" "$2" "$(wan_stop)"
wan_start
MIRROR=127.0.0.1:$(port)
registry mirror "$MIRROR" "$WAN"
mkdir -p "$R/certs.d/${WAN/:/_}_"
printf '[host."http://%s"]\n  capabilities = ["pull", "resolve"]\n' "$MIRROR" > "$R/certs.d/${WAN/:/_}_/hosts.toml"
start cold-mirror "$R/certs.d"
read -r cold_s cold_log <<<"$LAST"
start warm-mirror "$R/certs.d"
read -r warm_s warm_log <<<"$LAST"
wan=$(wan_stop)
report "mirror" "$cold_s + $warm_s" "$((cold_log + warm_log))" "$wan"
[ -n "${BENCH_SHOWLOG:-}" ] && grep -E '"GET /v2/[^ ]*/blobs/' "$R/origin.log" | grep -o 'HTTP/1.1" [0-9]* [0-9]* "[^"]*" "[^"]*"' | sort | uniq -c | sort -rn | head -30 >&2 || true
