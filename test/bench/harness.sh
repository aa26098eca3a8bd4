# Shared by the bench scripts that set up mounts, loop devices and daemons
# (side-by-side.sh, lazy.sh, fleet.sh); source it after `set -euo pipefail`,
# with OBDFS set. Everything a script starts goes on one of these arrays so
# that undo_all, called from the script's EXIT trap, can take it down in
# reverse order: file systems, loop devices, obdfs/FUSE mounts, processes.
PIDS=() MNTS=() LOOPS=() FSMNTS=()
undo_all() {
  local m l p
  for m in "${FSMNTS[@]}"; do mountpoint -q "$m" && umount "$m"; done
  for l in "${LOOPS[@]}"; do losetup -d "$l" 2>/dev/null; done
  for m in "${MNTS[@]}"; do
    if findmnt -n "$m" >/dev/null 2>&1; then
      "$OBDFS" umount "$m" >/dev/null 2>&1 || umount "$m" 2>/dev/null || umount -l "$m"
    fi
  done
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
}
log() { printf '\033[1m== %s\033[0m\n' "$*" >&2; }
now() { date +%s.%N; }
drop() { # drop VALUE from the array named $1
  local -n a=$1; local i
  for i in "${!a[@]}"; do [ "${a[$i]}" = "$2" ] && unset 'a[i]'; done
  a=("${a[@]}")
}
# port prints a free TCP port on 127.0.0.1.
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
