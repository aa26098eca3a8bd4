#!/usr/bin/env bash
# Fleet start behind a pull-through mirror (issue 14): N obdfs mount daemons,
# each with its own blob cache, start the same image at once behind a cold
# docker-registry in proxy mode in front of the origin docker-registry, and
# read the whole virtual disk; then the same without the mirror. The origin's
# blob bytes come from its access log (bytes written per GET); the figure is
# origin blob bytes / image blob bytes (goal <= 1.05 with the mirror).
#
# Image: the Go toolchain tree (GOROOT) in a 640 MiB ext4, one lz4 ZFile layer
# (obdfs build -z), as in test/bench/lazy.sh (whose built layer is reused
# when present).
#
#   BENCH_NODES [4]  BENCH_DIR [/var/tmp/obdfs-fleet-bench]
#   BENCH_SHOWLOG    set: print the origin's blob GETs (status, bytes, agent)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
OBDFS=${OBDFS:-$ROOT/bin/obdfs}
N=${BENCH_NODES:-4}
W=${BENCH_DIR:-/var/tmp/obdfs-fleet-bench}
[ "$(id -u)" = 0 ] || { echo "bench-fleet: run as root (FUSE)" >&2; exit 1; }
[ -x "$OBDFS" ] || { echo "bench-fleet: $OBDFS missing: run 'make build' first" >&2; exit 1; }
for t in docker-registry curl; do command -v $t >/dev/null || { echo "bench-fleet: $t missing: make deps" >&2; exit 1; }; done
mkdir -p "$W/data"
chmod 700 "$W"
R=$(mktemp -d "$W/run.XXXXXX")
export OBDFS_RUN_DIR=$R/obdfs-run
PIDS=() MNTS=()
cleanup() {
  set +e
  for m in "${MNTS[@]}"; do "$OBDFS" umount "$m" >/dev/null 2>&1 || umount -l "$m" 2>/dev/null; done
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  rm -rf "$R"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
log() { printf '== %s\n' "$*" >&2; }

LAYER=$W/data/go.layer
if [ ! -s "$LAYER" ] && [ -s /var/tmp/obdfs-lazy-bench/data/go.layer ]; then
  cp /var/tmp/obdfs-lazy-bench/data/go.layer "$LAYER"
fi
if [ ! -s "$LAYER" ]; then
  log "building the image: $(go env GOROOT) into a 640 MiB ext4, lz4 ZFile"
  "$OBDFS" build -z --vsize 640MiB --work-dir "$W" "$(go env GOROOT)" "$LAYER.tmp"
  mv "$LAYER.tmp" "$LAYER"
fi

port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
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

start() { # label hostsdir
  local i pids=() t0 t1 before after
  before=$(origin_bytes)
  t0=$(date +%s.%N)
  for i in $(seq 1 "$N"); do
    mkdir -p "$R/$1/m$i"
    (
      "$OBDFS" mount --config "" --hosts-dir "$2" --cache-dir "$R/$1/c$i" "$R/$1/m$i" "img=docker://$ORIGIN/bench/go:v1" &&
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
  printf '%-14s %d nodes: origin sent %d blob bytes for a %d-byte blob: %.3fx; %.1f s\n' "$1" "$N" \
    $((after - before)) "$BLOB" "$(echo "($after - $before) / $BLOB" | bc -l)" "$(echo "$t1 - $t0" | bc -l)"
}
start direct ""
MIRROR=127.0.0.1:$(port)
registry mirror "$MIRROR" "$ORIGIN"
mkdir -p "$R/certs.d/${ORIGIN/:/_}_"
printf '[host."http://%s"]\n  capabilities = ["pull", "resolve"]\n' "$MIRROR" > "$R/certs.d/${ORIGIN/:/_}_/hosts.toml"
start cold-mirror "$R/certs.d"
start warm-mirror "$R/certs.d"
[ -n "${BENCH_SHOWLOG:-}" ] && grep -E "\"GET /v2/[^ ]*/blobs/" "$R/origin.log" | grep -o "HTTP/1.1\" [0-9]* [0-9]* \"[^\"]*\" \"[^\"]*\"" | sort | uniq -c | sort -rn | head -30 >&2 || true
